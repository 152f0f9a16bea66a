//! Refunds: the admin API (whole and partial, idempotent, bounded), refunds made on a
//! provider's dashboard that only an event tells us about, refund events that overtake the
//! capture, and what a refund undoes (entitlements, stock) and issues (credit notes,
//! reversing ledger rows) — through all three providers.

use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Backend, TestApp, WEBHOOK_SECRET, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(
    stripe_full_refund_revokes_credits_and_restocks,
    razorpay_full_refund_revokes_credits_and_restocks,
    paypal_full_refund_revokes_credits_and_restocks,
    partial_refunds_add_up_and_are_bounded,
    concurrent_refunds_never_exceed_the_payment,
    refund_requests_are_checked,
    refund_survives_a_provider_outage_with_the_same_key,
    refund_whose_answer_times_out_is_made_once,
    an_unanswered_refund_is_finished_by_the_engine,
    dashboard_refund_arrives_as_an_event,
    stripe_refund_event_before_capture,
    razorpay_refund_event_before_capture,
    signed_but_senseless_refunds_are_parked,
    an_event_that_keeps_failing_to_apply_is_parked,
    a_load_of_failing_events_never_stops_a_shutdown,
    stripe_pending_refund_is_booked_only_when_it_succeeds,
    razorpay_pending_refund_is_booked_only_when_it_succeeds,
    paypal_pending_refund_is_booked_only_when_it_succeeds,
    racing_refund_notices_never_add_up_to_more_than_was_paid,
    an_early_refund_in_another_currency_is_never_booked,
    a_dispute_at_any_provider_is_kept_and_moves_nothing,
    a_pending_refund_whose_event_is_lost_is_read_back,
);

/// `POST /api/payments/refund` as an admin, with an optional Idempotency-Key.
async fn refund(app: &TestApp, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/payments/refund", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.expect("refund");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// An order of `qty` seats paid through `provider` and fulfilled: its id.
async fn fulfilled_order(app: &TestApp, provider: &str, email: &str, qty: i64) -> String {
    let (id, co) = app.seat_checkout(email, qty, provider).await;
    let checkout = s(&co["provider_order_id"]).to_owned();
    match provider {
        "stripe" => {
            app.pay(&checkout, json!({})).await;
        }
        "razorpay" => {
            app.sandbox_post(
                &format!("/sandbox/razorpay/orders/{checkout}/pay"),
                json!({}),
            )
            .await;
        }
        _ => {
            app.sandbox_post(
                &format!("/sandbox/paypal/orders/{checkout}/approve"),
                json!({}),
            )
            .await;
        }
    }
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    id
}

/// Debits minus credits per account for the order; every account nets to zero after a full
/// refund, and the whole ledger always balances.
async fn ledger_net(app: &TestApp, order_id: &str) -> Vec<(String, i64)> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT account, CAST(SUM(debit_minor) AS BIGINT), CAST(SUM(credit_minor) AS BIGINT)
         FROM ledger_entries WHERE order_id = $1 GROUP BY account ORDER BY account",
    )
    .bind(order_id)
    .fetch_all(&app.store.pool)
    .await
    .expect("ledger");
    rows.into_iter().map(|(a, d, c)| (a, d - c)).collect()
}

async fn revoked(app: &TestApp, order_id: &str) -> Vec<Option<i64>> {
    sqlx::query_scalar("SELECT revoked_at FROM entitlements WHERE order_id = $1")
        .bind(order_id)
        .fetch_all(&app.store.pool)
        .await
        .expect("entitlements")
}

async fn full_refund_revokes_credits_and_restocks(backend: Backend, provider: &str) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, provider, "refund-me@example.com", 2).await;
    assert_eq!(app.stock("SEAT").await.0, 3);
    let (status, r) = refund(
        &app,
        json!({"order_id": id, "reason": "changed their mind", "restock": true}),
        Some("key-1"),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["amount_minor"], 100_000);
    assert_eq!(r["provider"], provider);
    assert_eq!(r["applied"], true);
    assert_eq!(r["credit_note_number"], "INV-CN-000001");
    let o = app.order(&id).await;
    assert_eq!(o["status"], "refunded", "{o:#}");
    assert_eq!(o["refunds"].as_array().map(Vec::len), Some(1), "{o:#}");
    // The provider's refund event (delivered as the refund was made) changed nothing more.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refunds WHERE order_id = $1", &id)
            .await,
        1
    );
    assert!(
        revoked(&app, &id).await.iter().all(Option::is_some),
        "entitlements revoked"
    );
    // Credit note: the full amount with its 20 % VAT share; ledger back to zero.
    let (total, tax): (i64, i64) =
        sqlx::query_as("SELECT total_minor, tax_minor FROM credit_notes WHERE order_id = $1")
            .bind(&id)
            .fetch_one(&app.store.pool)
            .await
            .expect("credit note");
    assert_eq!((total, tax), (100_000, 16_667));
    for (account, net) in ledger_net(&app, &id).await {
        assert_eq!(net, 0, "{account} nets to zero after a full refund");
    }
    assert_eq!(app.stock("SEAT").await.0, 5, "stock returned");
    // The same request again: the same refund, nothing new.
    let (status, again) = refund(
        &app,
        json!({"order_id": id, "reason": "changed their mind", "restock": true}),
        Some("key-1"),
    )
    .await;
    assert_eq!(status, 201, "the first answer, replayed: {again}");
    assert_eq!(again, r);
    let (status, e) = refund(&app, json!({"order_id": id}), None).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "already_refunded");
    // The buyer, who had a receipt, is told of the refund once.
    app.wait_for(&id, &["refunded"]).await;
    assert_eq!(refund_emails(&app, "refund-me@example.com").await, 1);
    app.finish().await;
}

