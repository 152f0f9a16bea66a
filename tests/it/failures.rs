//! When the provider fails or disagrees: retries with backoff from the store, retries that
//! survive a restart, and permanent failures that stop for a human.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, WEBHOOK_SECRET, s, signature, spawn};
use crate::on_both_stores;

on_both_stores!(
    provider_outage_is_retried_with_backoff,
    every_attempt_is_recorded_with_growing_backoff,
    dead_letters_are_listed_retried_and_discarded,
    emptied_queue_loses_nothing,
    two_engines_on_one_store_run_each_step_once,
    retry_survives_an_engine_restart,
    amount_mismatch_needs_review,
    checkout_creation_failure_releases_stock,
    stripe_should_retry_decides_over_the_status,
);

fn step<'a>(order: &'a Value, kind: &str) -> &'a Value {
    order["steps"]
        .as_array()
        .and_then(|v| v.iter().find(|st| st["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} step in {order:#}"))
}

async fn provider_outage_is_retried_with_backoff(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let order = app
        .create_order("retry@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    // The capture check's first two reads of the session fail: 503, then 429.
    app.inject_api_errors(&[503, 429]).await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let done = app.wait_for(id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    let cap = step(&done, "confirm_capture");
    assert_eq!(
        cap["attempts"], 3,
        "two failed attempts, then success: {cap}"
    );
    assert!(cap["last_error"].is_null(), "a done step carries no error");
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        4
    );
    app.finish().await;
}

/// Three 503s, then the provider answers: four attempts in the history, each failed one
/// rescheduled no sooner than its backoff, the backoff ceiling doubling each time.
async fn every_attempt_is_recorded_with_growing_backoff(backend: Backend) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__RETRY__CONFIRM_CAPTURE__BASE_MS", "100"),
            ("FULFILLD__RETRY__CONFIRM_CAPTURE__CAP_MS", "10000"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, co) = app.seat_checkout("attempts@example.com", 1, "stripe").await;
    app.inject_api_errors(&[503, 503, 503]).await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    let cap = step(&done, "confirm_capture");
    assert_eq!(cap["attempts"], 4, "{cap}");
    let (status, h) = app
        .admin(
            "GET",
            &format!("/api/admin/steps/{}/attempts", cap["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{h}");
    let attempts = h["attempts"].as_array().expect("attempts");
    let outcomes: Vec<&str> = attempts.iter().map(|a| s(&a["outcome"])).collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "done"], "{h:#}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i as i64 + 1);
        assert!(a["started_at"].as_i64() <= a["ended_at"].as_i64(), "{a}");
    }
    // Full jitter: each wait is uniform in [0, 100 ms · 2^(n-1)], so the ceilings double;
    // and no retry ran before the time it was scheduled for.
    for (n, pair) in attempts.windows(2).enumerate() {
        let (failed, next) = (&pair[0], &pair[1]);
        assert!(s(&failed["error"]).contains("503"), "{failed}");
        let ended = failed["ended_at"].as_i64().expect("ended_at");
        let retry_at = failed["retry_at"].as_i64().expect("retry_at");
        let ceiling = 100 * (1 << n);
        assert!(
            (ended..=ended + ceiling).contains(&retry_at),
            "attempt {}: retry {} ms after failing, ceiling {ceiling} ms",
            n + 1,
            retry_at - ended
        );
        assert!(next["started_at"].as_i64() >= Some(retry_at), "{h:#}");
    }
    assert!(attempts[3]["error"].is_null());
    app.finish().await;
}

