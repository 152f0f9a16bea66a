//! What the people who run the engine watch: `/metrics` counts what really happened, as
//! the store recorded it; the logs are JSON lines on request, carry each request's id, and
//! never hold a configured secret.

use serde_json::json;

use crate::admin::fulfilled_and_dead;
use crate::harness::{
    ADMIN_TOKEN, Backend, TestApp, WEBHOOK_SECRET, s, signature, spawn, spawn_process,
};
use crate::on_both_stores;

on_both_stores!(
    metrics_count_what_happened,
    logs_hold_no_secret,
    a_request_id_follows_into_its_steps,
    metrics_can_need_a_token,
);

/// With `metrics.token` set, a scrape needs it as a bearer token; nothing else opens it.
async fn metrics_can_need_a_token(backend: Backend) {
    let token = "metrics-token-0123456789abcdef";
    let app = spawn(backend, &[("FULFILLD__METRICS__TOKEN", token)]).await;
    let get = |auth: Option<&str>| {
        let mut req = app.http.get(format!("{}/metrics", app.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer "),
        Some(token),
        Some(&format!("Basic {token}")),
        Some(&format!("Bearer {}", crate::harness::ADMIN_TOKEN)),
    ] {
        let r = get(auth).await.expect("metrics");
        assert_eq!(r.status(), 401, "{auth:?}");
    }
    let r = get(Some(&format!("Bearer {token}")))
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    assert!(text.contains("fulfilld_"), "{text}");
    app.finish().await;
}

/// The value of the sample `series` (name and labels, exactly as written) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// `/metrics` of `app`, checked to be OpenMetrics text.
pub async fn scrape(app: &TestApp) -> String {
    let r = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status(), 200);
    let kind = r.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    r.text().await.expect("text")
}

async fn metrics_count_what_happened(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let (_fine, _dead) = fulfilled_and_dead(&app).await;
    // One event again (a provider's retry), and two refused: a forged signature, and a
    // body that is not JSON.
    let body: Vec<u8> =
        sqlx::query_scalar("SELECT raw_body FROM webhook_events ORDER BY id LIMIT 1")
            .fetch_one(&app.store.pool)
            .await
            .expect("a stored event");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["duplicate"],
        json!(true)
    );
    let r = app
        .post_webhook(body, Some(signature("whsec_forged", b"x", 0)))
        .await;
    assert_eq!(r.status(), 400);
    // Signed but unreadable: kept (200), not applied, with the reason as its outcome.
    let r = app
        .post_webhook(
            b"not json".to_vec(),
            Some(signature(WEBHOOK_SECRET, b"not json", 0)),
        )
        .await;
    assert_eq!(r.status(), 200);
    let outcome = app.unreadable_outcome("stripe").await;
    assert!(outcome.starts_with("not applied: "), "{outcome}");

    let text = scrape(&app).await;
    let stored = app
        .count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "stripe",
        )
        .await as f64;
    let stripe = r#"{provider="stripe"}"#;
    assert_eq!(
        sample(&text, &format!("fulfilld_webhooks_accepted_total{stripe}")),
        stored
    );
    assert_eq!(
        sample(&text, &format!("fulfilld_webhooks_duplicate_total{stripe}")),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"fulfilld_webhooks_rejected_total{provider="stripe",reason="invalid_signature"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("fulfilld_webhooks_received_total{stripe}")),
        stored + 2.0
    );
    // Every stored event's request was timed under its route template.
    let route = r#"{route="/webhooks/{provider}",method="POST",status="200"}"#;
    assert_eq!(
        sample(
            &text,
            &format!("fulfilld_http_request_duration_seconds_count{route}")
        ),
        stored + 1.0
    );
    // The steps: each of the fulfilled order's ran once and was done; the other order's
    // capture check went dead at once.
    for kind in jobs::StepKind::FULFILMENT {
        let series = format!(
            r#"fulfilld_step_duration_seconds_count{{kind="{}",outcome="done"}}"#,
            kind.as_str()
        );
        assert_eq!(sample(&text, &series), 1.0, "{series}");
    }
    assert_eq!(
        sample(
            &text,
            r#"fulfilld_step_duration_seconds_count{kind="confirm_capture",outcome="dead"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "fulfilld_capture_to_fulfilled_seconds_count"),
        1.0
    );
    assert_eq!(sample(&text, "fulfilld_dead_letters"), 1.0);
    assert_eq!(
        sample(
            &text,
            r#"fulfilld_steps{kind="confirm_capture",state="dead"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"fulfilld_steps{kind="deduct_stock",state="waiting"}"#
        ),
        1.0
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    app.finish().await;
}

/// A `serve` process with JSON logs and every provider's secrets set, through orders on
/// all three providers, a dead step, forged and good webhooks and admin calls: no log line
/// holds a secret, every line is a JSON object, and a request's lines carry its id.
async fn logs_hold_no_secret(backend: Backend) {
    let secrets = [
        (
            "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY",
            "sk_test_never_logged_4f1",
        ),
        (
            "FULFILLD__PROVIDERS__RAZORPAY__KEY_SECRET",
            "rzp_never_logged_9c2",
        ),
        (
            "FULFILLD__PROVIDERS__RAZORPAY__WEBHOOK_SECRET",
            "rzp_wh_never_logged_7d3",
        ),
        (
            "FULFILLD__PROVIDERS__PAYPAL__CLIENT_SECRET",
            "pp_never_logged_2b8",
        ),
        ("FULFILLD__METRICS__TOKEN", "metrics_never_logged_5e1"),
    ];
    let mut extra = vec![("FULFILLD__LOG__FORMAT", "json")];
    extra.extend(secrets);
    let app = spawn_process(backend, &extra).await;
    let (fine, _dead) = fulfilled_and_dead(&app).await;
    for provider in ["razorpay", "paypal"] {
        let order = app
            .create_order("other@example.com", json!([{"sku": "SEAT", "qty": 1}]))
            .await;
        let (status, body) = app.try_checkout_with(s(&order["id"]), provider).await;
        assert_eq!(status, 201, "{provider}: {body}");
    }
    let body =
        br#"{"id":"evt_x","type":"checkout.session.completed","data":{"object":{}}}"#.to_vec();
    let forged = app
        .post_webhook(body.clone(), Some(signature("whsec_forged", &body, 0)))
        .await;
    assert_eq!(forged.status(), 400);
    let r = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .header("x-request-id", "req-from-the-provider-1")
        .header("stripe-signature", signature(WEBHOOK_SECRET, &body, 0))
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.headers()["x-request-id"], "req-from-the-provider-1");
    let (status, _) = app
        .admin("GET", &format!("/api/admin/orders/{fine}"), None)
        .await;
    assert_eq!(status, 200);
    let r = app
        .http
        .get(format!("{}/api/admin/queues", app.url))
        .bearer_auth("a-wrong-token")
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 401);
    // A request without an id gets one.
    let r = app
        .http
        .get(format!("{}/api/orders/{fine}", app.url))
        .send()
        .await
        .expect("order");
    let given = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    assert!(given.starts_with("req_"), "{given}");

    let log = app.engine_log();
    assert!(
        log.lines().count() > 20,
        "too few log lines to mean anything:\n{log}"
    );
    for (key, secret) in secrets.iter().copied().chain([
        ("webhook secret", WEBHOOK_SECRET),
        ("admin token", ADMIN_TOKEN),
    ]) {
        assert!(!log.contains(secret), "{key} in the log:\n{log}");
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_request = |id: &str| {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .count()
    };
    assert!(of_request("req-from-the-provider-1") >= 1, "{log}");
    app.finish().await;
}

