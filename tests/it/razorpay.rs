//! Razorpay end to end through the sandbox: Orders API checkout, signed webhooks, manual
//! capture by the pipeline, the browser's signed payload, and failures.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    razorpay_payment_is_fulfilled_once,
    razorpay_manual_capture_is_captured_by_the_pipeline,
    razorpay_verify_alone_fulfils_and_checks_the_signature,
    razorpay_forged_webhooks_are_refused,
    razorpay_failed_attempt_keeps_the_order_payable,
    razorpay_sold_out_order_is_refunded_through_razorpay,
    razorpay_failure_after_capture_changes_nothing,
    razorpay_retry_after_a_failure_on_the_same_order_is_fulfilled,
    razorpay_second_capture_is_refunded_and_flagged,
    razorpay_short_payment_needs_review,
    razorpay_capture_beaten_by_automatic_capture_is_read_again,
    razorpay_racing_captures_capture_once_and_all_answer_paid,
    razorpay_order_paid_alone_fulfils,
    the_checkout_page_opens_razorpays_checkout,
);

/// An order of `qty` seats with an open Razorpay checkout: (order id, razorpay order id).
async fn rz_checkout(app: &TestApp, email: &str, qty: i64) -> (String, String) {
    let order = app
        .create_order(email, json!([{"sku": "SEAT", "qty": qty}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let (status, co) = app.try_checkout_with(&id, "razorpay").await;
    assert_eq!(status, 201, "{co}");
    assert_eq!(co["provider"], "razorpay");
    assert!(
        co["checkout_url"].is_null(),
        "Razorpay opens Checkout.js, not a URL: {co}"
    );
    assert_eq!(co["client"]["key_id"], "rzp_test_sandbox");
    assert_eq!(
        co["client"]["script"],
        format!(
            "{}/sandbox/razorpay/checkout.js",
            app.sandbox.trim_end_matches('/')
        )
    );
    assert_eq!(co["amount_minor"], order["total_minor"]);
    let rz_order = s(&co["provider_order_id"]).to_owned();
    assert!(rz_order.starts_with("order_"), "{rz_order}");
    // One open checkout per order: switching provider midway is refused, not double-reserved.
    let (status, e) = app.try_checkout_with(&id, "stripe").await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "checkout_open");
    (id, rz_order)
}

async fn rz_pay(app: &TestApp, rz_order: &str, opts: Value) -> Value {
    app.sandbox_post(&format!("/sandbox/razorpay/orders/{rz_order}/pay"), opts)
        .await
}

async fn razorpay_payment_is_fulfilled_once(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "rz@example.com", 2).await;
    let paid = rz_pay(&app, &rz_order, json!({"webhook": "twice"})).await;
    // authorized, captured, order.paid — each delivered twice.
    let deliveries = paid["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 6);
    assert!(
        deliveries.iter().all(|d| d["status"] == 200),
        "{deliveries:?}"
    );
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(done["payment"]["provider"], "razorpay");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "razorpay"
        )
        .await,
        3
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1",
            "rz@example.com"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        3
    );
    let ppid = app.provider_payment_id(&id).await;
    assert_eq!(ppid.as_deref(), paid["razorpay_payment_id"].as_str());
    app.finish().await;
}

async fn razorpay_manual_capture_is_captured_by_the_pipeline(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "manual@example.com", 1).await;
    let paid = rz_pay(&app, &rz_order, json!({"capture": "manual"})).await;
    assert_eq!(
        paid["deliveries"].as_array().map(Vec::len),
        Some(1),
        "only payment.authorized"
    );
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    // The capture step captured it through the API; the sandbox then announced it.
    let r = app
        .http
        .get(format!(
            "{}/v1/payments/{}",
            app.sandbox,
            s(&paid["razorpay_payment_id"])
        ))
        .basic_auth("rzp_test_sandbox", Some("rzp_secret_sandbox"))
        .send()
        .await
        .expect("get payment");
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["status"], "captured", "{p}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    app.finish().await;
}

