//! Whatever a provider signs is acknowledged and kept: random JSON, event-shaped bodies with
//! random types and random data, and bytes that are not JSON at all, each signed the way its
//! provider signs. Every one is answered 200 and ends applied, ignored or parked — none is
//! refused, none stays unapplied, and a genuine payment behind them all is fulfilled.
//! (Cases are drawn with proptest's strategies; a failure prints the body that failed.)

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

use crate::harness::{Backend, WEBHOOK_SECRET, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(any_signed_body_is_acknowledged_and_applied_or_parked);

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