/// Refund emails sent to `to` (one per refund).
async fn refund_emails(app: &TestApp, to: &str) -> i64 {
    app.count(
        "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1 AND kind LIKE 'refund:%'",
        to,
    )
    .await
}

async fn stripe_full_refund_revokes_credits_and_restocks(backend: Backend) {
    full_refund_revokes_credits_and_restocks(backend, "stripe").await;
}

async fn razorpay_full_refund_revokes_credits_and_restocks(backend: Backend) {
    full_refund_revokes_credits_and_restocks(backend, "razorpay").await;
}

async fn paypal_full_refund_revokes_credits_and_restocks(backend: Backend) {
    full_refund_revokes_credits_and_restocks(backend, "paypal").await;
}

async fn partial_refunds_add_up_and_are_bounded(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "razorpay", "partial@example.com", 2).await;
    let (status, first) = refund(
        &app,
        json!({"order_id": id, "amount_minor": 30_000}),
        Some("p-1"),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["credit_note_number"], "INV-CN-000001");
    assert_eq!(app.order(&id).await["status"], "partially_refunded");
    assert!(
        revoked(&app, &id).await.iter().all(Option::is_none),
        "a partial refund keeps the entitlement"
    );
    // The same key with another body is refused; more than is left is refused.
    let (status, e) = refund(
        &app,
        json!({"order_id": id, "amount_minor": 10_000}),
        Some("p-1"),
    )
    .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    let (status, e) = refund(&app, json!({"order_id": id, "amount_minor": 70_001}), None).await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "amount_minor");
    assert!(s(&e["error"]["message"]).contains("70000"), "{e}");
    // The rest.
    let (status, rest) = refund(&app, json!({"order_id": id}), Some("p-2")).await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(rest["amount_minor"], 70_000);
    assert_eq!(rest["credit_note_number"], "INV-CN-000002");
    assert_eq!(app.order(&id).await["status"], "refunded");
    assert!(revoked(&app, &id).await.iter().all(Option::is_some));
    app.wait_for(&id, &["refunded"]).await;
    assert_eq!(refund_emails(&app, "partial@example.com").await, 2);
    let mail: Vec<String> = app
        .outbox_files()
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("refund-"))
        .map(|f| std::fs::read_to_string(f).expect("read mail"))
        .collect();
    assert!(
        mail.iter()
            .any(|m| m.contains("INV-CN-000002") && m.contains("700.00 USD")),
        "{mail:?}"
    );
    // Not asked to restock (the default): the seats stay sold.
    assert_eq!(app.stock("SEAT").await.0, 3);
    let rz = app.sandbox_get("/sandbox/razorpay/refunds").await;
    let amounts: Vec<i64> = rz["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["amount"].as_i64())
        .collect();
    assert_eq!(amounts, vec![30_000, 70_000]);
    app.finish().await;
}

/// Eight refunds of 30 % each race for one payment (a barrier releases them together):
/// three fit, the others are refused, and the provider made exactly three.
async fn concurrent_refunds_never_exceed_the_payment(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "race@example.com", 2).await;
    let app = std::sync::Arc::new(app);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (app, barrier, id) = (app.clone(), barrier.clone(), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                refund(&app, json!({"order_id": id, "amount_minor": 30_000}), None).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert!(status == 201 || status == 422, "{status} {body}");
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    let o = app.order(&id).await;
    assert_eq!(o["status"], "partially_refunded", "{o:#}");
    let applied: Vec<i64> = o["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .filter(|r| r["applied"] == true)
        .filter_map(|r| r["amount_minor"].as_i64())
        .collect();
    assert_eq!(applied, vec![30_000; 3]);
    let made = app.sandbox_get("/sandbox/stripe/refunds").await;
    assert_eq!(made["data"].as_array().map(Vec::len), Some(3), "{made}");
    TestApp::finish_shared(app).await;
}

async fn refund_requests_are_checked(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let order = app
        .create_order("unpaid@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let unpaid = s(&order["id"]).to_owned();
    let r = app
        .http
        .post(format!("{}/api/payments/refund", app.url))
        .json(&json!({"order_id": unpaid}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401, "admin only");
    let (status, e) = refund(&app, json!({"order_id": unpaid}), None).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "not_refundable");
    for (body, field) in [
        (
            json!({"order_id": unpaid, "amount_minor": 0}),
            "amount_minor",
        ),
        (
            json!({"order_id": unpaid, "amount_minor": -5}),
            "amount_minor",
        ),
        (json!({"order_id": "nope"}), "order_id"),
        (json!({"order_id": unpaid, "reason": ""}), "reason"),
    ] {
        let (status, e) = refund(&app, body.clone(), None).await;
        assert_eq!(status, 422, "{body}: {e}");
        assert_eq!(e["error"]["field"], field, "{body}: {e}");
    }
    let (status, e) = refund(&app, json!({"order_id": unpaid, "amount": 5}), None).await;
    assert_eq!(status, 422, "unknown fields are refused: {e}");
    let (status, e) = refund(
        &app,
        json!({"order_id": "ord_01JZZZZZZZZZZZZZZZZZZZZZZZ"}),
        None,
    )
    .await;
    assert!(status == 404 || status == 422, "{status} {e}");
    app.finish().await;
}

async fn refund_survives_a_provider_outage_with_the_same_key(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "outage@example.com", 1).await;
    app.inject_api_errors(&[503]).await;
    let (status, e) = refund(&app, json!({"order_id": id}), Some("outage-1")).await;
    assert_eq!(status, 503, "{e}");
    assert_eq!(e["error"]["code"], "provider_unavailable");
    // Recorded as requested: it still counts against what can be refunded.
    let (status, e) = refund(&app, json!({"order_id": id}), Some("other-key")).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "already_refunded");
    let (status, r) = refund(&app, json!({"order_id": id}), Some("outage-1")).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(app.order(&id).await["status"], "refunded");
    let made = app.sandbox_get("/sandbox/stripe/refunds").await;
    assert_eq!(made["data"].as_array().map(Vec::len), Some(1), "{made}");
    app.finish().await;
}

