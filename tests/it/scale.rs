//! Scale-out: separate `fulfilld intake` and `fulfilld work` processes on one store and one
//! Redis queue; backlogs far larger than any queue window; Redis and PostgreSQL restarted
//! under load (servers of the test's own, on free ports).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{
    Backend, TestApp, WEBHOOK_SECRET, fresh_prefix, redis_url, s, signature, spawn, spawn_bare,
};
use crate::servers::{OwnPostgres, OwnRedis};

const FULFILLED: &str = "SELECT COUNT(*) FROM orders WHERE status = 'fulfilled'";

/// Waits until all `n` orders are fulfilled, for at most `limit`; a timeout shows `logs()`.
async fn until_fulfilled(app: &TestApp, n: usize, limit: Duration, logs: impl Fn() -> String) {
    let n = n as i64;
    app.until_count("every order fulfilled", FULFILLED, |k| k == n, limit, logs)
        .await
}

/// Wake-ups waiting in the Redis list of one step kind.
async fn queued(redis_url: &str, prefix: &str, kind: &str) -> usize {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("LLEN")
        .arg(format!("{prefix}:wake:{kind}"))
        .query_async(&mut c)
        .await
        .expect("LLEN")
}

/// A Postgres-backed app whose queue is the shared Redis under a fresh key prefix (the
/// engine processes it starts inherit both), with `extra` settings.
async fn on_redis(extra: &[(&str, &str)]) -> TestApp {
    let (redis, prefix) = (redis_url(), fresh_prefix());
    let mut env = vec![
        ("FULFILLD__QUEUE__URL", redis.as_str()),
        ("FULFILLD__QUEUE__PREFIX", prefix.as_str()),
    ];
    env.extend_from_slice(extra);
    spawn_bare(Backend::Postgres, &env).await
}

/// The logs of several processes, for a failure message.
fn logs(processes: &[crate::harness::RoleProcess]) -> String {
    processes
        .iter()
        .map(|p| p.log_text())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.store.pool)
        .await
        .expect(sql)
}

/// `stock` SEATs on hand, and `n` orders for one each paid at the sandbox without a webhook:
/// the app, shared, and each order's id and `checkout.session.completed` body.
async fn stocked_and_paid(
    app: TestApp,
    stock: usize,
    n: usize,
) -> (Arc<TestApp>, Vec<(String, Vec<u8>)>) {
    app.put_sku("SEAT", 1000, stock as i64).await;
    let app = Arc::new(app);
    let orders = paid_without_webhook(&app, n).await;
    (app, orders)
}