/// A webhook's request id is stored with its event and on every step of the pipeline it
/// starts, and each step's log lines carry it; so does a capture by the browser's verify
/// call, and the buyer's refund notice after an admin's refund.
async fn a_request_id_follows_into_its_steps(backend: Backend) {
    let app = spawn_process(backend, &[("FULFILLD__LOG__FORMAT", "json")]).await;
    app.put_sku("SEAT", 5000, 10).await;
    // Paid, its webhook held back and then posted by us with a request id of our own.
    let (by_webhook, co) = app.seat_checkout("trace@example.com", 1, "stripe").await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
        .await;
    let body = serde_json::to_vec(&paid["event"]).expect("event");
    let r = app
        .http
        .post(format!("{}/webhooks/stripe", app.url))
        .header("x-request-id", "trace-webhook-1")
        .header("stripe-signature", signature(WEBHOOK_SECRET, &body, 0))
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status(), 200);
    // Paid, and told by the browser's verify call alone.
    let (by_verify, co) = app.seat_checkout("trace@example.com", 1, "stripe").await;
    let session = s(&co["provider_order_id"]).to_owned();
    app.pay(&session, json!({"webhook": "none"})).await;
    let r = app
        .http
        .post(format!("{}/api/payments/verify", app.url))
        .header("x-request-id", "trace-verify-1")
        .json(&json!({"order_id": by_verify, "provider": "stripe",
                      "payload": {"session_id": session}}))
        .send()
        .await
        .expect("verify");
    assert_eq!(r.status(), 200);
    for id in [&by_webhook, &by_verify] {
        app.wait_for(id, &["fulfilled"]).await;
    }
    // An admin's refund of the first order: its steps carry the admin call's id.
    let r = app
        .http
        .post(format!("{}/api/payments/refund", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-request-id", "trace-admin-1")
        .json(&json!({"order_id": by_webhook, "reason": "requested_by_customer"}))
        .send()
        .await
        .expect("refund");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    app.wait_for(&by_webhook, &["refunded"]).await;

    let mut records = Vec::new();
    for id in [&by_webhook, &by_verify] {
        let (status, rec) = app
            .admin("GET", &format!("/api/admin/orders/{id}"), None)
            .await;
        assert_eq!(status, 200, "{rec}");
        records.push(rec);
    }
    let (first, second) = (&records[0], &records[1]);
    let events = first["events"].as_array().expect("events");
    let completed = events
        .iter()
        .find(|e| e["event_type"] == "checkout.session.completed");
    assert_eq!(
        completed.expect("the paid event")["request_id"],
        "trace-webhook-1"
    );
    let cause_of = |rec: &serde_json::Value, kind: &str| {
        let steps = rec["steps"].as_array().expect("steps");
        let step = steps.iter().find(|st| st["kind"] == kind);
        step.unwrap_or_else(|| panic!("no {kind} step in {rec}"))["request_id"].clone()
    };
    let pipeline = [
        "confirm_capture",
        "deduct_stock",
        "issue_invoice",
        "send_receipt",
        "grant_entitlement",
    ];
    for kind in pipeline {
        assert_eq!(cause_of(first, kind), "trace-webhook-1", "{kind}");
        assert_eq!(cause_of(second, kind), "trace-verify-1", "{kind}");
    }
    // The refund is booked by whichever lands first: the admin's call, once the provider
    // answered, or the provider's refund event, which the sandbox sends at once. Either way
    // the notice carries the id of the request that booked it.
    let refund_events: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e["event_type"] != "checkout.session.completed")
        .map(|e| e["request_id"].clone())
        .collect();
    let notice = cause_of(first, "notify_refund");
    assert!(
        notice == "trace-admin-1" || refund_events.contains(&notice),
        "{notice} is neither the admin call's nor a refund event's: {refund_events:?}"
    );

    // Each step's run logged under the request that caused it.
    let log = app.engine_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let done_under = |id: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id && l["fields"]["message"] == "step done")
            .filter_map(|l| l["span"]["kind"].as_str().map(str::to_owned))
            .collect()
    };
    for (id, kinds) in [
        ("trace-webhook-1", &pipeline[..]),
        ("trace-verify-1", &pipeline[..]),
        (notice.as_str().unwrap_or_default(), &["notify_refund"][..]),
    ] {
        let done = done_under(id);
        for kind in kinds {
            assert!(
                done.iter().any(|k| k == kind),
                "{id}: no {kind} run in {done:?}\n{log}"
            );
        }
    }
    app.finish().await;
}