/// A permanent failure goes dead at once and stops the order; the admin API lists it by
/// kind, refuses to act without the token or (for a discard) without a reason, and a retry
/// after the provider's record is fixed resumes the pipeline to fulfilled. Every action is
/// audited.
async fn dead_letters_are_listed_retried_and_discarded(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let mut orders = Vec::new();
    for n in 0..2 {
        let order = app
            .create_order(
                &format!("dead{n}@example.com"),
                json!([{"sku": "SEAT", "qty": 1}]),
            )
            .await;
        let id = s(&order["id"]).to_owned();
        let co = app.checkout(&id).await;
        let session = s(&co["provider_order_id"]).to_owned();
        app.pay(&session, json!({"amount_total": 999})).await;
        app.wait_for(&id, &["needs_review", "fulfilled"]).await;
        orders.push((id, session));
    }
    let r = app
        .http
        .get(format!("{}/api/admin/dead-letters", app.url))
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 401);
    let (status, list) = app
        .admin("GET", "/api/admin/dead-letters?kind=confirm_capture", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let dead = list["dead"].as_array().expect("dead");
    assert_eq!(dead.len(), 2, "{list:#}");
    assert!(
        dead.iter()
            .all(|d| s(&d["last_error"]).contains("amount mismatch"))
    );
    let (_, none) = app
        .admin("GET", "/api/admin/dead-letters?kind=send_receipt", None)
        .await;
    assert_eq!(none["dead"], json!([]));
    let (_, none) = app
        .admin("GET", "/api/admin/dead-letters?older_than_secs=3600", None)
        .await;
    assert_eq!(none["dead"], json!([]), "nothing has been dead for an hour");
    let (status, bad) = app
        .admin("GET", "/api/admin/dead-letters?kind=nope", None)
        .await;
    assert_eq!((status, s(&bad["error"]["field"])), (422, "kind"));

    // The first order: the provider's record is corrected, an admin retries.
    let (first, first_session) = &orders[0];
    let first_step = dead
        .iter()
        .find(|d| d["order_id"] == *first)
        .expect("dead step");
    app.sandbox_post(
        &format!("/sandbox/stripe/checkout/sessions/{first_session}/amend"),
        json!({"amount_total": 1000}),
    )
    .await;
    let (status, r) = app
        .admin(
            "POST",
            &format!("/api/admin/steps/{}/retry", first_step["id"]),
            Some(json!({"reason": "customer paid the remainder"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["retried"]["order_resumed"], true);
    let o = app.wait_for(first, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(step(&o, "confirm_capture")["attempts"], 2);
    let (status, again) = app
        .admin(
            "POST",
            &format!("/api/admin/steps/{}/retry", first_step["id"]),
            None,
        )
        .await;
    assert_eq!((status, s(&again["error"]["code"])), (409, "not_dead"));

    // The second: discarding needs a reason, and leaves the order for a human.
    let (second, _) = &orders[1];
    let second_step = dead
        .iter()
        .find(|d| d["order_id"] == *second)
        .expect("dead step");
    let path = format!("/api/admin/steps/{}/discard", second_step["id"]);
    let (status, e) = app.admin("POST", &path, None).await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "reason"));
    let (status, _) = app
        .admin("POST", &path, Some(json!({"reason": "refunded by phone"})))
        .await;
    assert_eq!(status, 200);
    let o = app.order(second).await;
    assert_eq!(o["status"], "needs_review");
    assert_eq!(step(&o, "confirm_capture")["status"], "discarded");
    let (_, left) = app.admin("GET", "/api/admin/dead-letters", None).await;
    assert_eq!(left["dead"], json!([]));
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM admin_actions WHERE actor = 'admin' AND said_by = $1",
            "test-operator"
        )
        .await,
        2
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        4
    );
    app.finish().await;
}

/// One worker, held up by a slow provider answer, while ten orders are paid: their
/// wake-ups wait in the queue, and an operator empties it. The sweeper sends every due step
/// again (the usual re-send after 10 minutes is not what saves them), and all ten are
/// fulfilled once.
async fn emptied_queue_loses_nothing(backend: Backend) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__QUEUE__CONCURRENCY", "1"),
            ("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 20).await;
    let mut orders = Vec::new();
    for n in 0..10 {
        orders.push(
            app.seat_checkout(&format!("q{n}@example.com"), 1, "stripe")
                .await,
        );
    }
    app.sandbox_post("/sandbox/stripe/faults", json!({"api_errors": ["timeout"]}))
        .await;
    for (_, co) in &orders {
        app.pay(s(&co["provider_order_id"]), json!({})).await;
    }
    let (status, purged) = app
        .admin(
            "POST",
            "/api/admin/queue/purge",
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200, "{purged}");
    assert!(
        purged["dropped"].as_i64() > Some(0),
        "wake-ups were waiting: {purged}"
    );
    for (id, _) in &orders {
        let o = app.wait_for(id, &["fulfilled", "needs_review"]).await;
        assert_eq!(o["status"], "fulfilled", "{o:#}");
    }
    assert_eq!(app.stock("SEAT").await, (10, 0));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE series = $1", "INV")
            .await,
        10
    );
    app.finish().await;
}