/// The provider makes the refund but its answer never arrives (the call times out). Its
/// refund event, which names our refund, settles it; asking again with the same key
/// returns that refund, and the provider holds exactly one.
async fn refund_whose_answer_times_out_is_made_once(backend: Backend) {
    let app = spawn(
        backend,
        &[("FULFILLD__PROVIDERS__REQUEST_TIMEOUT_MS", "500")],
    )
    .await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "paypal", "timeout@example.com", 1).await;
    app.sandbox_post("/sandbox/paypal/faults", json!({"api_errors": ["timeout"]}))
        .await;
    let (status, r) = refund(&app, json!({"order_id": id}), Some("t-1")).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["applied"], true);
    assert!(
        s(&r["last_error"]).contains("request failed"),
        "the answer was lost: {r}"
    );
    let (status, again) = refund(&app, json!({"order_id": id}), Some("t-1")).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again, r);
    let made = app.sandbox_get("/sandbox/paypal/refunds").await;
    assert_eq!(made["items"].as_array().map(Vec::len), Some(1), "{made}");
    assert_eq!(app.order(&id).await["status"], "refunded");
    app.finish().await;
}

/// The provider is down when the refund is asked for (503, `requested`); nobody repeats the
/// request, and the engine asks again by itself: refunded once, with the same refund.
async fn an_unanswered_refund_is_finished_by_the_engine(backend: Backend) {
    let app = spawn(backend, &[("FULFILLD__REFUNDS__RESUME_AFTER_MS", "300")]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "razorpay", "resume@example.com", 1).await;
    app.sandbox_post("/sandbox/razorpay/faults", json!({"api_errors": [503]}))
        .await;
    let (status, e) = refund(&app, json!({"order_id": id}), Some("resume-1")).await;
    assert_eq!(status, 503, "{e}");
    let o = app
        .wait_until(&id, "refunded by the engine", |o| o["status"] == "refunded")
        .await;
    let refunds = o["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "{o:#}");
    assert_eq!(refunds[0]["status"], "succeeded");
    assert_eq!(refunds[0]["source"], "admin");
    let made = app.sandbox_get("/sandbox/razorpay/refunds").await;
    assert_eq!(made["items"].as_array().map(Vec::len), Some(1), "{made}");
    // The caller's retry, late, finds the refund made.
    let (status, again) = refund(&app, json!({"order_id": id}), Some("resume-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], refunds[0]["id"]);
    app.finish().await;
}

async fn dashboard_refund_arrives_as_an_event(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "dashboard@example.com", 2).await;
    let pi = app.provider_payment_id(&id).await.expect("payment intent");
    // Someone refunds part of it on Stripe's dashboard: no metadata of ours.
    let r = app
        .http
        .post(format!("{}/v1/refunds", app.sandbox))
        .bearer_auth("sk_test_sandbox")
        .form(&[("payment_intent", pi.as_str()), ("amount", "25000")])
        .send()
        .await
        .expect("dashboard refund");
    assert_eq!(r.status(), 200);
    app.applied().await;
    let o = app.order(&id).await;
    assert_eq!(o["status"], "partially_refunded", "{o:#}");
    let refunds = o["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "{o:#}");
    assert_eq!(refunds[0]["source"], "provider");
    assert_eq!(refunds[0]["amount_minor"], 25_000);
    assert_eq!(refunds[0]["credit_note_number"], "INV-CN-000001");
    // What is left can still be refunded through the API, and no more.
    let (status, e) = refund(&app, json!({"order_id": id, "amount_minor": 75_001}), None).await;
    assert_eq!(status, 422, "{e}");
    let (status, r) = refund(&app, json!({"order_id": id}), None).await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["amount_minor"], 75_000);
    assert_eq!(app.order(&id).await["status"], "refunded");
    app.finish().await;
}

/// Checks an order refunded before it was ever fulfilled: no invoice, no entitlement, the
/// reservation released, and the buyer told with a refund notice.
async fn assert_refunded_unfulfilled(app: &TestApp, id: &str, email: &str) {
    let o = app
        .wait_for(id, &["refunded", "fulfilled", "needs_review"])
        .await;
    assert_eq!(o["status"], "refunded", "{o:#}");
    for sql in [
        "SELECT COUNT(*) FROM invoices WHERE order_id = $1",
        "SELECT COUNT(*) FROM entitlements WHERE order_id = $1",
    ] {
        assert_eq!(app.count(sql, id).await, 0, "{sql}");
    }
    assert_eq!(
        app.stock("SEAT").await,
        (5, 0),
        "nothing sold, nothing held"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1 AND kind = 'refund_notice'",
            email
        )
        .await,
        1
    );
}

async fn stripe_refund_event_before_capture(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let order = app
        .create_order(
            "early-refund@example.com",
            json!([{"sku": "SEAT", "qty": 1}]),
        )
        .await;
    let id = s(&order["id"]).to_owned();
    let co = app.checkout(&id).await;
    let session = s(&co["provider_order_id"]).to_owned();
    // The buyer pays; Stripe's completion event is held back…
    let paid = app.pay(&session, json!({"webhook": "held"})).await;
    let pi = s(&paid["session"]["payment_intent"]).to_owned();
    // …while a refund made at once reaches us first, for a payment intent we do not know.
    let r = app
        .http
        .post(format!("{}/v1/refunds", app.sandbox))
        .bearer_auth("sk_test_sandbox")
        .form(&[("payment_intent", pi.as_str())])
        .send()
        .await
        .expect("refund");
    assert_eq!(r.status(), 200);
    assert_eq!(app.order(&id).await["status"], "pending_payment");
    let released = app
        .sandbox_post("/sandbox/stripe/webhooks/release", json!({}))
        .await;
    assert_eq!(released["deliveries"][0]["status"], 200, "{released}");
    assert_refunded_unfulfilled(&app, &id, "early-refund@example.com").await;
    app.finish().await;
}

async fn razorpay_refund_event_before_capture(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, co) = app
        .seat_checkout("early-rz@example.com", 1, "razorpay")
        .await;
    let rz_order = s(&co["provider_order_id"]).to_owned();
    let paid = app
        .sandbox_post(
            &format!("/sandbox/razorpay/orders/{rz_order}/pay"),
            json!({"webhook": "held"}),
        )
        .await;
    let payment = s(&paid["razorpay_payment_id"]).to_owned();
    let r = app
        .http
        .post(format!("{}/v1/payments/{payment}/refund", app.sandbox))
        .basic_auth("rzp_test_sandbox", Some("rzp_secret_sandbox"))
        .json(&json!({}))
        .send()
        .await
        .expect("refund");
    assert_eq!(r.status(), 200);
    assert_eq!(app.order(&id).await["status"], "pending_payment");
    // authorized, captured, order.paid — delivered newest first.
    let released = app
        .sandbox_post(
            "/sandbox/razorpay/webhooks/release",
            json!({"order": "reversed"}),
        )
        .await;
    assert_eq!(
        released["deliveries"].as_array().map(Vec::len),
        Some(3),
        "{released}"
    );
    assert_refunded_unfulfilled(&app, &id, "early-rz@example.com").await;
    app.finish().await;
}

/// A Stripe `refund.created` event for payment intent `pi`, signed.
async fn post_refund_event(
    app: &TestApp,
    n: usize,
    pi: &str,
    amount: i64,
    currency: &str,
) -> String {
    let event_id = format!("evt_senseless_{n}");
    let body = serde_json::to_vec(&json!({
        "id": event_id, "object": "event", "created": 1_800_000_000, "type": "refund.created",
        "data": {"object": {
            "id": format!("re_senseless_{n}"), "object": "refund", "amount": amount,
            "created": 1_800_000_000, "currency": currency, "metadata": {},
            "payment_intent": pi, "status": "succeeded"
        }}
    }))
    .expect("json");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(r.status(), 200, "a signed event is taken");
    event_id
}

/// Refund events Stripe signed but that make no sense for the payment — an amount of zero
/// or less, another currency, more than was paid — are parked with the reason: nothing is
/// booked, the order stays as it was, and 70 of them in a row (more than one applier
/// batch) hold up no genuine event behind them.
async fn signed_but_senseless_refunds_are_parked(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "senseless@example.com", 1).await;
    let pi = app.provider_payment_id(&id).await.expect("payment intent");
    for (n, amount, currency, why) in [
        (0, 0, "usd", "not positive"),
        (1, -50_000, "usd", "not positive"),
        (2, 100, "eur", "currency"),
        (3, 50_001, "usd", "add up to"),
    ] {
        let event = post_refund_event(&app, n, &pi, amount, currency).await;
        let outcome = app.event_outcome(&event).await;
        assert!(
            outcome.starts_with("parked for review") && outcome.contains(why),
            "{amount} {currency}: {outcome}"
        );
    }
    // A flood of negative ones, then a genuine payment for another order.
    for n in 10..80 {
        post_refund_event(&app, n, &pi, -1, "usd").await;
    }
    let (other, co) = app.seat_checkout("behind@example.com", 1, "stripe").await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
        .await;
    let body = serde_json::to_vec(&paid["event"]).expect("event");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(r.status(), 200);
    app.applied().await;
    let o = app.wait_for(&other, &["fulfilled", "needs_review"]).await;
    assert_eq!(
        o["status"], "fulfilled",
        "the genuine event behind them: {o:#}"
    );
    let o = app.order(&id).await;
    assert_eq!(o["status"], "fulfilled", "nothing was booked: {o:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refunds WHERE order_id = $1", &id)
            .await,
        0
    );
    app.finish().await;
}

