//! Whatever a provider signs is acknowledged and kept: random JSON, event-shaped bodies with
//! random types and random data, and bytes that are not JSON at all, each signed the way its
//! provider signs. Every one is answered 200 and ends applied, ignored or parked — none is
//! refused, none stays unapplied, and a genuine payment behind them all is fulfilled.
//! The buyer's endpoints, likewise, answer any body, query and proof header with a 2xx or a
//! 4xx carrying an error code, never a 5xx.
//! (Cases are drawn with proptest's strategies; a failure prints the body that failed.)

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

use crate::harness::{Backend, WEBHOOK_SECRET, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(
    any_signed_body_is_acknowledged_and_applied_or_parked,
    no_buyer_request_earns_a_5xx
);

/// Bodies per provider.
const CASES: usize = 150;

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object with the fields a provider's event resource has, each holding anything.
fn resource(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec(json_value(), fields.len()).prop_map(move |values| {
        Value::Object(
            fields
                .iter()
                .map(|f| (f.to_string(), Value::Null))
                .zip(values)
                .map(|((k, _), v)| (k, v))
                .collect(),
        )
    })
}

/// A body for `provider`: random JSON, random bytes, or its event shape with known and
/// unknown types and random data.
fn body(provider: &'static str) -> BoxedStrategy<Vec<u8>> {
    let shaped: BoxedStrategy<Value> = match provider {
        "stripe" => (
            prop_oneof![
                Just("checkout.session.completed".to_owned()),
                Just("checkout.session.expired".to_owned()),
                Just("refund.created".to_owned()),
                Just("charge.dispute.created".to_owned()),
                "[a-z.]{1,30}",
            ],
            "\\PC{0,20}",
            resource(&[
                "id",
                "amount",
                "amount_total",
                "currency",
                "metadata",
                "payment_intent",
                "status",
                "payment_status",
                "client_reference_id",
            ]),
        )
            .prop_map(|(kind, id, object)| {
                json!({"id": id, "object": "event", "type": kind, "created": 1_800_000_000,
                       "data": {"object": object}})
            })
            .boxed(),
        "razorpay" => (
            prop_oneof![
                Just("payment.captured".to_owned()),
                Just("payment.failed".to_owned()),
                Just("order.paid".to_owned()),
                Just("refund.processed".to_owned()),
                "[a-z.]{1,30}",
            ],
            resource(&["id", "amount", "currency", "status", "order_id", "notes"]),
        )
            .prop_map(|(kind, entity)| {
                json!({"entity": "event", "event": kind, "contains": ["payment"],
                       "payload": {"payment": {"entity": entity}}, "created_at": 1_800_000_000})
            })
            .boxed(),
        _ => (
            prop_oneof![
                Just("CHECKOUT.ORDER.APPROVED".to_owned()),
                Just("PAYMENT.CAPTURE.COMPLETED".to_owned()),
                Just("PAYMENT.CAPTURE.REFUNDED".to_owned()),
                Just("CUSTOMER.DISPUTE.CREATED".to_owned()),
                "[A-Z.]{1,30}",
            ],
            "\\PC{0,20}",
            resource(&[
                "id",
                "status",
                "amount",
                "custom_id",
                "purchase_units",
                "links",
                "supplementary_data",
            ]),
        )
            .prop_map(|(kind, id, res)| {
                json!({"id": id, "event_type": kind, "resource_type": "x", "resource": res,
                       "create_time": "2026-12-07T00:00:00Z"})
            })
            .boxed(),
    };
    prop_oneof![
        4 => shaped.prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
    .boxed()
}

async fn any_signed_body_is_acknowledged_and_applied_or_parked(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let key = fulfilld::sandbox::paypal::signing_key().expect("sandbox key");
    let cert_url = format!("{}/v1/notifications/certs/CERT-sandbox", app.sandbox);
    let mut runner = TestRunner::new(Config::default());
    for provider in ["stripe", "razorpay", "paypal"] {
        let strategy = body(provider);
        for case in 0..CASES {
            let body = strategy.new_tree(&mut runner).expect("a case").current();
            let mut req = app
                .http
                .post(format!("{}/webhooks/{provider}", app.url))
                .body(body.clone());
            match provider {
                "stripe" => {
                    req = req.header("stripe-signature", signature(WEBHOOK_SECRET, &body, 0));
                }
                "razorpay" => {
                    req = req
                        .header(
                            "x-razorpay-signature",
                            fulfilld::providers::razorpay::sign_webhook("rzp_whsec_sandbox", &body),
                        )
                        .header("x-razorpay-event-id", format!("evt_fuzz_{case}"));
                }
                _ => {
                    for (k, v) in fulfilld::sandbox::paypal::signature_headers(
                        key,
                        "WH-SANDBOX-0000000000",
                        &cert_url,
                        &body,
                    ) {
                        req = req.header(k, v);
                    }
                }
            }
            let r = req.send().await.expect("webhook");
            let status = r.status().as_u16();
            assert_eq!(
                status,
                200,
                "{provider} case {case}: {:?} answered {status}: {}",
                String::from_utf8_lossy(&body),
                r.text().await.unwrap_or_default()
            );
        }
    }
    app.applied().await;
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
        .fetch_one(&app.store.pool)
        .await
        .expect("count");
    assert!(
        kept > CASES as i64,
        "the bodies were kept (some share an event id): {kept}"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE outcome = $1",
            "received"
        )
        .await,
        0,
        "every kept event is applied, ignored or parked"
    );
    // A genuine payment behind all of them.
    let (id, co) = app
        .seat_checkout("behind-fuzz@example.com", 1, "stripe")
        .await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    app.finish().await;
}

/// Requests per buyer endpoint.
const BUYER_CASES: usize = 60;

/// A JSON body shaped like the endpoint's, with fields of any type, or any JSON, or bytes.
fn buyer_body(fields: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => resource(fields).prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => prop::collection::vec(any::<u8>(), 0..100),
    ]
    .boxed()
}