async fn razorpay_verify_alone_fulfils_and_checks_the_signature(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "browser@example.com", 1).await;
    let paid = rz_pay(&app, &rz_order, json!({"webhook": "none"})).await;
    let payload = json!({
        "razorpay_order_id": paid["razorpay_order_id"],
        "razorpay_payment_id": paid["razorpay_payment_id"],
        "razorpay_signature": paid["razorpay_signature"],
    });
    // A forged signature changes nothing.
    let mut forged = payload.clone();
    forged["razorpay_signature"] = json!("00".repeat(32));
    let (status, e) = app.verify_with(&id, "razorpay", forged).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "invalid_signature");
    assert_eq!(app.order(&id).await["status"], "pending_payment");
    let (status, e) = app
        .verify_with(&id, "razorpay", json!({"razorpay_order_id": rz_order}))
        .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["field"], "payload.razorpay_payment_id");

    let (status, v) = app.verify_with(&id, "razorpay", payload.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "paid");
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    // Again: nothing more happens.
    let (_, v) = app.verify_with(&id, "razorpay", payload).await;
    assert!(s(&v["outcome"]).starts_with("no change"), "{v}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    app.finish().await;
}

async fn razorpay_forged_webhooks_are_refused(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "forged@example.com", 1).await;
    let paid = rz_pay(&app, &rz_order, json!({"webhook": "none"})).await;
    let captured = &paid["events"][1];
    let body = s(&captured["body"]).as_bytes().to_vec();
    let post = |sig: Option<String>, event_id: Option<&str>, body: Vec<u8>| {
        let mut req = app
            .http
            .post(format!("{}/webhooks/razorpay", app.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = sig {
            req = req.header("x-razorpay-signature", sig);
        }
        if let Some(id) = event_id {
            req = req.header("x-razorpay-event-id", id);
        }
        req.send()
    };
    let good = fulfilld::providers::razorpay::sign_webhook("rzp_whsec_sandbox", &body);
    let wrong = fulfilld::providers::razorpay::sign_webhook("attacker", &body);
    let tampered = String::from_utf8(body.clone())
        .expect("utf-8")
        .replace("captured", "CAPTURED")
        .into_bytes();
    for (what, sig, eid, b) in [
        ("wrong secret", Some(wrong), Some("evt_x"), body.clone()),
        ("missing signature", None, Some("evt_x"), body.clone()),
        ("tampered body", Some(good.clone()), Some("evt_x"), tampered),
    ] {
        let r = post(sig, eid, b).await.expect("post");
        assert_eq!(r.status(), 400, "{what}");
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "razorpay"
        )
        .await,
        0
    );
    // Signed but without its event id: kept (Razorpay would retry for a day, then disable
    // the webhook), and not applied, with the reason.
    let r = post(Some(good.clone()), None, body.clone())
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let outcome = app.unreadable_outcome("razorpay").await;
    assert!(outcome.contains("x-razorpay-event-id"), "{outcome}");
    assert_eq!(app.order(&id).await["status"], "pending_payment");
    let r = post(Some(good), Some(s(&captured["id"])), body)
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.wait_for(&id, &["fulfilled", "needs_review"]).await["status"],
        "fulfilled"
    );
    app.finish().await;
}

/// Ends the order's stock reservation now, as its TTL would, and waits for housekeeping
/// (every 100 ms in these tests) to release it.
async fn end_reservation(app: &TestApp, order_id: &str) -> Value {
    sqlx::query("UPDATE stock_reservations SET expires_at = 0 WHERE order_id = $1")
        .bind(order_id)
        .execute(&app.store.pool)
        .await
        .expect("end reservation");
    app.wait_until(order_id, "the reservation released", |o| {
        o["status"] == "created"
    })
    .await
}

const HOUSEKEEPING: (&str, &str) = ("FULFILLD__QUEUE__HOUSEKEEPING_INTERVAL_MS", "100");

/// Razorpay lets the buyer try again on the same order, so a failed attempt (delivered
/// twice, as concurrent retries would) changes nothing: the seats stay held, nobody is told
/// the payment failed. When the reservation ends, the checkout ends with it: the stock goes
/// back, and the order can be paid with a new checkout.
async fn razorpay_failed_attempt_keeps_the_order_payable(backend: Backend) {
    let app = spawn(backend, &[HOUSEKEEPING]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "declined@example.com", 2).await;
    let paid = rz_pay(
        &app,
        &rz_order,
        json!({"outcome": "failed", "webhook": "twice"}),
    )
    .await;
    assert_eq!(paid["deliveries"][0]["status"], 200);
    assert_eq!(paid["deliveries"][1]["status"], 200);
    app.applied().await;
    let o = app.order(&id).await;
    assert_eq!(o["status"], "pending_payment", "{o:#}");
    assert_eq!(o["payment"]["status"], "created", "{o:#}");
    assert_eq!(app.stock("SEAT").await, (5, 2));
    let failed_event = s(&paid["events"][0]["id"]).to_owned();
    assert!(
        app.event_outcome(&failed_event)
            .await
            .starts_with("a payment attempt failed; the checkout stays payable"),
        "{}",
        app.event_outcome(&failed_event).await
    );
    // The same checkout is still the one to pay.
    let (status, co) = app.try_checkout_with(&id, "razorpay").await;
    assert_eq!(status, 200, "{co}");
    assert_eq!(co["provider_order_id"], rz_order.as_str());

    let o = end_reservation(&app, &id).await;
    assert_eq!(o["payment"]["status"], "expired", "{o:#}");
    assert_eq!(app.stock("SEAT").await, (5, 0));
    let (status, co) = app.try_checkout_with(&id, "razorpay").await;
    assert_eq!(status, 201, "a new checkout: {co}");
    assert_ne!(co["provider_order_id"], rz_order.as_str());
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1 AND kind = 'payment_failed'",
            "declined@example.com"
        )
        .await,
        0,
        "a failed attempt is not a failed payment"
    );
    app.finish().await;
}

