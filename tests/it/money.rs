//! Money as each provider counts it, for JPY, KRW, ISK, HUF, TWD, MGA, KWD, INR and USD at
//! each provider that takes them: the sandbox's record of what each provider was asked to
//! charge (its own digits: Stripe's ISK with two, MGA with none; PayPal's HUF, JPY and TWD
//! whole; Razorpay's ISO minor units), a payment that goes on to be fulfilled (the capture check reads it back), and
//! prices or checkouts a provider cannot take refused up front with the rule named.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    each_provider_is_asked_for_the_price_in_its_own_digits,
    a_price_or_checkout_a_provider_cannot_take_is_refused_up_front,
);

/// What the provider was asked to charge, as its API holds it.
#[derive(Debug, PartialEq)]
enum Asked {
    Units(i64),
    Decimal(String),
}

async fn put_price(app: &TestApp, sku: &str, currency: &str, price_minor: i64) -> (u16, Value) {
    app.admin(
        "PUT",
        &format!("/api/admin/skus/{sku}"),
        Some(json!({"name": sku, "price_minor": price_minor, "currency": currency, "stock": 10})),
    )
    .await
}

async fn sandbox_json(req: reqwest::RequestBuilder) -> Value {
    req.send()
        .await
        .expect("sandbox")
        .json()
        .await
        .expect("json")
}

/// The provider's own record of the checkout's amount.
async fn asked(app: &TestApp, provider: &str, checkout: &str) -> Asked {
    let sb = &app.sandbox;
    match provider {
        "stripe" => {
            let r = app
                .http
                .get(format!("{sb}/v1/checkout/sessions/{checkout}"))
                .bearer_auth("sk_test_sandbox");
            Asked::Units(
                sandbox_json(r).await["amount_total"]
                    .as_i64()
                    .expect("amount"),
            )
        }
        "razorpay" => {
            let r = app
                .http
                .get(format!("{sb}/v1/orders/{checkout}"))
                .basic_auth("rzp_test_sandbox", Some("rzp_secret_sandbox"));
            Asked::Units(sandbox_json(r).await["amount"].as_i64().expect("amount"))
        }
        _ => {
            let r = app
                .http
                .get(format!("{sb}/v2/checkout/orders/{checkout}"))
                .bearer_auth(app.paypal_token().await);
            let o = sandbox_json(r).await;
            Asked::Decimal(s(&o["purchase_units"][0]["amount"]["value"]).to_owned())
        }
    }
}

/// The buyer pays the checkout at the provider.
async fn pay(app: &TestApp, provider: &str, checkout: &str) {
    let path = match provider {
        "stripe" => format!("/sandbox/stripe/checkout/sessions/{checkout}/pay"),
        "razorpay" => format!("/sandbox/razorpay/orders/{checkout}/pay"),
        _ => format!("/sandbox/paypal/orders/{checkout}/approve"),
    };
    app.sandbox_post(&path, json!({})).await;
}

async fn each_provider_is_asked_for_the_price_in_its_own_digits(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let units = Asked::Units;
    let dec = |v: &str| Asked::Decimal(v.to_owned());
    // (provider, currency, price in ISO minor units, what the provider is asked for)
    let cases = [
        ("stripe", "USD", 1000, units(1000)),
        ("stripe", "JPY", 500, units(500)),
        ("stripe", "KRW", 5000, units(5000)),
        // 1,000 kr: Stripe writes ISK with two digits.
        ("stripe", "ISK", 1000, units(100_000)),
        // 1,000 Ft and NT$100: two digits at Stripe, as ISO counts them.
        ("stripe", "HUF", 100_000, units(100_000)),
        ("stripe", "TWD", 10_000, units(10_000)),
        // 5,000 Ar: ISO gives MGA two digits, Stripe none.
        ("stripe", "MGA", 500_000, units(5000)),
        ("stripe", "KWD", 10_990, units(10_990)),
        ("stripe", "INR", 50_000, units(50_000)),
        ("razorpay", "INR", 50_000, units(50_000)),
        ("razorpay", "USD", 1000, units(1000)),
        // Razorpay counts in ISO minor units, whatever the currency.
        ("razorpay", "JPY", 500, units(500)),
        ("razorpay", "KRW", 5000, units(5000)),
        ("razorpay", "ISK", 1000, units(1000)),
        ("razorpay", "HUF", 100_000, units(100_000)),
        ("razorpay", "TWD", 10_000, units(10_000)),
        ("razorpay", "MGA", 500_000, units(500_000)),
        ("razorpay", "KWD", 10_990, units(10_990)),
        ("paypal", "USD", 1000, dec("10.00")),
        ("paypal", "JPY", 500, dec("500")),
        ("paypal", "HUF", 100_000, dec("1000")),
        ("paypal", "TWD", 10_000, dec("100")),
        ("paypal", "INR", 50_000, dec("500.00")),
    ];
    for (i, (provider, currency, price, want)) in cases.into_iter().enumerate() {
        let sku = format!("P{i}");
        let (status, body) = put_price(&app, &sku, currency, price).await;
        assert_eq!(status, 200, "{currency} {price}: {body}");
        let order = app
            .create_order("money@example.com", json!([{"sku": sku, "qty": 1}]))
            .await;
        let id = s(&order["id"]).to_owned();
        let (status, co) = app.try_checkout_with(&id, provider).await;
        assert_eq!(status, 201, "{provider} {currency}: {co}");
        assert_eq!(co["amount_minor"], price, "{provider} {currency}: {co}");
        let checkout = s(&co["provider_order_id"]).to_owned();
        assert_eq!(
            asked(&app, provider, &checkout).await,
            want,
            "{provider} {currency} {price}"
        );
        pay(&app, provider, &checkout).await;
        let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
        assert_eq!(
            done["status"], "fulfilled",
            "{provider} {currency}: {done:#}"
        );
    }
    app.finish().await;
}

