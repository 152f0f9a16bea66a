//! `fulfilld serve` as a real process, SIGKILLed: while steps wait in their backoff and while
//! a step is mid-run (its provider call served, the answer not yet back). A new process on
//! the same store finishes every order, and every effect exists exactly once. A step that
//! takes its worker down every time it runs is stopped as a poison job.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, s, spawn_process};
use crate::on_both_stores;

on_both_stores!(
    sigkill_in_backoff_and_mid_step_loses_nothing_and_doubles_nothing,
    step_that_kills_its_worker_three_times_goes_dead_as_poison,
);

/// Polls the store until `sql` (a count) satisfies `ok`.
async fn until_count(app: &TestApp, what: &str, sql: &'static str, ok: impl Fn(i64) -> bool) {
    let limit = Duration::from_secs(60);
    app.until_count(what, sql, ok, limit, || app.engine_log())
        .await
}

async fn col(app: &TestApp, sql: &'static str) -> Vec<i64> {
    sqlx::query_scalar(sql)
        .fetch_all(&app.store.pool)
        .await
        .expect(sql)
}

async fn sigkill_in_backoff_and_mid_step_loses_nothing_and_doubles_nothing(backend: Backend) {
    const N: usize = 12;
    let mut app = spawn_process(
        backend,
        &[
            ("FULFILLD__QUEUE__LEASE_MS", "1500"),
            ("FULFILLD__RETRY__CONFIRM_CAPTURE__BASE_MS", "500"),
            ("FULFILLD__RETRY__CONFIRM_CAPTURE__CAP_MS", "4000"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 100).await;
    let mut orders = Vec::new();
    for n in 0..N {
        orders.push(
            app.seat_checkout(&format!("kill{n}@example.com"), 1, "stripe")
                .await,
        );
    }
    // The first capture check's answer hangs (the step is mid-run); the next six fail (their
    // steps wait in backoff).
    let mut faults: Vec<Value> = vec![json!("hang")];
    faults.extend(std::iter::repeat_n(json!(503), 6));
    app.sandbox_post("/sandbox/stripe/faults", json!({ "api_errors": faults }))
        .await;
    for (_, co) in &orders {
        app.pay(s(&co["provider_order_id"]), json!({})).await;
    }
    until_count(
        &app,
        "a step mid-run",
        "SELECT COUNT(*) FROM steps WHERE status = 'running' AND kind = 'confirm_capture'",
        |n| n >= 1,
    )
    .await;
    until_count(
        &app,
        "a step in backoff",
        "SELECT COUNT(*) FROM steps WHERE status = 'pending' AND attempts >= 1",
        |n| n >= 1,
    )
    .await;
    app.kill_engine_process().await;
    let running = col(&app, "SELECT id FROM steps WHERE status = 'running'").await;
    assert!(!running.is_empty(), "killed with a step mid-run");

    app.start_engine_process().await;
    for (id, _) in &orders {
        let o = app.wait_for(id, &["fulfilled", "needs_review"]).await;
        assert_eq!(o["status"], "fulfilled", "{o:#}");
    }
    // Every effect exactly once: stock, gapless invoice numbers, receipts, entitlements.
    assert_eq!(app.stock("SEAT").await, (100 - N as i64, 0));
    let numbers = col(&app, "SELECT number FROM invoices ORDER BY number").await;
    assert_eq!(numbers, (1..=N as i64).collect::<Vec<_>>());
    assert_eq!(
        col(
            &app,
            "SELECT COUNT(*) FROM emails_sent WHERE kind = 'receipt'"
        )
        .await,
        [N as i64]
    );
    assert_eq!(app.outbox_files().len(), N, "one receipt file each");
    assert_eq!(
        col(&app, "SELECT COUNT(*) FROM entitlements").await,
        [N as i64]
    );
    assert_eq!(
        col(&app, "SELECT COUNT(DISTINCT order_id) FROM ledger_entries").await,
        [N as i64]
    );
    // Written many orders to a statement, each row still belongs to its own order: three
    // balanced ledger rows, the invoice number as its step's outcome, the buyer's grant.
    assert_eq!(
        col(
            &app,
            "SELECT COUNT(*) FROM (SELECT order_id FROM ledger_entries GROUP BY order_id
             HAVING COUNT(*) = 3 AND SUM(debit_minor) = SUM(credit_minor)) AS balanced"
        )
        .await,
        [N as i64]
    );
    assert_eq!(
        col(
            &app,
            "SELECT COUNT(*) FROM steps s JOIN invoices i ON i.order_id = s.order_id
             JOIN orders o ON o.id = i.order_id
             WHERE s.kind = 'issue_invoice' AND s.outcome = i.invoice_number
               AND i.total_minor = o.total_minor"
        )
        .await,
        [N as i64]
    );
    assert_eq!(
        col(
            &app,
            "SELECT COUNT(*) FROM entitlements e JOIN orders o
             ON o.id = e.order_id AND o.customer_email = e.customer_email"
        )
        .await,
        [N as i64]
    );
    // The cut-off run (the hung capture check, at least; another step may have been
    // committing as the process died) is in the history, and the step ran again after it.
    let mut cut_off = 0;
    for id in running {
        let (_, h) = app
            .admin("GET", &format!("/api/admin/steps/{id}/attempts"), None)
            .await;
        let outcomes: Vec<&str> = h["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| s(&a["outcome"]))
            .collect();
        assert_eq!(outcomes.last(), Some(&"done"), "{h:#}");
        if outcomes.first() == Some(&"lease_expired") {
            cut_off += 1;
        }
    }
    assert!(cut_off >= 1, "the hung step was cut off and run again");
    app.finish().await;
}

/// Each run of the step hangs and its process is SIGKILLed; after the third time the step
/// is dead as a poison job (not handed to a fourth worker) and its order needs review. An
/// admin retry, once the cause is gone, fulfils it.
async fn step_that_kills_its_worker_three_times_goes_dead_as_poison(backend: Backend) {
    let mut app = spawn_process(
        backend,
        &[
            ("FULFILLD__QUEUE__LEASE_MS", "1000"),
            ("FULFILLD__QUEUE__MAX_LEASE_EXPIRIES", "3"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, co) = app.seat_checkout("poison@example.com", 1, "stripe").await;
    app.sandbox_post(
        "/sandbox/stripe/faults",
        json!({"api_errors": ["hang", "hang", "hang"]}),
    )
    .await;
    let calls = |v: Value| v["api_requests"].as_i64().expect("count");
    let before = calls(app.sandbox_get("/sandbox/stripe/requests").await);
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    for round in 1..=3 {
        let sql = match round {
            1 => "SELECT COUNT(*) FROM steps WHERE status = 'running' AND attempts = 1",
            2 => "SELECT COUNT(*) FROM steps WHERE status = 'running' AND attempts = 2",
            _ => "SELECT COUNT(*) FROM steps WHERE status = 'running' AND attempts = 3",
        };
        until_count(&app, "the step running again", sql, |n| n == 1).await;
        // Killed only once its call hangs at the provider: a run killed before its call
        // would leave that hang for the run after the admin's retry.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while calls(app.sandbox_get("/sandbox/stripe/requests").await) < before + round {
            assert!(
                std::time::Instant::now() < deadline,
                "no hung call in round {round}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.kill_engine_process().await;
        app.start_engine_process().await;
    }
    let o = app.wait_for(&id, &["needs_review", "fulfilled"]).await;
    assert_eq!(o["status"], "needs_review", "{o:#}");
    let cap = o["steps"]
        .as_array()
        .and_then(|v| v.iter().find(|st| st["kind"] == "confirm_capture"))
        .expect("capture step")
        .clone();
    assert_eq!(cap["status"], "dead", "{cap}");
    assert_eq!(cap["attempts"], 3, "not handed to a fourth worker: {cap}");
    assert!(s(&cap["last_error"]).contains("poison"), "{cap}");
    assert_eq!(app.stock("SEAT").await, (5, 1), "nothing deducted");
    let (status, r) = app
        .admin(
            "POST",
            &format!("/api/admin/steps/{}/retry", cap["id"]),
            Some(json!({"reason": "provider fixed its hanging endpoint"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    app.finish().await;
}
