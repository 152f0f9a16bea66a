//! What anyone on the internet may send: CORS only for the configured origins, a per-client
//! limit on the public POST endpoints, and a budget for webhooks that fail verification,
//! which only ever gates fetching a certificate the sender names — a provider's signed
//! webhooks always get through.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::harness::{Backend, TestApp, WEBHOOK_SECRET, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(
    cors_answers_only_configured_origins,
    public_posts_are_limited_per_client_while_webhooks_flow,
    forged_webhooks_never_block_a_verified_one,
    certificate_fetches_spend_the_forged_webhook_budget,
);

fn allow_origin(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap_or("").to_owned())
}

async fn cors_answers_only_configured_origins(backend: Backend) {
    let app = spawn(
        backend,
        &[(
            "FULFILLD__HTTP__CORS_ORIGINS",
            "https://shop.example,https://m.shop.example",
        )],
    )
    .await;
    for (origin, allowed) in [
        ("https://shop.example", true),
        ("https://m.shop.example", true),
        ("https://evil.example", false),
    ] {
        let r = app
            .http
            .request(reqwest::Method::OPTIONS, format!("{}/api/orders", app.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,idempotency-key",
            )
            .send()
            .await
            .expect("preflight");
        assert_eq!(
            allow_origin(&r).as_deref(),
            allowed.then_some(origin),
            "preflight from {origin}"
        );
        // The buyer's token goes with opening a checkout from the shop's own origin.
        let r = app
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/payments/create-order", app.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-buyer-token",
            )
            .send()
            .await
            .expect("preflight");
        let allowed_headers = r
            .headers()
            .get("access-control-allow-headers")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            allowed_headers.contains("x-buyer-token"),
            "{origin}: {allowed_headers:?}"
        );
        assert_eq!(
            allow_origin(&r).as_deref(),
            allowed.then_some(origin),
            "preflight from {origin}"
        );
        let r = app
            .http
            .post(format!("{}/api/orders", app.url))
            .header("origin", origin)
            .json(&json!({"customer_email": "c@example.com", "items": []}))
            .send()
            .await
            .expect("post");
        assert_eq!(
            allow_origin(&r).as_deref(),
            allowed.then_some(origin),
            "POST from {origin}"
        );
    }
    app.finish().await;
}

async fn webhook_from(app: &TestApp, ip: &str, body: Vec<u8>, secret: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .header("x-forwarded-for", ip)
        .header("stripe-signature", signature(secret, &body, 0))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("webhook");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Client A sends 12 orders at once against a burst of 5 (refilled once a minute, so the
/// count is exact), each with a different spoofed address left of its own in
/// X-Forwarded-For; at the same moment signed webhooks come from the same address. Five
/// orders are taken, seven get 429 with Retry-After, every webhook is taken, and another
/// client is not affected.
async fn public_posts_are_limited_per_client_while_webhooks_flow(backend: Backend) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__HTTP__CLIENT_IP_HEADER", "x-forwarded-for"),
            ("FULFILLD__API__RATE_LIMIT_PER_MINUTE", "1"),
            ("FULFILLD__API__RATE_LIMIT_BURST", "5"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 100).await;
    // Setup: six paid checkouts whose webhooks the sandbox held back, each made from an
    // address of its own (so no setup spends client A's budget).
    let events = held_events(&app, 6).await;
    let app = Arc::new(app);
    let barrier = Arc::new(Barrier::new(12 + events.len()));
    let mut orders = Vec::new();
    for i in 0..12 {
        let (app, barrier) = (app.clone(), barrier.clone());
        orders.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = app
                .http
                .post(format!("{}/api/orders", app.url))
                // Each names itself another client on the left; the proxy (the peer,
                // trusted as one hop) appended the real address on the right.
                .header("x-forwarded-for", format!("198.51.{i}.1, 203.0.113.5"))
                .json(&json!({"customer_email": format!("a{i}@example.com"), "items": [{"sku": "SEAT", "qty": 1}]}))
                .send()
                .await
                .expect("order");
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, retry, body)
        }));
    }
    let mut hooks = Vec::new();
    for body in events {
        let (app, barrier) = (app.clone(), barrier.clone());
        hooks.push(tokio::spawn(async move {
            barrier.wait().await;
            webhook_from(&app, "203.0.113.5", body, WEBHOOK_SECRET).await
        }));
    }
    let mut taken = 0;
    for o in orders {
        let (status, retry, body) = o.await.expect("task");
        match status {
            201 => taken += 1,
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
            }
            other => panic!("order: {other} {body}"),
        }
    }
    assert_eq!(taken, 5, "the burst, exactly");
    for h in hooks {
        let (status, body) = h.await.expect("task");
        assert_eq!(status, 200, "a signed webhook is never limited: {body}");
    }
    let r = app
        .http
        .post(format!("{}/api/orders", app.url))
        .header("x-forwarded-for", "198.51.100.20")
        .json(&json!({"customer_email": "b@example.com", "items": [{"sku": "SEAT", "qty": 1}]}))
        .send()
        .await
        .expect("order");
    assert_eq!(r.status(), 201, "another client has its own budget");
    Arc::try_unwrap(app).ok().expect("one owner").finish().await;
}