/// A signed event that fails to apply every time it is tried (here it would give our
/// refund the provider id another refund row already holds: a unique violation) is tried a
/// few times, then parked with the reason; the events after it are applied all along. It is
/// listed (API, CLI, `/metrics`) and, once the cause is fixed, replayed: applied, unparked.
async fn an_event_that_keeps_failing_to_apply_is_parked(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "poison@example.com", 1).await;
    let pi = app.provider_payment_id(&id).await.expect("payment intent");
    // A refund made at the provider (re_senseless_1), then one of ours.
    let first = post_refund_event(&app, 1, &pi, 100, "usd").await;
    assert!(!app.event_outcome(&first).await.starts_with("parked"));
    let (status, ours) = refund(&app, json!({"order_id": id, "amount_minor": 200}), None).await;
    assert_eq!(status, 201, "{ours}");
    app.applied().await;
    // An event that names our refund but the first one's provider id.
    let body = serde_json::to_vec(&json!({
        "id": "evt_poison", "object": "event", "created": 1_800_000_000, "type": "refund.updated",
        "data": {"object": {
            "id": "re_senseless_1", "object": "refund", "amount": 200, "created": 1_800_000_000,
            "currency": "usd", "metadata": {"refund_id": ours["id"]}, "payment_intent": pi,
            "status": "succeeded"
        }}
    }))
    .expect("json");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(r.status(), 200);
    // Behind it, a genuine payment of another order.
    let (other, co) = app
        .seat_checkout("after-poison@example.com", 1, "stripe")
        .await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let o = app.wait_for(&other, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    let outcome = app.event_outcome("evt_poison").await;
    assert!(
        outcome.starts_with("not applied: 5 tries failed"),
        "{outcome}"
    );
    // Listed as parked, and counted at /metrics; nothing else is.
    let (status, parked) = app
        .admin("GET", "/api/admin/events?parked=true", None)
        .await;
    assert_eq!(status, 200, "{parked}");
    let ids: Vec<&str> = parked["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|ev| s(&ev["event_id"]))
        .collect();
    assert_eq!(ids, ["evt_poison"], "{parked:#}");
    let metrics = crate::observability::scrape(&app).await;
    assert!(
        metrics.contains("fulfilld_webhook_events_parked 1\n"),
        "{metrics}"
    );
    let stored = parked["events"][0]["id"].as_i64().expect("stored id");
    // The CLI lists it too, and only it.
    let cli = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"));
        c.args(["admin", "--url", &app.url])
            .args(args)
            .env("FULFILLD__ADMIN__TOKEN", ADMIN_TOKEN);
        async move { c.output().await.expect("fulfilld admin") }
    };
    let out = cli(&["events", "list", "--parked"]).await;
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(
        lines[0].contains("evt_poison") && lines[0].contains("not applied"),
        "{listed}"
    );
    // The fix: an operator finds the provider's refund was booked on the wrong row and
    // frees its id. Replayed, the parked event now applies, and is parked no more.
    sqlx::query("UPDATE refunds SET provider_refund_id = $1 WHERE provider_refund_id = $2")
        .bind("re_moved_aside")
        .bind("re_senseless_1")
        .execute(&app.store.pool)
        .await
        .expect("fix");
    let out = cli(&["events", "replay", &stored.to_string()]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("event {stored}: ")),
        "{out:?}"
    );
    let outcome = app.event_outcome("evt_poison").await;
    assert!(
        !outcome.starts_with("not applied") && !outcome.starts_with("parked"),
        "{outcome}"
    );
    let booked: String = sqlx::query_scalar("SELECT status FROM refunds WHERE id = $1")
        .bind(s(&ours["id"]))
        .fetch_one(&app.store.pool)
        .await
        .expect("our refund");
    assert_eq!(booked, "succeeded");
    let (_, parked) = app
        .admin("GET", "/api/admin/events?parked=true", None)
        .await;
    assert_eq!(parked["events"], json!([]), "{parked:#}");
    let metrics = crate::observability::scrape(&app).await;
    assert!(
        metrics.contains("fulfilld_webhook_events_parked 0\n"),
        "{metrics}"
    );
    let (_, log) = app
        .admin("GET", "/api/admin/audit?action=event.replay", None)
        .await;
    assert_eq!(log["entries"][0]["target"], stored.to_string(), "{log:#}");
    app.finish().await;
}

