//! `Provider::recent_payments`, what reconciliation compares with the store: every
//! provider lists its recent payments through its own API (paged), read-only, with the
//! same meaning `payment_state` gives them.

use serde_json::json;

use crate::harness::{Backend, TestApp, s, spawn};
use fulfilld::providers::{PaymentChange, Providers, RecentPayment};

/// An order of one seat with an open checkout through `provider`: (order id, our payment
/// id, the provider's checkout id).
async fn open_checkout(app: &TestApp, provider: &str, email: &str) -> (String, String, String) {
    let (id, co) = app.seat_checkout(email, 1, provider).await;
    let payment: String = sqlx::query_scalar("SELECT id FROM payments WHERE order_id = $1")
        .bind(&id)
        .fetch_one(&app.store.pool)
        .await
        .expect("payment");
    (id, payment, s(&co["provider_order_id"]).to_owned())
}

fn find(list: &[RecentPayment], pred: impl Fn(&RecentPayment) -> bool) -> &RecentPayment {
    list.iter().find(|p| pred(p)).expect("listed")
}

#[tokio::test]
async fn every_provider_lists_its_recent_payments() {
    let app = spawn(Backend::Sqlite, &[]).await;
    app.put_sku("SEAT", 50_000, 50).await;
    let since = fulfilld::clock::now_ms() / 1000 - 60;
    let providers = Providers::from_config(&app.config);

    // Stripe: one paid, one expired, and enough other sessions to need three pages.
    let (paid_order, paid_ref, paid_session) = open_checkout(&app, "stripe", "a@example.com").await;
    app.pay(&paid_session, json!({})).await;
    app.wait_for(&paid_order, &["fulfilled"]).await;
    let (_, _, expired_session) = open_checkout(&app, "stripe", "b@example.com").await;
    app.expire_session(&expired_session).await;
    for i in 0..150 {
        let r = app
            .http
            .post(format!("{}/v1/checkout/sessions", app.sandbox))
            .bearer_auth("sk_test_sandbox")
            .form(&[
                ("mode", "payment"),
                ("success_url", "https://shop.example/ok"),
                ("line_items[0][quantity]", "1"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "100"),
                (
                    "line_items[0][price_data][product_data][name]",
                    &format!("Extra {i}"),
                ),
            ])
            .send()
            .await
            .expect("create session");
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    let stripe = providers
        .get("provider", "stripe")
        .expect("stripe")
        .recent_payments(since)
        .await
        .expect("list");
    assert_eq!(stripe.len(), 152, "every session, across pages");
    let mut ids: Vec<_> = stripe
        .iter()
        .filter_map(|p| p.provider_order_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 152, "no session twice");
    let paid = find(&stripe, |p| {
        p.provider_order_id.as_deref() == Some(paid_session.as_str())
    });
    assert!(
        paid.state.paid && paid.state.amount_minor == 50_000,
        "{paid:?}"
    );
    assert_eq!(paid.payment_ref.as_deref(), Some(paid_ref.as_str()));
    assert!(matches!(paid.state.change, PaymentChange::Paid { .. }));
    let expired = find(&stripe, |p| {
        p.provider_order_id.as_deref() == Some(expired_session.as_str())
    });
    assert_eq!(expired.state.change, PaymentChange::Expired);

    // Razorpay: one captured, one failed.
    let (rz_paid_order, _, rz_paid) = open_checkout(&app, "razorpay", "c@example.com").await;
    app.sandbox_post(
        &format!("/sandbox/razorpay/orders/{rz_paid}/pay"),
        json!({}),
    )
    .await;
    app.wait_for(&rz_paid_order, &["fulfilled"]).await;
    let (_, _, rz_failed) = open_checkout(&app, "razorpay", "d@example.com").await;
    app.sandbox_post(
        &format!("/sandbox/razorpay/orders/{rz_failed}/pay"),
        json!({"outcome": "failed"}),
    )
    .await;
    let razorpay = providers
        .get("provider", "razorpay")
        .expect("razorpay")
        .recent_payments(since)
        .await
        .expect("list");
    assert_eq!(razorpay.len(), 2, "{razorpay:?}");
    let p = find(&razorpay, |p| {
        p.provider_order_id.as_deref() == Some(rz_paid.as_str())
    });
    assert!(p.state.paid && p.state.amount_minor == 50_000, "{p:?}");
    let f = find(&razorpay, |p| {
        p.provider_order_id.as_deref() == Some(rz_failed.as_str())
    });
    // A failed attempt: the Razorpay order stays payable.
    assert_eq!(f.state.change, PaymentChange::AttemptFailed);

    // PayPal: the captured order, named by our payment id (its custom_id).
    let (pp_order, pp_ref, pp) = open_checkout(&app, "paypal", "e@example.com").await;
    app.sandbox_post(&format!("/sandbox/paypal/orders/{pp}/approve"), json!({}))
        .await;
    app.wait_for(&pp_order, &["fulfilled"]).await;
    let paypal = providers
        .get("provider", "paypal")
        .expect("paypal")
        .recent_payments(since)
        .await
        .expect("list");
    assert_eq!(paypal.len(), 1, "{paypal:?}");
    assert_eq!(paypal[0].payment_ref.as_deref(), Some(pp_ref.as_str()));
    assert!(
        paypal[0].state.paid && paypal[0].state.amount_minor == 50_000,
        "{paypal:?}"
    );
    assert!(paypal[0].created_s >= since, "{paypal:?}");
    app.finish().await;
}

/// PayPal's event list is paged, and its `next` links name another of its hosts than the one
/// called (the sandbox: the other loopback name): the backfill follows every page there, and
/// finds with one event a page exactly what one page of 300 holds.
#[tokio::test]
async fn paypal_backfill_follows_next_links_to_another_host() {
    let app = spawn(Backend::Sqlite, &[]).await;
    app.put_sku("SEAT", 50_000, 50).await;
    let since = fulfilld::clock::now_ms() / 1000 - 60;
    let providers = Providers::from_config(&app.config);
    for i in 0..3 {
        let (order, _, pp) = open_checkout(&app, "paypal", &format!("p{i}@example.com")).await;
        app.sandbox_post(&format!("/sandbox/paypal/orders/{pp}/approve"), json!({}))
            .await;
        app.wait_for(&order, &["fulfilled"]).await;
    }
    let paypal = providers.get("provider", "paypal").expect("paypal");
    let ids = |events: Vec<(fulfilld::providers::ProviderEvent, Vec<u8>)>| {
        let mut ids: Vec<String> = events.into_iter().map(|(e, _)| e.event_id).collect();
        ids.sort();
        ids
    };
    let one_page = ids(paypal.missed_events(since).await.expect("list"));
    assert!(
        one_page.len() >= 6,
        "approved and completed, thrice: {one_page:?}"
    );
    // Check the premise: the sandbox links page 2 on the other host.
    app.sandbox_post("/sandbox/paypal/events/paging", json!({"page_size": 1}))
        .await;
    let first: serde_json::Value = app
        .http
        .get(format!("{}/v1/notifications/webhooks-events", app.sandbox))
        .bearer_auth(app.paypal_token().await)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let next = s(&first["links"][0]["href"]);
    assert!(
        next.starts_with("http://localhost:") && app.sandbox.starts_with("http://127.0.0.1:"),
        "{next} against {}",
        app.sandbox
    );
    let paged = ids(paypal.missed_events(since).await.expect("list"));
    assert_eq!(paged, one_page);
    app.finish().await;
}
