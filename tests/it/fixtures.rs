//! Events shaped like the providers' documented examples (`tests/fixtures/<provider>/`,
//! every field the provider documents, nulls included), each for an order of ours: signed as
//! the provider signs, verified, stored, normalized and applied. None is refused or parked;
//! the ones that carry money move it (the order is fulfilled, a refund made at the provider
//! is booked); the ones we receive but do not act on (disputes) are kept and ignored.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, WEBHOOK_SECRET, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(
    stripe_events_as_documented_are_applied,
    razorpay_events_as_documented_are_applied,
    paypal_events_as_documented_are_applied,
);

/// The fixture's text with its placeholders filled in; it must be JSON then.
fn fixture(provider: &str, name: &str, fill: &[(&str, &str)]) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/{provider}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (k, v) in fill {
        text = text.replace(k, v);
    }
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::to_vec(&parsed).expect("bytes")
}

/// The event's id in the fixture (where each provider keeps it).
fn event_id(provider: &str, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("json");
    match provider {
        "razorpay" => String::new(),
        _ => s(&v["id"]).to_owned(),
    }
}

/// Posts a signed fixture; returns the outcome the engine stored for it.
async fn deliver(app: &TestApp, provider: &str, name: &str, body: Vec<u8>) -> String {
    let mut req = app
        .http
        .post(format!("{}/webhooks/{provider}", app.url))
        .body(body.clone());
    let id = match provider {
        "stripe" => {
            req = req.header("stripe-signature", signature(WEBHOOK_SECRET, &body, 0));
            event_id(provider, &body)
        }
        "razorpay" => {
            let id = format!("evt_fixture_{}", name.replace('.', "_"));
            req = req
                .header(
                    "x-razorpay-signature",
                    fulfilld::providers::razorpay::sign_webhook("rzp_whsec_sandbox", &body),
                )
                .header("x-razorpay-event-id", &id);
            id
        }
        _ => {
            let key = fulfilld::sandbox::paypal::signing_key().expect("sandbox key");
            let cert_url = format!("{}/v1/notifications/certs/CERT-sandbox", app.sandbox);
            for (k, v) in fulfilld::sandbox::paypal::signature_headers(
                key,
                "WH-SANDBOX-0000000000",
                &cert_url,
                &body,
            ) {
                req = req.header(k, v);
            }
            event_id(provider, &body)
        }
    };
    let r = req.send().await.expect("webhook");
    let status = r.status().as_u16();
    assert_eq!(
        status,
        200,
        "{provider} {name}: {}",
        r.text().await.unwrap_or_default()
    );
    let outcome = app.event_outcome(&id).await;
    assert!(
        !outcome.starts_with("not applied") && !outcome.starts_with("parked"),
        "{provider} {name} was not applied: {outcome}"
    );
    outcome
}

/// A refund made at the provider is booked once (its second event changes nothing); when
/// the provider then says it failed, the credit note stands against money that did not go
/// back, and the order goes to review.
async fn refunds_then_a_failure(
    app: &TestApp,
    provider: &str,
    order: &str,
    [made, again, failed]: [&str; 3],
    body: impl Fn(&str) -> Vec<u8>,
) {
    deliver(app, provider, made, body(made)).await;
    let o = app
        .wait_for(order, &["partially_refunded", "needs_review"])
        .await;
    assert_eq!(o["status"], "partially_refunded", "{o:#}");
    assert_eq!(o["refunds"][0]["amount_minor"], 400, "{o:#}");
    if again != made {
        deliver(app, provider, again, body(again)).await;
    }
    let o = app.order(order).await;
    assert_eq!(o["refunds"].as_array().map(Vec::len), Some(1), "{o:#}");
    let outcome = deliver(app, provider, failed, body(failed)).await;
    assert!(outcome.contains("order needs review"), "{outcome}");
    assert_eq!(app.order(order).await["status"], "needs_review");
}