/// `n` paid checkouts whose webhooks the sandbox held back, the i-th made from the address
/// 192.0.2.i: the events' bodies, to be signed and delivered by the test.
async fn held_events(app: &TestApp, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let ip = format!("192.0.2.{}", i + 1);
        let r = app
            .http
            .post(format!("{}/api/orders", app.url))
            .header("x-forwarded-for", &ip)
            .json(&json!({"customer_email": "held@example.com", "items": [{"sku": "SEAT", "qty": 1}]}))
            .send()
            .await
            .expect("order");
        assert_eq!(r.status(), 201);
        let o: Value = r.json().await.expect("json");
        let r = app
            .http
            .post(format!("{}/api/payments/create-order", app.url))
            .header("x-forwarded-for", &ip)
            .header("x-buyer-token", s(&o["buyer_token"]))
            .json(&json!({"order_id": o["id"], "provider": "stripe"}))
            .send()
            .await
            .expect("checkout");
        assert_eq!(r.status(), 201);
        let co: Value = r.json().await.expect("json");
        let paid = app
            .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
            .await;
        out.push(serde_json::to_vec(&paid["event"]).expect("event"));
    }
    out
}

/// Address F sends 10 forged webhooks against a budget of 3 failures a minute, while
/// address P delivers signed ones at the same moment: each of F's is checked and refused
/// (400) — an HMAC costs next to nothing — and every one of P's is taken. Then a good
/// webhook from F is taken too: a spent budget never turns a verified webhook away,
/// whoever else claims its address.
async fn forged_webhooks_never_block_a_verified_one(backend: Backend) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__HTTP__CLIENT_IP_HEADER", "x-forwarded-for"),
            ("FULFILLD__API__FORGED_WEBHOOKS_PER_MINUTE", "3"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 100).await;
    let mut events = held_events(&app, 7).await;
    let last = events.pop().expect("one kept back");
    let app = Arc::new(app);
    let barrier = Arc::new(Barrier::new(1 + events.len()));
    let forger = {
        let (app, barrier, body) = (app.clone(), barrier.clone(), last.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses
                    .push(webhook_from(&app, "203.0.113.66", body.clone(), "whsec_forged").await);
            }
            statuses
        })
    };
    let mut provider = Vec::new();
    for body in events {
        let (app, barrier) = (app.clone(), barrier.clone());
        provider.push(tokio::spawn(async move {
            barrier.wait().await;
            webhook_from(&app, "198.51.100.7", body, WEBHOOK_SECRET).await
        }));
    }
    let statuses = forger.await.expect("task");
    let codes: Vec<u16> = statuses.iter().map(|(st, _)| *st).collect();
    assert_eq!(codes, [400; 10], "{statuses:?}");
    assert_eq!(statuses[9].1["error"]["code"], "invalid_signature");
    for p in provider {
        let (status, body) = p.await.expect("task");
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = webhook_from(&app, "203.0.113.66", last, WEBHOOK_SECRET).await;
    assert_eq!(
        status, 200,
        "the forger's address, a genuine webhook: {body}"
    );
    let metrics = crate::observability::scrape(&app).await;
    assert!(
        metrics.contains(
            r#"fulfilld_webhooks_rejected_total{provider="stripe",reason="invalid_signature"} 10"#
        ),
        "{metrics}"
    );
    Arc::try_unwrap(app).ok().expect("one owner").finish().await;
}

/// Verification that would fetch what the sender names (a PayPal certificate URL, each one
/// new) is paid for from the sender's forged-webhook budget: with a budget of 3, the
/// fourth such webhook is turned away (429) before anything is fetched, while another
/// address still gets its fetch.
async fn certificate_fetches_spend_the_forged_webhook_budget(backend: Backend) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__HTTP__CLIENT_IP_HEADER", "x-forwarded-for"),
            ("FULFILLD__API__FORGED_WEBHOOKS_PER_MINUTE", "3"),
            ("FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE", ""),
        ],
    )
    .await;
    let key = fulfilld::sandbox::paypal::signing_key().expect("sandbox key");
    let body = br#"{"id":"WH-FETCH","event_type":"CHECKOUT.ORDER.APPROVED","resource":{}}"#;
    let send = |ip: &'static str, n: usize| {
        let app = &app;
        async move {
            // A new certificate on PayPal's host each time: nothing cached to answer from.
            let cert_url = format!(
                "https://api.paypal.com/v1/notifications/certs/CERT-{}-{n}",
                ip.replace('.', "-")
            );
            let mut req = app
                .http
                .post(format!("{}/webhooks/paypal", app.url))
                .header("x-forwarded-for", ip)
                .header("content-type", "application/json")
                .body(body.to_vec());
            for (k, v) in fulfilld::sandbox::paypal::signature_headers(
                key,
                "WH-SANDBOX-0000000000",
                &cert_url,
                body,
            ) {
                req = req.header(k, v);
            }
            let r = req.send().await.expect("webhook");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut answers = Vec::new();
    for n in 0..4 {
        answers.push(send("203.0.113.77", n).await);
    }
    let codes: Vec<u16> = answers.iter().map(|(st, _)| *st).collect();
    // The fetches themselves fail here (no PayPal to reach): 503, so PayPal would retry.
    assert_eq!(codes, [503, 503, 503, 429], "{answers:?}");
    assert_eq!(answers[0].1["error"]["code"], "verification_unavailable");
    assert_eq!(answers[3].1["error"]["code"], "rate_limited");
    let (status, other) = send("198.51.100.8", 0).await;
    assert_eq!(status, 503, "another address has its own budget: {other}");
    app.finish().await;
}