/// A query string: parameters a proof uses, and others, with any text (encoded or not).
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("provider".to_owned()),
        Just("session_id".to_owned()),
        Just("orderID".to_owned()),
        Just("razorpay_signature".to_owned()),
        "[a-z%&=+]{0,8}",
    ];
    let value = prop_oneof![
        Just("stripe".to_owned()),
        Just("paypal".to_owned()),
        Just("razorpay".to_owned()),
        "cs_[a-zA-Z0-9]{0,20}",
        "[ -~]{0,40}",
        "(%[0-9a-fA-F]{2}){0,8}",
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|kv| {
        kv.iter()
            .map(|(k, v)| format!("{k}={}", v.replace(['#', ' '], "+")))
            .collect::<Vec<_>>()
            .join("&")
    })
}

async fn no_buyer_request_earns_a_5xx(backend: Backend) {
    let app = spawn(backend, &[("FULFILLD__HTTP__RATE_LIMIT_PER_MINUTE", "0")]).await;
    app.put_sku("SEAT", 1000, 500).await;
    let (order, _) = app.seat_checkout("fuzzed@example.com", 1, "stripe").await;
    let token = app.buyer_token(&order);
    let mut runner = TestRunner::new(Config::default());
    let posts: [(&str, &'static [&'static str]); 6] = [
        ("/api/orders", &["customer_email", "items", "sku", "qty"]),
        ("/api/payments/create-order", &["order_id", "provider"]),
        (
            "/api/payments/verify",
            &["order_id", "provider", "payload", "session_id"],
        ),
        (
            "/api/entitlements/activate",
            &["order_id", "buyer_token", "provider", "payload", "orderID"],
        ),
        ("/api/entitlements/sign-in", &["email"]),
        ("/api/entitlements/sign-in/confirm", &["token"]),
    ];
    let header = prop_oneof![
        Just(token.clone()),
        Just(format!("{token}x")),
        "[ -~]{0,60}",
    ];
    let id = prop_oneof![
        Just(order.clone()),
        Just("ord_00000000000000000000000000".to_owned()),
        "[a-zA-Z0-9_.%-]{1,40}",
    ];
    let judge = |what: String, status: u16, text: String| {
        assert!(status < 500, "{what} answered {status}: {text}");
        if status >= 400 && status != 404 && status != 405 {
            let e: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(
                e["error"]["code"].is_string(),
                "{what} answered {status}: {text}"
            );
        }
    };
    for case in 0..BUYER_CASES {
        for (path, fields) in posts {
            let body = buyer_body(fields)
                .new_tree(&mut runner)
                .expect("a case")
                .current();
            let mut req = app
                .http
                .post(format!("{}{path}", app.url))
                .header("content-type", "application/json")
                .body(body.clone());
            if case % 2 == 0 {
                let h = header.new_tree(&mut runner).expect("a header").current();
                req = req.header("x-buyer-token", h);
            }
            let r = req.send().await.expect("post");
            let status = r.status().as_u16();
            let what = format!("POST {path} {:?}", String::from_utf8_lossy(&body));
            judge(what, status, r.text().await.unwrap_or_default());
        }
        let id = id.new_tree(&mut runner).expect("an id").current();
        let q = query().new_tree(&mut runner).expect("a query").current();
        for path in [
            format!("/api/orders/{id}?{q}"),
            format!("/api/orders/{id}/documents/inv_{case}?{q}"),
        ] {
            let mut req = app.http.get(format!("{}{path}", app.url));
            if case % 3 == 0 {
                let h = header.new_tree(&mut runner).expect("a header").current();
                req = req.header("x-buyer-token", h);
            }
            let r = req.send().await.expect("get");
            let status = r.status().as_u16();
            judge(
                format!("GET {path}"),
                status,
                r.text().await.unwrap_or_default(),
            );
        }
    }
    // The order was not disturbed by any of it.
    assert_eq!(app.order(&order).await["status"], "pending_payment");
    app.finish().await;
}