async fn stripe_events_as_documented_are_applied(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (order, co) = app.seat_checkout("fixtures@example.com", 1, "stripe").await;
    let session = s(&co["provider_order_id"]).to_owned();
    let paid = app.pay(&session, json!({"webhook": "none"})).await;
    let pi = s(&paid["session"]["payment_intent"]).to_owned();
    let payment = s(&app.order(&order).await["payment"]["id"]).to_owned();
    let fill = [
        ("{{SESSION}}", session.as_str()),
        ("{{PAYMENT_INTENT}}", pi.as_str()),
        ("{{ORDER}}", order.as_str()),
        ("{{PAYMENT}}", payment.as_str()),
        ("{{AMOUNT}}", "1000"),
        ("{{REFUND_AMOUNT}}", "400"),
    ];
    let body = |name: &str| fixture("stripe", name, &fill);
    deliver(
        &app,
        "stripe",
        "checkout.session.completed",
        body("checkout.session.completed"),
    )
    .await;
    let o = app.wait_for(&order, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    for name in [
        "checkout.session.async_payment_succeeded",
        "charge.dispute.created",
    ] {
        deliver(&app, "stripe", name, body(name)).await;
    }
    // Events that contradict a captured payment are read back from Stripe, which says paid.
    for name in [
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    ] {
        let outcome = deliver(&app, "stripe", name, body(name)).await;
        assert!(outcome.starts_with("contradicts"), "{name}: {outcome}");
    }
    let o = app.wait_for(&order, &["fulfilled", "needs_review"]).await;
    assert_eq!(
        (&o["status"], &o["payment"]["status"]),
        (&json!("fulfilled"), &json!("paid")),
        "{o:#}"
    );
    refunds_then_a_failure(
        &app,
        "stripe",
        &order,
        ["refund.created", "refund.updated", "refund.failed"],
        |n| body(n),
    )
    .await;
    app.finish().await;
}

async fn razorpay_events_as_documented_are_applied(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (order, co) = app
        .seat_checkout("fixtures-rz@example.com", 1, "razorpay")
        .await;
    let rz_order = s(&co["provider_order_id"]).to_owned();
    let paid = app
        .sandbox_post(
            &format!("/sandbox/razorpay/orders/{rz_order}/pay"),
            json!({"webhook": "none"}),
        )
        .await;
    let payment_id = s(&paid["razorpay_payment_id"]).to_owned();
    let payment = s(&app.order(&order).await["payment"]["id"]).to_owned();
    let fill = [
        ("{{PAYMENT_ID}}", payment_id.as_str()),
        ("{{RZP_ORDER}}", rz_order.as_str()),
        ("{{CURRENCY}}", "USD"),
        ("{{ORDER}}", order.as_str()),
        ("{{PAYMENT}}", payment.as_str()),
        ("{{AMOUNT}}", "1000"),
        ("{{REFUND_AMOUNT}}", "400"),
    ];
    let body = |name: &str| fixture("razorpay", name, &fill);
    deliver(
        &app,
        "razorpay",
        "payment.authorized",
        body("payment.authorized"),
    )
    .await;
    let o = app.wait_for(&order, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    for name in [
        "payment.captured",
        "order.paid",
        "payment.failed",
        "payment.dispute.created",
    ] {
        deliver(&app, "razorpay", name, body(name)).await;
    }
    refunds_then_a_failure(
        &app,
        "razorpay",
        &order,
        ["refund.processed", "refund.processed", "refund.failed"],
        |n| body(n),
    )
    .await;
    app.finish().await;
}

async fn paypal_events_as_documented_are_applied(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (order, co) = app
        .seat_checkout("fixtures-pp@example.com", 1, "paypal")
        .await;
    let pp_order = s(&co["provider_order_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/paypal/orders/{pp_order}/approve"),
        json!({"webhook": "none"}),
    )
    .await;
    let payment = s(&app.order(&order).await["payment"]["id"]).to_owned();
    let mut fill = vec![
        ("{{PP_ORDER}}", pp_order.clone()),
        ("{{ORDER}}", order.clone()),
        ("{{PAYMENT}}", payment.clone()),
        ("{{AMOUNT_DECIMAL}}", "10.00".to_owned()),
        ("{{REFUND_DECIMAL}}", "4.00".to_owned()),
    ];
    let body = |fill: &[(&str, String)], name: &str| {
        let fill: Vec<(&str, &str)> = fill.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fixture("paypal", name, &fill)
    };
    deliver(
        &app,
        "paypal",
        "CHECKOUT.ORDER.APPROVED",
        body(&fill, "CHECKOUT.ORDER.APPROVED"),
    )
    .await;
    let o = app.wait_for(&order, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    let capture = app.provider_payment_id(&order).await.expect("the capture");
    fill.push(("{{CAPTURE}}", capture));
    for name in [
        "PAYMENT.CAPTURE.COMPLETED",
        "CHECKOUT.ORDER.COMPLETED",
        "PAYMENT.CAPTURE.PENDING",
        "CUSTOMER.DISPUTE.CREATED",
    ] {
        deliver(&app, "paypal", name, body(&fill, name)).await;
    }
    deliver(
        &app,
        "paypal",
        "PAYMENT.CAPTURE.REFUNDED",
        body(&fill, "PAYMENT.CAPTURE.REFUNDED"),
    )
    .await;
    let o = app
        .wait_for(&order, &["partially_refunded", "needs_review"])
        .await;
    assert_eq!(o["status"], "partially_refunded", "{o:#}");
    assert_eq!(o["refunds"][0]["amount_minor"], 400, "{o:#}");
    // Contradictions of a captured payment are read back from PayPal, which says completed.
    for name in [
        "PAYMENT.CAPTURE.DENIED",
        "PAYMENT.CAPTURE.DECLINED",
        "CHECKOUT.PAYMENT-APPROVAL.REVERSED",
        "CHECKOUT.ORDER.VOIDED",
        "PAYMENT.CAPTURE.REVERSED",
    ] {
        deliver(&app, "paypal", name, body(&fill, name)).await;
    }
    let o = app
        .wait_for(&order, &["partially_refunded", "refunded", "needs_review"])
        .await;
    assert_ne!(o["status"], "needs_review", "{o:#}");
    app.finish().await;
}