/// Issue 21.1: an intake whose applier is busy failing events (70 that can never apply, more
/// than a batch) still stops on SIGTERM, cleanly; every one of them ends parked, and a
/// genuine payment sent behind them to that intake is applied.
async fn a_load_of_failing_events_never_stops_a_shutdown(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "shutdown@example.com", 1).await;
    let pi = app.provider_payment_id(&id).await.expect("payment intent");
    post_refund_event(&app, 1, &pi, 100, "usd").await;
    let (status, ours) = refund(&app, json!({"order_id": id, "amount_minor": 200}), None).await;
    assert_eq!(status, 201, "{ours}");
    app.applied().await;
    let mut intake = app.start_role("intake", &[], None, &[]).await;
    let signed = |body: &Value| {
        let body = serde_json::to_vec(body).expect("json");
        let sig = signature(WEBHOOK_SECRET, &body, 0);
        (body, sig)
    };
    for n in 0..70 {
        // Each would give our refund the provider id another refund row holds.
        let (body, sig) = signed(&json!({
            "id": format!("evt_stuck_{n}"), "object": "event", "created": 1_800_000_000,
            "type": "refund.updated",
            "data": {"object": {
                "id": "re_senseless_1", "object": "refund", "amount": 200,
                "created": 1_800_000_000, "currency": "usd",
                "metadata": {"refund_id": ours["id"]}, "payment_intent": pi,
                "status": "succeeded"
            }}
        }));
        let r = app.post_webhook_to(&intake.url, body, Some(sig)).await;
        assert_eq!(r.status(), 200);
    }
    let (other, co) = app
        .seat_checkout("behind-stuck@example.com", 1, "stripe")
        .await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
        .await;
    let (body, sig) = signed(&paid["event"]);
    let r = app.post_webhook_to(&intake.url, body, Some(sig)).await;
    assert_eq!(r.status(), 200);
    assert!(
        intake.sigterm().await,
        "the intake stops cleanly:\n{}",
        intake.log_text()
    );
    // What it left is applied by the engine that stays.
    let o = app.wait_for(&other, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    for n in [0, 69] {
        let outcome = app.event_outcome(&format!("evt_stuck_{n}")).await;
        assert!(outcome.starts_with("not applied"), "{n}: {outcome}");
    }
    let (_, parked) = app
        .admin("GET", "/api/admin/events?parked=true&limit=100", None)
        .await;
    assert_eq!(
        parked["events"].as_array().map(Vec::len),
        Some(70),
        "{parked:#}"
    );
    app.finish().await;
}