/// `n` orders with an open Stripe checkout, paid at the sandbox without a webhook: the
/// order ids and the signed-ready `checkout.session.completed` bodies.
async fn paid_without_webhook(app: &Arc<TestApp>, n: usize) -> Vec<(String, Vec<u8>)> {
    futures::stream::iter(0..n)
        .map(|i| {
            let app = app.clone();
            async move {
                let (id, co) = app
                    .seat_checkout(&format!("scale{i}@example.com"), 1, "stripe")
                    .await;
                let paid = app
                    .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
                    .await;
                (id, serde_json::to_vec(&paid["event"]).expect("event"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Every receipt, invoice, entitlement and stock deduction exists exactly once per order.
async fn effects_exactly_once(app: &TestApp, n: i64, stock: i64) {
    for (what, sql) in [
        (
            "fulfilled orders",
            "SELECT COUNT(*) FROM orders WHERE status = 'fulfilled'",
        ),
        ("invoices", "SELECT COUNT(*) FROM invoices"),
        (
            "invoiced orders",
            "SELECT COUNT(DISTINCT order_id) FROM invoices",
        ),
        ("receipts", "SELECT COUNT(*) FROM emails_sent"),
        ("entitlements", "SELECT COUNT(*) FROM entitlements"),
    ] {
        assert_eq!(count(app, sql).await, n, "{what}");
    }
    assert_eq!(
        app.stock("SEAT").await,
        (stock - n, 0),
        "stock deducted once per order"
    );
}

/// Delivers each order's webhook once (each answered 200), then waits until every order is
/// fulfilled with each effect exactly once (`processes`' logs shown on a timeout). The
/// stock was exactly enough for the orders.
async fn deliver_and_fulfil(
    app: &TestApp,
    orders: Vec<(String, Vec<u8>)>,
    processes: &[crate::harness::RoleProcess],
) {
    let n = orders.len();
    for (_, body) in orders {
        let sig = signature(WEBHOOK_SECRET, &body, 0);
        assert_eq!(app.post_webhook(body, Some(sig)).await.status(), 200);
    }
    until_fulfilled(app, n, Duration::from_secs(120), || logs(processes)).await;
    effects_exactly_once(app, n as i64, n as i64).await;
}

/// 2 intakes and 3 workers (separate processes) on Postgres + Redis take 2,000 orders, every
/// webhook delivered to both intakes at once. One worker is SIGKILLed a third of the way in,
/// another gets SIGTERM at two thirds (and must exit cleanly within its grace period). Every
/// order ends fulfilled, every effect exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_intakes_three_workers_kill_and_term_fulfil_every_order_once() {
    const N: usize = 2000;
    let app = on_redis(&[
        ("FULFILLD__QUEUE__LEASE_MS", "3000"),
        ("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "3000"),
    ])
    .await;
    let intake1 = app.start_role("intake", &[], Some(&app.url), &[]).await;
    let intake2 = app.start_role("intake", &[], None, &[]).await;
    let (app, orders) = stocked_and_paid(app, N + 10, N).await;

    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            app.start_role("work", &["--concurrency", "4"], None, &[])
                .await,
        );
    }
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deliveries = futures::stream::iter(orders.iter().cloned())
        .map(|(_, body)| {
            let (app, delivered) = (app.clone(), delivered.clone());
            let urls = [intake1.url.clone(), intake2.url.clone()];
            let intake_logs = [intake1.log.clone(), intake2.log.clone()];
            async move {
                let barrier = Arc::new(tokio::sync::Barrier::new(2));
                let sends = urls.map(|url| {
                    let (app, barrier, body) = (app.clone(), barrier.clone(), body.clone());
                    tokio::spawn(async move {
                        let sig = signature(WEBHOOK_SECRET, &body, 0);
                        barrier.wait().await;
                        app.post_webhook_to(&url, body, Some(sig))
                            .await
                            .status()
                            .as_u16()
                    })
                });
                for send in sends {
                    let status = send.await.expect("delivery task");
                    if status != 200 {
                        let logs = intake_logs
                            .iter()
                            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                            .collect::<Vec<_>>();
                        panic!("a webhook was refused: {status}; intake logs:\n{logs:#?}");
                    }
                }
                delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    let chaos = async {
        let wait_delivered = |k: usize| {
            let delivered = delivered.clone();
            async move {
                while delivered.load(std::sync::atomic::Ordering::Relaxed) < k {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait_delivered(N / 3).await;
        workers[0].sigkill().await;
        wait_delivered(2 * N / 3).await;
        let clean = workers[1].sigterm().await;
        assert!(
            clean,
            "SIGTERM: exit 0 after finishing in-flight steps:\n{}",
            workers[1].log_text()
        );
    };
    tokio::join!(deliveries, chaos);

    until_fulfilled(&app, N, Duration::from_secs(600), || logs(&workers)).await;
    effects_exactly_once(&app, N as i64, N as i64 + 10).await;
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM webhook_events").await,
        N as i64,
        "each event stored once, the second delivery a duplicate"
    );
    drop((intake1, intake2, workers));
    TestApp::finish_shared(app).await;
}

/// Redis is killed mid-run (every wake-up in it gone) and comes back empty: every order is
/// still fulfilled, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_mid_run_loses_nothing() {
    const N: usize = 200;
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let prefix = fresh_prefix();
    let app = spawn(
        Backend::Postgres,
        &[
            ("FULFILLD__QUEUE__URL", url.as_str()),
            ("FULFILLD__QUEUE__PREFIX", prefix.as_str()),
            ("FULFILLD__QUEUE__CONCURRENCY", "2"),
            // Only noticing that Redis came back empty can recover the lost wake-ups in
            // time: the requeue timer is longer than the test may take.
            ("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000"),
        ],
    )
    .await;
    let (app, orders) = stocked_and_paid(app, N, N).await;
    // Both capture workers wait 3 s on the provider, so the wake-ups pile up in Redis.
    app.inject_api_errors_json(json!(["timeout", "timeout"]))
        .await;
    for (_, body) in &orders {
        let sig = signature(WEBHOOK_SECRET, body, 0);
        let r = app.post_webhook(body.clone(), Some(sig)).await;
        assert_eq!(r.status(), 200);
    }
    let waiting = queued(&url, &prefix, "confirm_capture").await;
    assert!(waiting > 0, "wake-ups were waiting in Redis when it went");
    redis.restart();
    until_fulfilled(&app, N, Duration::from_secs(300), String::new).await;
    effects_exactly_once(&app, N as i64, N as i64).await;
    TestApp::finish_shared(app).await;
}

/// The store goes down mid-run: meanwhile intake answers 503 (never 200 for an event it did
/// not store) and `/readyz` says the store is down; the provider's retries (this test
/// delivering again until a 2xx) cover the rest. Every 2xx'd event is stored, and every
/// order ends fulfilled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_run_only_stored_events_get_2xx() {
    const N: usize = 120;
    let pg = OwnPostgres::start().await;
    let store_url = pg.url();
    let app = spawn(
        Backend::Postgres,
        &[
            ("FULFILLD__STORE__URL", store_url.as_str()),
            ("FULFILLD__STORE__ACQUIRE_TIMEOUT_MS", "1000"),
            // A step whose outcome could not be written is run again once its lease ends.
            ("FULFILLD__QUEUE__LEASE_MS", "3000"),
            ("FULFILLD__QUEUE__CONCURRENCY", "2"),
        ],
    )
    .await;
    let (app, orders) = stocked_and_paid(app, N, N).await;
    let mut answered_ok = Vec::new();
    let mut refused_while_down = 0;
    for (i, (_, body)) in orders.iter().enumerate() {
        if i == N / 2 {
            pg.down();
            let r = app
                .http
                .get(format!("{}/readyz", app.url))
                .send()
                .await
                .expect("readyz");
            assert_eq!(r.status(), 503, "not ready while the store is down");
            let ready: Value = r.json().await.expect("json");
            assert_eq!(ready["store"], "down", "{ready}");
        }
        let down = (N / 2..N / 2 + 10).contains(&i);
        if i == N / 2 + 10 {
            pg.up();
        }
        // Delivered until a 2xx, as the provider would retry.
        loop {
            let sig = signature(WEBHOOK_SECRET, body, 0);
            let status = app
                .post_webhook(body.clone(), Some(sig))
                .await
                .status()
                .as_u16();
            if status == 200 {
                answered_ok.push(i);
                break;
            }
            assert_eq!(
                status, 503,
                "a store outage is a 503, so the provider retries"
            );
            if down {
                refused_while_down += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        refused_while_down, 10,
        "every webhook during the outage got a 503"
    );
    // The provider retries what was refused.
    for (_, body) in &orders[N / 2..N / 2 + 10] {
        let sig = signature(WEBHOOK_SECRET, body, 0);
        assert_eq!(
            app.post_webhook(body.clone(), Some(sig)).await.status(),
            200
        );
    }
    until_fulfilled(&app, N, Duration::from_secs(300), String::new).await;
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM webhook_events").await,
        N as i64
    );
    effects_exactly_once(&app, N as i64, N as i64).await;
    TestApp::finish_shared(app).await;
}

/// Puts `n` paid orders in the store, each with its last fulfilment step (`grant_entitlement`)
/// due — a backlog as a burst of webhooks leaves it, without pushing anything to a queue.
async fn due_backlog(app: &TestApp, batch: &str, n: i64) {
    let position = jobs::StepKind::GrantEntitlement.position();
    let statements = [
        "INSERT INTO orders (id, customer_email, status, total_minor, currency, created_at, updated_at)
         SELECT 'ord_' || $2 || '_' || i, 'backlog@example.com', 'paid', 1000, 'usd', 0, 0 FROM n",
        "INSERT INTO payments (id, order_id, provider, provider_order_id, status, amount_minor, currency, created_at, updated_at)
         SELECT 'pay_' || $2 || '_' || i, 'ord_' || $2 || '_' || i, 'stripe', 'cs_' || $2 || '_' || i, 'paid', 1000, 'usd', 0, 0 FROM n",
        "INSERT INTO steps (order_id, payment_id, kind, position, status, next_run_at, created_at, updated_at)
         SELECT 'ord_' || $2 || '_' || i, 'pay_' || $2 || '_' || i, 'grant_entitlement', $3, 'pending', 0, 0, 0 FROM n",
    ];
    for sql in statements {
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) {sql}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(n)
            .bind(batch)
            .bind(position)
            .execute(&app.store.pool)
            .await
            .expect("backlog insert");
    }
}

/// 20,000 due steps wait before any worker runs; a worker drains them; a quarter of the way
/// it is stopped (SIGTERM), 5,000 more arrive meanwhile — the queue never holding more than
/// its window — and a new worker drains everything.
/// `queue_url` "postgres": notifications through the store's own Postgres.
async fn backlog_drains(backend: Backend, role: &str, queue_url: &str) {
    const FIRST: i64 = 20_000;
    const MORE: i64 = 5_000;
    const WINDOW: usize = 500;
    let prefix = fresh_prefix();
    let window = WINDOW.to_string();
    let notify = queue_url == "postgres";
    let app = spawn_bare(
        backend,
        &[
            ("FULFILLD__QUEUE__URL", if notify { "" } else { queue_url }),
            ("FULFILLD__QUEUE__PREFIX", prefix.as_str()),
            ("FULFILLD__QUEUE__WINDOW", window.as_str()),
            // Each step waits on two commits; more at once keeps the drain short. (Half as
            // many connections: tests run side by side on one Postgres of 100 connections.)
            ("FULFILLD__QUEUE__CONCURRENCY", "32"),
            ("FULFILLD__STORE__MAX_CONNECTIONS", "16"),
        ],
    )
    .await;
    due_backlog(&app, "a", FIRST).await;
    // A line per step would be most of the work here.
    let store_url = app.config.store.url.clone();
    let mut quiet = vec![("RUST_LOG", "warn")];
    if notify {
        quiet.push(("FULFILLD__QUEUE__URL", store_url.as_str()));
    }
    let mut worker = app.start_role(role, &[], None, &quiet).await;
    let limit = Duration::from_secs(600);
    let log = |w: &crate::harness::RoleProcess| w.log_text();
    app.until_count(
        "a quarter fulfilled",
        FULFILLED,
        |n| n >= FIRST / 4,
        limit,
        || log(&worker),
    )
    .await;
    assert!(worker.sigterm().await, "clean exit:\n{}", log(&worker));
    due_backlog(&app, "b", MORE).await;
    if queue_url.starts_with("redis") {
        let held = queued(queue_url, &prefix, "grant_entitlement").await;
        assert!(
            held <= WINDOW,
            "the queue holds {held} wake-ups, past its window"
        );
    }
    let worker = app.start_role(role, &[], None, &quiet).await;
    until_fulfilled(&app, (FIRST + MORE) as usize, limit, || log(&worker)).await;
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM steps WHERE status <> 'done'").await,
        0
    );
    drop(worker);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_drains_embedded() {
    backlog_drains(Backend::Sqlite, "serve", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_drains_postgres_store_polled() {
    backlog_drains(Backend::Postgres, "work", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_drains_redis() {
    let redis = redis_url();
    backlog_drains(Backend::Postgres, "work", &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_drains_postgres_notify() {
    backlog_drains(Backend::Postgres, "work", "postgres").await;
}

/// `queue.url` = the store's Postgres: an intake and two workers, no Redis. Sweeps and
/// requeue timers are out of the test's reach, so after the workers' first pass every step
/// reaches a worker through a notification — and each runs once, whichever process takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_and_workers_on_postgres_notifications_fulfil_orders() {
    const N: usize = 40;
    let app = spawn_bare(
        Backend::Postgres,
        &[
            ("FULFILLD__QUEUE__SWEEP_INTERVAL_MS", "600000"),
            ("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000"),
        ],
    )
    .await;
    let store_url = app.config.store.url.clone();
    let queue = [("FULFILLD__QUEUE__URL", store_url.as_str())];
    let intake = app.start_role("intake", &[], Some(&app.url), &queue).await;
    let workers = [
        app.start_role("work", &[], None, &queue).await,
        app.start_role("work", &[], None, &queue).await,
    ];
    let (app, orders) = stocked_and_paid(app, N, N).await;
    deliver_and_fulfil(&app, orders, &workers).await;
    drop((intake, workers));
    TestApp::finish_shared(app).await;
}

/// Postgres notifications that never arrive (the intake notifies on another channel here):
/// each sweeper tick takes the steps no sweeper took yet, so orders still flow within a few
/// ticks, not after the requeue timer (out of the test's reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_postgres_notifications_cost_one_sweep_interval() {
    const N: usize = 20;
    let app = spawn_bare(
        Backend::Postgres,
        &[
            ("FULFILLD__QUEUE__SWEEP_INTERVAL_MS", "200"),
            ("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000"),
        ],
    )
    .await;
    let store_url = app.config.store.url.clone();
    let queue = [("FULFILLD__QUEUE__URL", store_url.as_str())];
    let elsewhere = fresh_prefix();
    let processes = [
        app.start_role(
            "intake",
            &[],
            Some(&app.url),
            &[
                ("FULFILLD__QUEUE__URL", store_url.as_str()),
                ("FULFILLD__QUEUE__PREFIX", elsewhere.as_str()),
            ],
        )
        .await,
        app.start_role("work", &[], None, &queue).await,
    ];
    let (app, orders) = stocked_and_paid(app, N, N).await;
    deliver_and_fulfil(&app, orders, &processes).await;
    drop(processes);
    TestApp::finish_shared(app).await;
}

/// Without a shared queue, an intake's wake-ups cannot reach a `work` process: its sweeper
/// finds the new due steps in the store, so orders still flow through promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intake_and_worker_without_a_shared_queue_fulfil_orders() {
    const N: usize = 20;
    let app = spawn_bare(
        Backend::Postgres,
        // Longer than the test may take: a step is not found only by the requeue timer.
        &[("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000")],
    )
    .await;
    let intake = app.start_role("intake", &[], Some(&app.url), &[]).await;
    let worker = app.start_role("work", &[], None, &[]).await;
    let (app, orders) = stocked_and_paid(app, N, N).await;
    deliver_and_fulfil(&app, orders, std::slice::from_ref(&worker)).await;
    drop((intake, worker));
    TestApp::finish_shared(app).await;
}

/// Redis queue with a tiny window, a burst of webhooks at an intake (which runs no sweeper)
/// and a slow worker: every step still reaches the worker through the queue at once, not by
/// the requeue timer (out of the test's reach here). The window bounds what sweepers send,
/// never a producer's wake-ups: an intake that held them back could tell no sweeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wake_ups_past_the_window_reach_workers_of_other_processes() {
    const N: usize = 40;
    let app = on_redis(&[
        ("FULFILLD__QUEUE__WINDOW", "2"),
        ("FULFILLD__QUEUE__SWEEP_INTERVAL_MS", "200"),
        ("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000"),
    ])
    .await;
    let processes = [
        app.start_role("intake", &[], Some(&app.url), &[]).await,
        app.start_role("work", &["--concurrency", "1"], None, &[])
            .await,
    ];
    let (app, orders) = stocked_and_paid(app, N, N).await;
    let statuses: Vec<u16> = futures::stream::iter(orders)
        .map(|(_, body)| {
            let app = app.clone();
            async move {
                let sig = signature(WEBHOOK_SECRET, &body, 0);
                app.post_webhook(body, Some(sig)).await.status().as_u16()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    until_fulfilled(&app, N, Duration::from_secs(120), || logs(&processes)).await;
    effects_exactly_once(&app, N as i64, N as i64).await;
    drop(processes);
    TestApp::finish_shared(app).await;
}

/// A worker goes straight on to an order's next store-only step only when its process runs
/// that kind: with `--steps` split across two processes, each kind still runs only where it
/// was asked for, and every order is fulfilled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_steps_stay_in_the_processes_that_run_their_kind() {
    const N: usize = 20;
    let app = on_redis(&[("FULFILLD__QUEUE__REQUEUE_AFTER_MS", "600000")]).await;
    let processes = [
        app.start_role("intake", &[], Some(&app.url), &[]).await,
        app.start_role(
            "work",
            &["--steps", "confirm_capture,send_receipt"],
            None,
            &[],
        )
        .await,
        app.start_role(
            "work",
            &["--steps", "deduct_stock,issue_invoice,grant_entitlement"],
            None,
            &[],
        )
        .await,
    ];
    let (app, orders) = stocked_and_paid(app, N, N).await;
    deliver_and_fulfil(&app, orders, &processes).await;
    let crossed = count(
        &app,
        "SELECT COUNT(*) FROM steps a JOIN steps b ON a.worker = b.worker
         WHERE a.kind IN ('confirm_capture', 'send_receipt')
           AND b.kind IN ('deduct_stock', 'issue_invoice', 'grant_entitlement')",
    )
    .await;
    assert_eq!(
        crossed, 0,
        "a step ran in a process that does not run its kind"
    );
    let workers = count(&app, "SELECT COUNT(DISTINCT worker) FROM steps").await;
    assert_eq!(workers, 2, "each kind ran in its own process");
    drop(processes);
    TestApp::finish_shared(app).await;
}