/// Two engines share one store, each with its own workers and a sweeper that re-sends
/// every due step on every pass, so both keep trying to claim every step. Each payment's
/// webhook reaches both engines at the same moment (a barrier): one stores it, the other
/// finds a duplicate. Over twenty orders both engines win some (one winning all has odds of
/// about 1 in 500,000), and every step runs exactly once. (Which engine's applier applies an
/// event, and so first wakes its steps, is a race of its own; the sweepers race for every
/// step anyway.)
async fn two_engines_on_one_store_run_each_step_once(backend: Backend) {
    const N: usize = 20;
    let mut app = spawn(backend, &[("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "0")]).await;
    let second = app.start_another_engine().await;
    let app = std::sync::Arc::new(app);
    app.put_sku("SEAT", 1000, 100).await;
    let mut orders = Vec::new();
    for n in 0..N {
        let (id, co) = app
            .seat_checkout(&format!("two{n}@example.com"), 1, "stripe")
            .await;
        let paid = app
            .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
            .await;
        orders.push((id, serde_json::to_vec(&paid["event"]).expect("event")));
    }
    let mut stored_by = [0; 2];
    for (_, body) in &orders {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let sends: Vec<_> = [app.url.clone(), second.clone()]
            .into_iter()
            .map(|url| {
                let (app, barrier, body) = (app.clone(), barrier.clone(), body.clone());
                tokio::spawn(async move {
                    let sig = signature(WEBHOOK_SECRET, &body, 0);
                    barrier.wait().await;
                    let r = app.post_webhook_to(&url, body, Some(sig)).await;
                    assert_eq!(r.status(), 200);
                    r.json::<Value>().await.expect("json")["duplicate"] == true
                })
            })
            .collect();
        let mut duplicates = 0;
        for (engine, t) in sends.into_iter().enumerate() {
            let duplicate = t.await.expect("send");
            duplicates += usize::from(duplicate);
            stored_by[engine] += usize::from(!duplicate);
        }
        assert_eq!(
            duplicates, 1,
            "one engine stored the event, the other saw a duplicate"
        );
    }
    assert!(
        stored_by.iter().all(|&n| n > 0),
        "both engines stored events: {stored_by:?}"
    );
    for (id, _) in &orders {
        let o = app.wait_for(id, &["fulfilled", "needs_review"]).await;
        assert_eq!(o["status"], "fulfilled", "{o:#}");
        assert!(
            o["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .all(|st| st["attempts"] == 1),
            "each step claimed and run once: {o:#}"
        );
    }
    assert_eq!(app.stock("SEAT").await, (100 - N as i64, 0));
    let numbers: Vec<i64> = sqlx::query_scalar("SELECT number FROM invoices ORDER BY number")
        .fetch_all(&app.store.pool)
        .await
        .expect("invoices");
    assert_eq!(numbers, (1..=N as i64).collect::<Vec<_>>());
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE kind = $1",
            "receipt"
        )
        .await,
        N as i64
    );
    TestApp::finish_shared(app).await;
}

async fn retry_survives_an_engine_restart(backend: Backend) {
    let mut app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let order = app
        .create_order("restart@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let co = app.checkout(&id).await;
    app.inject_api_errors(&[503; 50]).await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    // The first attempt failed and a retry is scheduled in the store.
    let o = app
        .wait_until(&id, "a failed capture attempt", |o| {
            let cap = step(o, "confirm_capture");
            cap["status"] == "pending" && cap["attempts"].as_i64() >= Some(1)
        })
        .await;
    assert!(
        step(&o, "confirm_capture")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{o:#}"
    );
    app.restart_engine().await;
    app.inject_api_errors(&[]).await;
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    app.finish().await;
}

async fn amount_mismatch_needs_review(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let order = app
        .create_order("short@example.com", json!([{"sku": "SEAT", "qty": 2}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    app.pay(s(&co["provider_order_id"]), json!({"amount_total": 1999}))
        .await;
    let o = app.wait_for(id, &["needs_review", "fulfilled"]).await;
    assert_eq!(o["status"], "needs_review", "{o:#}");
    let cap = step(&o, "confirm_capture");
    assert_eq!(cap["status"], "dead");
    assert_eq!(cap["attempts"], 1, "a permanent error is not retried");
    assert!(
        cap["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("amount mismatch")),
        "{cap}"
    );
    assert_eq!(o["waiting_on"], "confirm_capture");
    assert_eq!(step(&o, "deduct_stock")["status"], "waiting");
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        5,
        "nothing fulfilled"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", id)
            .await,
        0
    );
    assert!(app.outbox_files().is_empty());
    app.finish().await;
}

/// A provider failure as the buyer sees it: the request id to quote, and nothing of what the
/// provider said (no URL, not its status). The request id is random hex, which may itself
/// hold "500", so it is taken out before looking.
fn assert_generic(e: &Value) {
    let message = s(&e["error"]["message"]);
    let (before, after) = message
        .split_once("request req_")
        .unwrap_or_else(|| panic!("{e}"));
    let rest = after.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    let said = format!("{before}{rest}");
    assert!(!said.contains("http") && !said.contains("500"), "{e}");
}

/// The provider refuses to create the checkout: the buyer gets a 502 that says so, the stock
/// goes back, and the order can try again.
async fn checkout_creation_failure_releases_stock(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 1).await;
    let order = app
        .create_order("again@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    app.inject_api_errors(&[500]).await;
    let (status, e) = app.try_checkout(id).await;
    assert_eq!(status, 502);
    assert_eq!(e["error"]["code"], "provider_error");
    // What the provider said stays in the log; the buyer gets the request id to quote.
    assert_generic(&e);
    assert_eq!(app.order(id).await["status"], "created");
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    let co = app.checkout(id).await;
    assert_eq!(co["amount_minor"], 1000);
    // The verify call's provider failure is told the same way.
    app.inject_api_errors(&[500]).await;
    let (status, e) = app.verify(id, s(&co["provider_order_id"])).await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (502, "provider_error"),
        "{e}"
    );
    assert_generic(&e);
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        1
    );
    app.finish().await;
}

/// `Stripe-Should-Retry` overrides what the status suggests: a 400 Stripe says to repeat is
/// repeated, a 503 it says not to repeat stops the step for a human at once (its attempts
/// unspent), and the admin's retry then finishes it.
async fn stripe_should_retry_decides_over_the_status(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, co) = app.seat_checkout("repeat@example.com", 1, "stripe").await;
    app.inject_api_errors_json(json!([{"status": 400, "should_retry": true}]))
        .await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(step(&done, "confirm_capture")["attempts"], 2, "{done:#}");

    let (id, co) = app.seat_checkout("stop@example.com", 1, "stripe").await;
    app.inject_api_errors_json(json!([{"status": 503, "should_retry": false}]))
        .await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let stopped = app
        .wait_until(&id, "the capture check stopped", |o| {
            o["steps"].as_array().is_some_and(|steps| {
                steps
                    .iter()
                    .any(|st| st["kind"] == "confirm_capture" && st["status"] == "dead")
            })
        })
        .await;
    let cap = step(&stopped, "confirm_capture");
    assert_eq!(cap["attempts"], 1, "not repeated: {cap}");
    assert!(s(&cap["last_error"]).contains("503"), "{cap}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        0
    );
    let (status, r) = app
        .admin(
            "POST",
            &format!("/api/admin/steps/{}/retry", cap["id"]),
            Some(json!({"reason": "Stripe is back"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let done = app.wait_for(&id, &["fulfilled"]).await;
    assert_eq!(step(&done, "confirm_capture")["attempts"], 2, "{done:#}");
    app.finish().await;
}
