//! A buyer's checkout from order to fulfilment, through the sandbox's Stripe.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    paid_checkout_is_fulfilled_once,
    delayed_payment_waits_for_settlement,
    expired_checkout_releases_stock,
    concurrent_checkouts_for_one_order_reserve_once,
    a_stripe_session_ends_with_its_reservation,
);

/// Order → create-order → pay → webhook → fulfilled: one invoice, one receipt, one
/// entitlement, stock down by the quantity.
async fn paid_checkout_is_fulfilled_once(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1200, 5).await;
    let order = app
        .create_order("buyer@example.com", json!([{"sku": "SEAT", "qty": 2}]))
        .await;
    assert_eq!(order["total_minor"], 2400, "priced by the server");
    assert_eq!(order["currency"], "USD");
    assert_eq!(order["status"], "created");
    let id = s(&order["id"]);

    let co = app.checkout(id).await;
    assert_eq!(co["provider"], "stripe");
    assert_eq!(co["amount_minor"], 2400);
    assert!(s(&co["checkout_url"]).starts_with(&app.sandbox));
    let reserved: i64 = app
        .count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
        .await;
    assert_eq!(reserved, 2, "checkout reserves the stock");
    // Asking again hands out the same checkout.
    let (status, again) = app.try_checkout(id).await;
    assert_eq!(status, 200);
    assert_eq!(again["provider_order_id"], co["provider_order_id"]);

    let paid = app.pay(s(&co["provider_order_id"]), json!({})).await;
    assert_eq!(paid["deliveries"][0]["status"], 200);

    let done = app
        .wait_for(id, &["fulfilled", "needs_review", "refunded"])
        .await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(done["payment"]["status"], "paid");
    assert!(done["waiting_on"].is_null());
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 5);
    assert!(
        steps
            .iter()
            .all(|st| st["status"] == "done" && st["attempts"] == 1),
        "{steps:#?}"
    );

    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", id)
            .await,
        1
    );
    let tax: i64 = app
        .count("SELECT tax_minor FROM invoices WHERE order_id = $1", id)
        .await;
    assert_eq!(tax, 400, "20 % VAT included in 24.00");
    let debits = app
        .count("SELECT CAST(SUM(debit_minor) - SUM(credit_minor) AS BIGINT) FROM ledger_entries WHERE order_id = $1", id)
        .await;
    assert_eq!(debits, 0, "ledger balances");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM ledger_entries WHERE order_id = $1",
            id
        )
        .await,
        3
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM entitlements WHERE order_id = $1", id)
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM entitlements WHERE order_id = $1 AND feature = 'conference-pass' AND expires_at IS NOT NULL", id).await,
        1
    );
    let files = app.outbox_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let eml = std::fs::read_to_string(&files[0]).expect("eml");
    assert!(
        eml.contains("To: buyer@example.com") && eml.contains(id) && eml.contains("INV-000001"),
        "{eml}"
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    app.finish().await;
}

/// A delayed payment method completes the session `unpaid`: nothing is fulfilled until
/// `async_payment_succeeded`.
async fn delayed_payment_waits_for_settlement(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 500, 3).await;
    let order = app
        .create_order("slow@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    let session = s(&co["provider_order_id"]);

    let paid = app.pay(session, json!({"payment_status": "unpaid"})).await;
    assert_eq!(paid["deliveries"][0]["status"], 200);
    // The 200 above came after the event's transaction committed: the state is final for it.
    let o = app.order(id).await;
    assert_eq!(o["status"], "pending_payment", "{o:#}");
    assert_eq!(o["payment"]["status"], "pending");
    assert_eq!(
        o["steps"].as_array().map(Vec::len),
        Some(0),
        "no step may exist before the money settles"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM steps WHERE order_id = $1", id)
            .await,
        0
    );

    let settled = app
        .sandbox_post(
            &format!("/sandbox/stripe/checkout/sessions/{session}/settle"),
            json!({"outcome": "succeeded"}),
        )
        .await;
    assert_eq!(settled["deliveries"][0]["status"], 200);
    let done = app.wait_for(id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        2
    );
    app.finish().await;
}