async fn a_price_or_checkout_a_provider_cannot_take_is_refused_up_front(backend: Backend) {
    let app = spawn(backend, &[]).await;
    // (currency, price, the provider whose rule refuses it)
    for (currency, price, rule) in [
        ("MGA", 500_050, "stripe cannot charge 5000.50 MGA"),
        ("HUF", 100_050, "paypal cannot charge 1000.50 HUF"),
        ("TWD", 10_050, "paypal cannot charge 100.50 TWD"),
        ("KWD", 10_991, "cannot charge 10.991 KWD"),
    ] {
        let (status, e) = put_price(&app, "BAD", currency, price).await;
        assert_eq!(
            (status, s(&e["error"]["field"])),
            (422, "price_minor"),
            "{currency} {price}: {e}"
        );
        assert!(
            s(&e["error"]["message"]).contains(rule),
            "{currency} {price}: {e}"
        );
    }
    let products: Value = app
        .http
        .get(format!("{}/api/products", app.url))
        .send()
        .await
        .expect("products")
        .json()
        .await
        .expect("json");
    assert_eq!(products["products"], json!([]), "nothing was stored");

    // Currencies PayPal does not take (KRW, ISK, MGA, KWD are not on its list): the
    // checkout is refused before PayPal is called, and the stock it held is back; another
    // provider takes it.
    for (sku, currency, price) in [
        ("WON", "KRW", 5000),
        ("KRONA", "ISK", 1000),
        ("ARIARY", "MGA", 500_000),
        ("DINAR", "KWD", 10_990),
    ] {
        let (status, body) = put_price(&app, sku, currency, price).await;
        assert_eq!(status, 200, "{body}");
        let order = app
            .create_order("won@example.com", json!([{"sku": sku, "qty": 2}]))
            .await;
        let id = s(&order["id"]).to_owned();
        let (status, e) = app.try_checkout_with(&id, "paypal").await;
        assert_eq!(
            (status, s(&e["error"]["code"])),
            (422, "not_chargeable"),
            "{currency}: {e}"
        );
        assert!(
            s(&e["error"]["message"]).contains(&format!("paypal does not take {currency}")),
            "{e}"
        );
        assert_eq!(app.stock(sku).await, (10, 0), "{currency}");
        let (status, co) = app.try_checkout_with(&id, "stripe").await;
        assert_eq!(status, 201, "{currency}: {co}");
    }

    // The sandbox holds each provider to its documented rule, whatever a client sends.
    let r = app
        .http
        .post(format!("{}/v1/checkout/sessions", app.sandbox))
        .bearer_auth("sk_test_sandbox")
        .form(&[
            ("mode", "payment"),
            ("success_url", "https://shop.example/ok"),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", "isk"),
            ("line_items[0][price_data][unit_amount]", "4010"),
            ("line_items[0][price_data][product_data][name]", "x"),
        ])
        .send()
        .await
        .expect("stripe");
    assert_eq!(r.status(), 400, "fractional krona");
    let r = app
        .http
        .post(format!("{}/v1/orders", app.sandbox))
        .basic_auth("rzp_test_sandbox", Some("rzp_secret_sandbox"))
        .json(&json!({"amount": 10_991, "currency": "KWD"}))
        .send()
        .await
        .expect("razorpay");
    assert_eq!(r.status(), 400, "a three-decimal amount ending in 1");
    let token = app.paypal_token().await;
    for (currency, value, issue) in [
        ("HUF", "1000.00", "DECIMAL_PRECISION"),
        ("USD", "10.001", "DECIMAL_PRECISION"),
        ("KRW", "5000", "CURRENCY_NOT_SUPPORTED"),
    ] {
        let r = app
            .http
            .post(format!("{}/v2/checkout/orders", app.sandbox))
            .bearer_auth(&token)
            .json(&json!({"intent": "CAPTURE", "purchase_units": [
                {"amount": {"currency_code": currency, "value": value}}
            ]}))
            .send()
            .await
            .expect("paypal");
        assert_eq!(r.status(), 422, "{currency} {value}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["details"][0]["issue"], issue, "{currency} {value}: {e}");
    }
    app.finish().await;
}