/// Two buyers paid for what turned out to be one seat: the second is refunded through
/// Razorpay's refund API, once, and told.
async fn razorpay_sold_out_order_is_refunded_through_razorpay(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 2).await;
    let (first, rz_first) = rz_checkout(&app, "first@example.com", 1).await;
    let (second, rz_second) = rz_checkout(&app, "second@example.com", 1).await;
    app.put_sku("SEAT", 50_000, 1).await; // a stock count finds one seat
    rz_pay(&app, &rz_first, json!({})).await;
    assert_eq!(
        app.wait_for(&first, &["fulfilled", "refunded", "needs_review"])
            .await["status"],
        "fulfilled"
    );
    let paid = rz_pay(&app, &rz_second, json!({})).await;
    let o = app
        .wait_for(&second, &["fulfilled", "refunded", "needs_review"])
        .await;
    assert_eq!(o["status"], "refunded", "{o:#}");
    assert_eq!(o["payment"]["status"], "refunded");
    let refunds = app.sandbox_get("/sandbox/razorpay/refunds").await;
    let items = refunds["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{refunds}");
    assert_eq!(items[0]["payment_id"], paid["razorpay_payment_id"]);
    assert_eq!(items[0]["amount"], 50_000);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE kind = $1",
            "refund_notice"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    app.finish().await;
}

/// A `payment.failed` that arrives after the capture (late, out of order) is stored but
/// does not un-pay the order.
async fn razorpay_failure_after_capture_changes_nothing(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "late@example.com", 1).await;
    let paid = rz_pay(&app, &rz_order, json!({})).await;
    assert_eq!(
        app.wait_for(&id, &["fulfilled", "needs_review"]).await["status"],
        "fulfilled"
    );
    // The same payment, reported failed afterwards.
    let mut ev: Value = serde_json::from_str(s(&paid["events"][0]["body"])).expect("event json");
    ev["event"] = json!("payment.failed");
    ev["payload"]["payment"]["entity"]["status"] = json!("failed");
    let body = serde_json::to_vec(&ev).expect("bytes");
    let r = app
        .http
        .post(format!("{}/webhooks/razorpay", app.url))
        .header(
            "x-razorpay-signature",
            fulfilld::providers::razorpay::sign_webhook("rzp_whsec_sandbox", &body),
        )
        .header("x-razorpay-event-id", "evt_late_failure")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    // A failed attempt never moves a payment (Razorpay orders take retries): nothing moves,
    // and there is nothing to re-read.
    let outcome = app.event_outcome("evt_late_failure").await;
    assert!(
        outcome.starts_with("a payment attempt failed") && outcome.contains("payment is paid"),
        "{outcome}"
    );
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(o["payment"]["status"], "paid");
    assert!(
        o["steps"]
            .as_array()
            .is_some_and(|st| st.iter().all(|s| s["kind"] != "reconcile_payment")),
        "{o:#}"
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        4
    );
    app.finish().await;
}

/// A payment for less than the order (a tampered checkout): the capture check re-reads it
/// from Razorpay and stops the order for a human; nothing is fulfilled.
async fn razorpay_short_payment_needs_review(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "short@example.com", 1).await;
    rz_pay(&app, &rz_order, json!({"amount": 100})).await;
    let o = app.wait_for(&id, &["needs_review", "fulfilled"]).await;
    assert_eq!(o["status"], "needs_review", "{o:#}");
    let cap = &o["steps"][0];
    assert_eq!(cap["kind"], "confirm_capture");
    assert!(s(&cap["last_error"]).contains("amount mismatch"), "{cap}");
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

