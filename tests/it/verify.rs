//! The browser's way in: `POST /api/payments/verify` with what Stripe's checkout gave the
//! success page. Webhook and verify land on the same transition; the first wins.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::harness::{Backend, TestApp, WEBHOOK_SECRET, event_id_of, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(
    verify_alone_fulfils_when_no_webhook_comes,
    verify_first_then_webhook_fulfils_once,
    webhook_first_then_verify_fulfils_once,
    webhook_and_verifies_at_once_fulfil_once,
    verify_reports_pending_and_failed,
    verify_refuses_what_is_not_ours,
    verify_with_a_tampered_amount_needs_review,
    a_polling_success_page_is_answered_without_hammering_the_provider,
);

/// An order with a paid session whose webhook is held back: (order id, session, event).
async fn paid_quietly(app: &TestApp, email: &str, pay: Value) -> (String, String, Vec<u8>) {
    let order = app
        .create_order(email, json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let co = app.checkout(&id).await;
    let session = s(&co["provider_order_id"]).to_owned();
    let mut opts = pay;
    opts["webhook"] = json!("none");
    let paid = app.pay(&session, opts).await;
    (
        id,
        session,
        serde_json::to_vec(&paid["event"]).expect("event"),
    )
}

async fn assert_fulfilled_once(app: &TestApp, id: &str, email: &str) {
    let done = app.wait_for(id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM steps WHERE order_id = $1", id)
            .await,
        5
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", id)
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM entitlements WHERE order_id = $1", id)
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1", email)
            .await,
        1
    );
}

async fn verify_alone_fulfils_when_no_webhook_comes(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, session, _) = paid_quietly(&app, "quiet@example.com", json!({})).await;
    let (status, v) = app.verify(&id, &session).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid");
    assert_eq!(v["outcome"], "paid");
    assert_fulfilled_once(&app, &id, "quiet@example.com").await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "stripe"
        )
        .await,
        0
    );
    app.finish().await;
}

async fn verify_first_then_webhook_fulfils_once(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, session, event) = paid_quietly(&app, "vfirst@example.com", json!({})).await;
    let (_, v) = app.verify(&id, &session).await;
    assert_eq!(v["outcome"], "paid");
    let r = app
        .post_webhook(event.clone(), Some(signature(WEBHOOK_SECRET, &event, 0)))
        .await;
    assert_eq!(r.status(), 200);
    let outcome = app.event_outcome(&event_id_of(&event)).await;
    assert!(outcome.starts_with("no change"), "{outcome}");
    assert_fulfilled_once(&app, &id, "vfirst@example.com").await;
    app.finish().await;
}

async fn webhook_first_then_verify_fulfils_once(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, session, event) = paid_quietly(&app, "wfirst@example.com", json!({})).await;
    let r = app
        .post_webhook(event.clone(), Some(signature(WEBHOOK_SECRET, &event, 0)))
        .await;
    assert_eq!(r.status(), 200);
    app.applied().await;
    let (status, v) = app.verify(&id, &session).await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "paid");
    assert!(s(&v["outcome"]).starts_with("no change"), "{v}");
    assert_fulfilled_once(&app, &id, "wfirst@example.com").await;
    app.finish().await;
}