/// `checkout.session.expired` releases the reservation and fails the order.
async fn expired_checkout_releases_stock(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 500, 1).await;
    let order = app
        .create_order("gone@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    // The last seat is held: a second buyer cannot check out.
    let other = app
        .create_order("late@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let (status, body) = app.try_checkout(s(&other["id"])).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "out_of_stock");

    let body = app.expire_session(s(&co["provider_order_id"])).await;
    assert_eq!(body["status"], "expired", "Stripe answers with the session");
    // The sandbox delivers checkout.session.expired before it answers; the buyer's notice is
    // a step of its own, so wait for it before a new attempt makes it moot.
    let o = app.wait_for(id, &["payment_failed"]).await;
    assert_eq!(o["status"], "payment_failed");
    assert_eq!(o["payment"]["status"], "expired");
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    // Now the second buyer can, and the first, whose order failed, cannot until stock returns.
    app.checkout(s(&other["id"])).await;
    let (status, _) = app.try_checkout(id).await;
    assert_eq!(
        status, 409,
        "payment_failed is payable again, but the seat is held"
    );
    app.put_sku("SEAT", 500, 2).await;
    let retry = app.checkout(id).await;
    assert_ne!(
        retry["provider_order_id"], co["provider_order_id"],
        "a new checkout"
    );
    assert_eq!(app.order(id).await["status"], "pending_payment");
    // The second attempt expires too: the buyer is told about each attempt, once.
    app.expire_session(s(&retry["provider_order_id"])).await;
    app.wait_for(id, &["payment_failed"]).await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1 AND kind = 'payment_failed'",
            "gone@example.com"
        )
        .await,
        2
    );
    app.finish().await;
}

/// A double-clicked pay button: many create-order calls for one order at once reserve its
/// stock once and open one checkout.
async fn concurrent_checkouts_for_one_order_reserve_once(backend: Backend) {
    use std::sync::Arc;
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 700, 10).await;
    let order = app
        .create_order("clicky@example.com", json!([{"sku": "SEAT", "qty": 3}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (app, barrier, id) = (app.clone(), barrier.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.try_checkout(&id).await
        }));
    }
    let mut created = 0;
    let mut sessions = std::collections::HashSet::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => {
                created += 1;
                sessions.insert(body["provider_order_id"].to_string());
            }
            200 => {
                sessions.insert(body["provider_order_id"].to_string());
            }
            409 => assert_eq!(body["error"]["code"], "checkout_in_progress", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(sessions.len(), 1, "one checkout: {sessions:?}");
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        3
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM payments WHERE order_id = $1", &id)
            .await,
        1
    );
    TestApp::finish_shared(app).await;
}

/// A Stripe Checkout Session is made to expire when the stock held for it is released (30
/// minutes by default), not after Stripe's default 24 hours, so no payment lands on stock
/// already given back.
async fn a_stripe_session_ends_with_its_reservation(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1200, 5).await;
    let (id, co) = app.seat_checkout("expiry@example.com", 1, "stripe").await;
    let session: Value = app
        .http
        .get(format!(
            "{}/v1/checkout/sessions/{}",
            app.sandbox,
            s(&co["provider_order_id"])
        ))
        .bearer_auth("sk_test_sandbox")
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    let held: i64 =
        sqlx::query_scalar("SELECT MAX(expires_at) FROM stock_reservations WHERE order_id = $1")
            .bind(&id)
            .fetch_one(&app.store.pool)
            .await
            .expect("reservation");
    let expires = session["expires_at"].as_i64().expect("expires_at");
    assert!(
        (expires - held / 1000).abs() <= 15,
        "the session ends at {expires}, the reservation at {}",
        held / 1000
    );
    app.finish().await;
}