/// Razorpay lets a buyer try again on the same order after a failed attempt. The failure
/// released the stock and failed the order; the capture that follows contradicts that, is
/// re-read from the API, and the order is fulfilled after all.
async fn razorpay_retry_after_a_failure_on_the_same_order_is_fulfilled(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "retry@example.com", 1).await;
    rz_pay(&app, &rz_order, json!({"outcome": "failed"})).await;
    app.applied().await;
    assert_eq!(app.order(&id).await["status"], "pending_payment");
    let paid = rz_pay(&app, &rz_order, json!({})).await;
    let outcomes: Vec<i64> = paid["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .filter_map(|d| d["status"].as_i64())
        .collect();
    assert_eq!(outcomes, vec![200, 200, 200]);
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(o["payment"]["status"], "paid");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        4
    );
    app.finish().await;
}

/// Two payments captured for one order: a checkout that ended with its reservation (Razorpay
/// keeps the order payable) is paid after all, once the buyer had paid a second checkout. The order is fulfilled once; the extra
/// payment is refunded automatically and shows as such.
async fn razorpay_second_capture_is_refunded_and_flagged(backend: Backend) {
    let app = spawn(backend, &[HOUSEKEEPING]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, first) = rz_checkout(&app, "twice@example.com", 1).await;
    rz_pay(&app, &first, json!({"outcome": "failed"})).await;
    // The buyer gave up; the reservation ended, and with it the checkout.
    end_reservation(&app, &id).await;
    // A fresh checkout, paid.
    let (status, co) = app.try_checkout_with(&id, "razorpay").await;
    assert_eq!(status, 201, "{co}");
    let second = s(&co["provider_order_id"]).to_owned();
    assert_ne!(second, first);
    rz_pay(&app, &second, json!({})).await;
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    // Then the first checkout is paid too (another tab).
    let extra = rz_pay(&app, &first, json!({})).await;
    let extra_payment = s(&extra["razorpay_payment_id"]).to_owned();
    let o = app
        .wait_until(&id, "the extra payment refunded", |o| {
            o["refunds"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["applied"] == true))
                && o["waiting_on"].is_null()
        })
        .await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    let refunds = o["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 1, "{o:#}");
    assert_eq!(refunds[0]["reason"], "duplicate_payment");
    assert_eq!(refunds[0]["amount_minor"], 50_000);
    assert!(refunds[0]["credit_note_number"].is_null(), "{o:#}");
    let rz = app.sandbox_get("/sandbox/razorpay/refunds").await;
    let items = rz["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{rz}");
    assert_eq!(items[0]["payment_id"], extra_payment.as_str());
    for (sql, want) in [
        ("SELECT COUNT(*) FROM invoices WHERE order_id = $1", 1),
        ("SELECT COUNT(*) FROM credit_notes WHERE order_id = $1", 0),
        (
            "SELECT COUNT(*) FROM entitlements WHERE order_id = $1 AND revoked_at IS NULL",
            1,
        ),
        (
            "SELECT COUNT(*) FROM payments WHERE order_id = $1 AND status = 'refunded'",
            1,
        ),
    ] {
        assert_eq!(app.count(sql, &id).await, want, "{sql}");
    }
    app.finish().await;
}

/// Razorpay's automatic capture lands between our read of the authorized payment and our
/// capture call, which Razorpay answers "This payment has already been captured": the
/// payment is read again and fulfilled, not sent to review.
async fn razorpay_capture_beaten_by_automatic_capture_is_read_again(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "race@example.com", 1).await;
    let paid = rz_pay(&app, &rz_order, json!({"capture": "race"})).await;
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    let p: Value = app
        .http
        .get(format!(
            "{}/v1/payments/{}",
            app.sandbox,
            s(&paid["razorpay_payment_id"])
        ))
        .basic_auth("rzp_test_sandbox", Some("rzp_secret_sandbox"))
        .send()
        .await
        .expect("get payment")
        .json()
        .await
        .expect("json");
    assert_eq!(p["status"], "captured", "{p}");
    app.finish().await;
}

