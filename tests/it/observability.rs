//! What the people who run the engine watch: `/metrics` counts what really happened, as
//! the store recorded it.

use serde_json::json;

use crate::admin::fulfilled_and_dead;
use crate::harness::{Backend, TestApp, WEBHOOK_SECRET, signature, spawn};
use crate::on_both_stores;

on_both_stores!(metrics_count_what_happened);

/// The value of the sample `series` (name and labels, exactly as written) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

async fn scrape(app: &TestApp) -> String {
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
    let r = app
        .post_webhook(
            b"not json".to_vec(),
            Some(signature(WEBHOOK_SECRET, b"not json", 0)),
        )
        .await;
    assert_eq!(r.status(), 400);

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
        sample(
            &text,
            r#"fulfilld_webhooks_rejected_total{provider="stripe",reason="invalid_event"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("fulfilld_webhooks_received_total{stripe}")),
        stored + 3.0
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