/// A refund the provider answers pending (Stripe `pending`, Razorpay `pending`, PayPal
/// `PENDING`) books nothing — no credit note, the order and its access as they were — until
/// the provider's event says it succeeded (`refund.updated`, `refund.processed`,
/// `PAYMENT.CAPTURE.REFUNDED`); one that then fails is marked failed and the order stays as
/// it was.
async fn stripe_pending_refund_is_booked_only_when_it_succeeds(backend: Backend) {
    pending_refund_is_booked_only_when_it_succeeds(backend, "stripe").await;
}

async fn razorpay_pending_refund_is_booked_only_when_it_succeeds(backend: Backend) {
    pending_refund_is_booked_only_when_it_succeeds(backend, "razorpay").await;
}

async fn paypal_pending_refund_is_booked_only_when_it_succeeds(backend: Backend) {
    pending_refund_is_booked_only_when_it_succeeds(backend, "paypal").await;
}

async fn pending_refund_is_booked_only_when_it_succeeds(backend: Backend, provider: &str) {
    // Each sandbox's words: how refunds start pending, and how one succeeds or fails.
    let (pending, succeeded, failed) = match provider {
        "stripe" => ("pending", "succeeded", Some("failed")),
        "razorpay" => ("pending", "processed", Some("failed")),
        // PayPal announces a completed refund only (PAYMENT.CAPTURE.REFUNDED).
        _ => ("pending", "completed", None),
    };
    let app = spawn(
        backend,
        &[("FULFILLD__MERCHANT_WEBHOOKS__ALLOW_PRIVATE", "true")],
    )
    .await;
    app.put_sku("SEAT", 50_000, 5).await;
    // The merchant's systems listen for failed refunds (on a port nothing answers: the
    // delivery is what is looked at, not its arrival).
    let (status, ep) = app
        .admin(
            "POST",
            "/api/admin/webhook-endpoints",
            Some(
                json!({"url": "http://127.0.0.1:9/hooks", "event_types": ["order.refund_failed"]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    let id = fulfilled_order(&app, provider, "pending-refund@example.com", 2).await;
    app.sandbox_post(
        &format!("/sandbox/{provider}/refunds/mode"),
        json!({"status": pending}),
    )
    .await;
    let credit_notes = "SELECT COUNT(*) FROM credit_notes WHERE order_id = $1";

    let (status, r) = refund(
        &app,
        json!({"order_id": id, "amount_minor": 50_000}),
        Some("pending-1"),
    )
    .await;
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (s(&r["status"]), &r["applied"]),
        ("pending", &json!(false)),
        "{r}"
    );
    app.applied().await;
    let o = app.order(&id).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(o["refunds"][0]["status"], "pending", "{o:#}");
    assert_eq!(app.count(credit_notes, &id).await, 0);
    assert_eq!(revoked(&app, &id).await, vec![None]);
    // The pending one counts against what is left to refund.
    let (status, e) = refund(&app, json!({"order_id": id, "amount_minor": 60_000}), None).await;
    assert_eq!(status, 422, "{e}");

    let re = s(&o["refunds"][0]["provider_refund_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/{provider}/refunds/{re}/settle"),
        json!({"outcome": succeeded}),
    )
    .await;
    app.applied().await;
    let o = app
        .wait_until(&id, "the refund booked", |o| {
            o["status"] == "partially_refunded"
        })
        .await;
    assert_eq!(o["refunds"][0]["status"], "succeeded", "{o:#}");
    assert_eq!(app.count(credit_notes, &id).await, 1);
    let deliveries = format!("/api/admin/webhook-deliveries?order_id={id}");
    let told = app.admin("GET", &deliveries, None).await.1;
    assert_eq!(told["deliveries"], json!([]), "nothing failed yet");

    let Some(failed) = failed else {
        app.finish().await;
        return;
    };
    // The next one fails at the provider after it was accepted: nothing is booked.
    let (status, r) = refund(&app, json!({"order_id": id}), Some("pending-2")).await;
    assert_eq!(status, 202, "{r}");
    let re = s(&r["provider_refund_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/{provider}/refunds/{re}/settle"),
        json!({"outcome": failed}),
    )
    .await;
    app.applied().await;
    let o = app.order(&id).await;
    assert_eq!(o["status"], "partially_refunded", "{o:#}");
    let second = o["refunds"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["provider_refund_id"] == re.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(second["status"], "failed", "{o:#}");
    assert_eq!(app.count(credit_notes, &id).await, 1);
    assert_eq!(revoked(&app, &id).await, vec![None], "access kept");
    let told = app.admin("GET", &deliveries, None).await.1["deliveries"].clone();
    assert_eq!(told.as_array().map(Vec::len), Some(1), "{told:#}");
    assert_eq!(told[0]["event_type"], "order.refund_failed", "{told:#}");
    app.finish().await;
}

/// Signed refund notices for one payment arriving at once (a provider's retries, several
/// intake processes), each for 60% of it: one is booked, every other is parked as adding up
/// to more than was paid — the over-refund check cannot be passed twice by racing it.
async fn racing_refund_notices_never_add_up_to_more_than_was_paid(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "racing-refunds@example.com", 1).await;
    let pi = app.provider_payment_id(&id).await.expect("payment intent");
    // Two intake processes on the same store: each commits its own webhooks.
    let other = app.start_role("intake", &[], None, &[]).await;
    let urls = [app.url.clone(), other.url.clone()];
    let racers = 8;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(racers));
    let mut tasks = Vec::new();
    for n in 0..racers {
        let body = serde_json::to_vec(&json!({
            "id": format!("evt_race_{n}"), "object": "event", "created": 1_800_000_000,
            "type": "refund.created",
            "data": {"object": {
                "id": format!("re_race_{n}"), "object": "refund", "amount": 30_000,
                "created": 1_800_000_000, "currency": "usd", "metadata": {},
                "payment_intent": pi, "status": "succeeded"
            }}
        }))
        .expect("json");
        let (http, url, barrier) = (app.http.clone(), urls[n % 2].clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let sig = signature(WEBHOOK_SECRET, &body, 0);
            barrier.wait().await;
            http.post(format!("{url}/webhooks/stripe"))
                .header("stripe-signature", sig)
                .body(body)
                .send()
                .await
                .expect("webhook")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("racer"), 200);
    }
    app.applied().await;
    let booked = app
        .count(
            "SELECT COUNT(*) FROM refunds WHERE order_id = $1 AND status = 'succeeded'",
            &id,
        )
        .await;
    assert_eq!(booked, 1, "one of the racing notices is booked");
    let mut parked = 0;
    for n in 0..racers {
        let outcome = app.event_outcome(&format!("evt_race_{n}")).await;
        if outcome.starts_with("parked for review") {
            assert!(outcome.contains("add up to"), "{outcome}");
            parked += 1;
        }
    }
    assert_eq!(parked, racers - 1);
    assert_eq!(app.order(&id).await["status"], "partially_refunded");
    app.finish().await;
}

/// A signed refund event that overtakes its capture is kept until the payment is known;
/// when it names another currency than the payment's, it is then parked, not booked.
async fn an_early_refund_in_another_currency_is_never_booked(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let order = app
        .create_order("early-eur@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let co = app.checkout(&id).await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "held"}))
        .await;
    let pi = s(&paid["session"]["payment_intent"]).to_owned();
    let early = post_refund_event(&app, 90, &pi, 100, "eur").await;
    assert!(
        app.event_outcome(&early)
            .await
            .contains("kept until its capture arrives"),
        "{}",
        app.event_outcome(&early).await
    );
    let released = app
        .sandbox_post("/sandbox/stripe/webhooks/release", json!({}))
        .await;
    assert_eq!(released["deliveries"][0]["status"], 200, "{released}");
    let o = app
        .wait_for(
            &id,
            &[
                "fulfilled",
                "needs_review",
                "refunded",
                "partially_refunded",
            ],
        )
        .await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refunds WHERE order_id = $1", &id)
            .await,
        0,
        "nothing booked"
    );
    app.finish().await;
}

/// A dispute opened at the provider (Stripe `charge.dispute.created`, Razorpay
/// `payment.dispute.created`, PayPal `CUSTOMER.DISPUTE.CREATED`) is received, kept and
/// acknowledged, and moves nothing: the money is argued over at the provider.
async fn a_dispute_at_any_provider_is_kept_and_moves_nothing(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    for (provider, kind) in [
        ("stripe", "charge.dispute.created"),
        ("razorpay", "payment.dispute.created"),
        ("paypal", "CUSTOMER.DISPUTE.CREATED"),
    ] {
        let id = fulfilled_order(
            &app,
            provider,
            &format!("dispute-{provider}@example.com"),
            1,
        )
        .await;
        let ppid = app.provider_payment_id(&id).await.expect("captured");
        let opened = match provider {
            "stripe" => {
                app.sandbox_post("/sandbox/stripe/disputes", json!({"payment_intent": ppid}))
                    .await
            }
            "razorpay" => {
                app.sandbox_post(
                    &format!("/sandbox/razorpay/payments/{ppid}/dispute"),
                    json!({}),
                )
                .await
            }
            _ => {
                app.sandbox_post(
                    &format!("/sandbox/paypal/captures/{ppid}/dispute"),
                    json!({}),
                )
                .await
            }
        };
        assert_eq!(
            opened["deliveries"][0]["status"], 200,
            "{provider}: {opened}"
        );
        app.applied().await;
        let outcome: String = sqlx::query_scalar(
            "SELECT outcome FROM webhook_events WHERE provider = $1 AND event_type = $2",
        )
        .bind(provider)
        .bind(kind)
        .fetch_one(&app.store.pool)
        .await
        .expect("the dispute is kept");
        assert!(outcome.starts_with("ignored"), "{provider}: {outcome}");
        let o = app.order(&id).await;
        assert_eq!(o["status"], "fulfilled", "{provider}: {o:#}");
    }
    app.finish().await;
}

/// A refund the provider answered pending ends, but no event says so (lost at Stripe; never
/// sent by PayPal for a failure): the engine asks the provider about refunds pending longer
/// than `refunds.resume_after_ms` and books or fails them.
async fn a_pending_refund_whose_event_is_lost_is_read_back(backend: Backend) {
    let app = spawn(backend, &[("FULFILLD__REFUNDS__RESUME_AFTER_MS", "300")]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let id = fulfilled_order(&app, "stripe", "lost-refund-event@example.com", 1).await;
    app.sandbox_post("/sandbox/stripe/refunds/mode", json!({"status": "pending"}))
        .await;
    let (status, r) = refund(&app, json!({"order_id": id, "amount_minor": 20_000}), None).await;
    assert_eq!(status, 202, "{r}");
    let re = s(&r["provider_refund_id"]).to_owned();
    let settled = app
        .sandbox_post(
            &format!("/sandbox/stripe/refunds/{re}/settle"),
            json!({"outcome": "succeeded", "webhook": "none"}),
        )
        .await;
    assert_eq!(settled["deliveries"], json!([]), "no event: {settled}");
    let o = app
        .wait_until(&id, "the refund read back and booked", |o| {
            o["status"] == "partially_refunded"
        })
        .await;
    assert_eq!(o["refunds"][0]["status"], "succeeded", "{o:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM credit_notes WHERE order_id = $1", &id)
            .await,
        1
    );

    // Razorpay's refund.processed lost too.
    let rz = fulfilled_order(&app, "razorpay", "lost-refund-rz@example.com", 1).await;
    app.sandbox_post(
        "/sandbox/razorpay/refunds/mode",
        json!({"status": "pending"}),
    )
    .await;
    let (status, r) = refund(&app, json!({"order_id": rz, "amount_minor": 20_000}), None).await;
    assert_eq!(status, 202, "{r}");
    let rid = s(&r["provider_refund_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/razorpay/refunds/{rid}/settle"),
        json!({"outcome": "processed", "webhook": "none"}),
    )
    .await;
    let o = app
        .wait_until(&rz, "the Razorpay refund read back and booked", |o| {
            o["status"] == "partially_refunded"
        })
        .await;
    assert_eq!(o["refunds"][0]["status"], "succeeded", "{o:#}");

    // PayPal sends no event for a refund that fails after PENDING: only reading it back
    // tells. Nothing is booked.
    let pp = fulfilled_order(&app, "paypal", "lost-refund-pp@example.com", 1).await;
    app.sandbox_post("/sandbox/paypal/refunds/mode", json!({"status": "pending"}))
        .await;
    let (status, r) = refund(&app, json!({"order_id": pp, "amount_minor": 20_000}), None).await;
    assert_eq!(status, 202, "{r}");
    let rid = s(&r["provider_refund_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/paypal/refunds/{rid}/settle"),
        json!({"outcome": "failed"}),
    )
    .await;
    let o = app
        .wait_until(&pp, "the failed refund read back", |o| {
            o["refunds"][0]["status"] == "failed"
        })
        .await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM credit_notes WHERE order_id = $1", &pp)
            .await,
        0
    );
    app.finish().await;
}