/// A manual-capture payment the success page verifies many times at once while its
/// `payment.authorized` webhook arrives and the pipeline captures it too: Razorpay captures
/// it once (one `payment.captured`), and every verify call answers paid rather than a
/// provider error.
async fn razorpay_racing_captures_capture_once_and_all_answer_paid(backend: Backend) {
    let app = spawn(
        backend,
        &[("FULFILLD__CHECKOUT__VERIFY_MIN_INTERVAL_MS", "0")],
    )
    .await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "racers@example.com", 1).await;
    let paid = rz_pay(
        &app,
        &rz_order,
        json!({"capture": "manual", "webhook": "held"}),
    )
    .await;
    let payload = json!({
        "razorpay_order_id": paid["razorpay_order_id"],
        "razorpay_payment_id": paid["razorpay_payment_id"],
        "razorpay_signature": paid["razorpay_signature"],
    });
    let racers = 8;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(racers + 1));
    // The webhook leg: Razorpay's held `payment.authorized` is let go with the verify calls.
    let webhook = {
        let (http, sandbox, barrier) = (app.http.clone(), app.sandbox.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let r = http
                .post(format!("{sandbox}/sandbox/razorpay/webhooks/release"))
                .json(&json!({"order": "as_sent"}))
                .send()
                .await
                .expect("release");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..racers {
        let (http, url, body, barrier) = (
            app.http.clone(),
            app.url.clone(),
            json!({"order_id": id, "provider": "razorpay", "payload": payload}),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = http
                .post(format!("{url}/api/payments/verify"))
                .json(&body)
                .send()
                .await
                .expect("verify");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }));
    }
    for t in tasks {
        let (status, v) = t.await.expect("racer");
        assert_eq!((status, s(&v["status"])), (200, "paid"), "{v}");
    }
    let (status, released) = webhook.await.expect("webhook leg");
    assert_eq!(status, 200, "{released}");
    assert_eq!(
        released["released"].as_array().map(Vec::len),
        Some(1),
        "{released}"
    );
    assert_eq!(released["deliveries"][0]["status"], 200, "{released}");
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = 'razorpay' AND event_type = $1",
            "payment.captured"
        )
        .await,
        1,
        "one capture at Razorpay"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    app.finish().await;
}

/// The reference checkout page may load Checkout.js (from the sandbox, which stands in for
/// checkout.razorpay.com) and the frame it opens, and nothing else from elsewhere; the frame
/// needs the account's key and an order of its own.
async fn the_checkout_page_opens_razorpays_checkout(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (_, rz_order) = rz_checkout(&app, "page@example.com", 1).await;
    let r = app
        .http
        .get(format!("{}/checkout", app.url))
        .send()
        .await
        .expect("page");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    let sandbox = app.sandbox.trim_end_matches('/');
    assert!(
        csp.contains(&format!("script-src 'self' {sandbox};"))
            && csp.contains(&format!("frame-src {sandbox} https://api.razorpay.com;"))
            && csp.contains("connect-src 'self';"),
        "{csp}"
    );
    let script = app
        .http
        .get(format!("{sandbox}/sandbox/razorpay/checkout.js"))
        .send()
        .await
        .expect("checkout.js");
    assert_eq!(script.status(), 200);
    assert!(
        script
            .text()
            .await
            .expect("text")
            .contains("window.Razorpay")
    );
    for (key, order, status) in [
        ("rzp_test_sandbox", rz_order.as_str(), 200),
        ("rzp_test_other", rz_order.as_str(), 400),
        ("rzp_test_sandbox", "order_unknown", 400),
    ] {
        let r = app
            .http
            .get(format!(
                "{sandbox}/sandbox/razorpay/checkout?key_id={key}&order_id={order}"
            ))
            .send()
            .await
            .expect("frame");
        assert_eq!(r.status(), status, "{key} {order}");
    }
    app.finish().await;
}

/// A shop whose Razorpay webhook is subscribed to `order.paid` only (no payment events) and
/// whose buyer closed the tab before the verify call: that one event fulfils the order, once.
async fn razorpay_order_paid_alone_fulfils(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 50_000, 5).await;
    let (id, rz_order) = rz_checkout(&app, "orderpaid@example.com", 2).await;
    let paid = rz_pay(&app, &rz_order, json!({"events": ["order.paid"]})).await;
    let sent: Vec<Value> = paid["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(sent.len(), 1, "{paid:#}");
    assert!(s(&sent[0]["body"]).contains("\"order.paid\""), "{paid:#}");
    assert_eq!(paid["deliveries"][0]["status"], 200, "{paid:#}");
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(
        app.provider_payment_id(&id).await.as_deref(),
        Some(s(&paid["razorpay_payment_id"]))
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    assert_eq!(app.stock("SEAT").await, (3, 0));
    app.finish().await;
}