/// The webhook and four verify calls (a success page polling from two tabs) race.
async fn webhook_and_verifies_at_once_fulfil_once(backend: Backend) {
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 1000, 5).await;
    let (id, session, event) = paid_quietly(&app, "race@example.com", json!({})).await;
    let barrier = Arc::new(Barrier::new(5));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (app, barrier, id, session, event) = (
            app.clone(),
            barrier.clone(),
            id.clone(),
            session.clone(),
            event.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if i == 0 {
                let r = app
                    .post_webhook(event.clone(), Some(signature(WEBHOOK_SECRET, &event, 0)))
                    .await;
                assert_eq!(r.status(), 200);
                Value::from(app.event_outcome(&event_id_of(&event)).await)
            } else {
                let (status, v) = app.verify(&id, &session).await;
                assert_eq!(status, 200, "{v}");
                assert_eq!(v["status"], "paid");
                v["outcome"].clone()
            }
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("task") == "paid" {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one caller moved the payment");
    assert_fulfilled_once(&app, &id, "race@example.com").await;
    TestApp::finish_shared(app).await;
}

async fn verify_reports_pending_and_failed(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    // Still open: the buyer is on the checkout page.
    let order = app
        .create_order("open@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    let (_, v) = app.verify(id, s(&co["provider_order_id"])).await;
    assert_eq!(v["status"], "pending");
    assert_eq!(v["order_status"], "pending_payment");
    // A delayed payment method: complete but unpaid.
    let (id2, session2, _) = paid_quietly(
        &app,
        "slow@example.com",
        json!({"payment_status": "unpaid"}),
    )
    .await;
    let (_, v) = app.verify(&id2, &session2).await;
    assert_eq!(v["status"], "pending");
    assert_eq!(v["outcome"], "awaiting settlement");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM steps WHERE order_id = $1", &id2)
            .await,
        0
    );
    // Expired: stock released, the page can stop polling.
    app.expire_session(s(&co["provider_order_id"])).await;
    let (_, v) = app.verify(id, s(&co["provider_order_id"])).await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["order_status"], "payment_failed");
    app.finish().await;
}

async fn verify_refuses_what_is_not_ours(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, session, _) = paid_quietly(&app, "mine@example.com", json!({})).await;
    let other = app
        .create_order("other@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let other_id = s(&other["id"]);
    // Someone else's paid session does not pay this order.
    let (status, v) = app.verify(other_id, &session).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "payload.session_id");
    for bad in ["cs_test_unknown", "pi_123", ""] {
        let (status, v) = app.verify(&id, bad).await;
        assert_eq!(status, 422, "{bad}: {v}");
        assert_eq!(v["error"]["field"], "payload.session_id");
    }
    let r = app
        .http
        .post(format!("{}/api/payments/verify", app.url))
        .json(&json!({"order_id": id, "provider": "stripe", "payload": {}}))
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 422);
    assert_eq!(app.order(other_id).await["status"], "created");
    assert_eq!(
        app.order(&id).await["status"],
        "pending_payment",
        "nothing changed"
    );
    app.finish().await;
}

async fn verify_with_a_tampered_amount_needs_review(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, session, _) =
        paid_quietly(&app, "cheap@example.com", json!({"amount_total": 1})).await;
    let (status, _) = app.verify(&id, &session).await;
    assert_eq!(status, 200);
    let o = app.wait_for(&id, &["needs_review", "fulfilled"]).await;
    assert_eq!(o["status"], "needs_review", "{o:#}");
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        5
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        0
    );
    app.finish().await;
}

/// A success page polling verify: 20 calls while the payment is open ask Stripe once (the
/// rest are answered from the store), and once the webhook has settled the payment no call
/// asks Stripe at all.
async fn a_polling_success_page_is_answered_without_hammering_the_provider(backend: Backend) {
    let app = spawn(
        backend,
        &[("FULFILLD__CHECKOUT__VERIFY_MIN_INTERVAL_MS", "600000")],
    )
    .await;
    app.put_sku("SEAT", 1200, 5).await;
    let (id, co) = app.seat_checkout("poller@example.com", 1, "stripe").await;
    let session = s(&co["provider_order_id"]).to_owned();
    let calls = |v: Value| v["api_requests"].as_i64().expect("count");
    let before = calls(app.sandbox_get("/sandbox/stripe/requests").await);
    for _ in 0..20 {
        let (status, v) = app.verify(&id, &session).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["status"], "pending", "{v}");
    }
    let after = calls(app.sandbox_get("/sandbox/stripe/requests").await);
    assert_eq!(after - before, 1, "one read of the session for 20 polls");
    app.pay(&session, json!({})).await;
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    let settled = calls(app.sandbox_get("/sandbox/stripe/requests").await);
    for _ in 0..5 {
        let (_, v) = app.verify(&id, &session).await;
        assert_eq!(v["status"], "paid", "{v}");
    }
    assert_eq!(
        calls(app.sandbox_get("/sandbox/stripe/requests").await),
        settled,
        "a settled payment is answered from the store"
    );
    app.finish().await;
}
