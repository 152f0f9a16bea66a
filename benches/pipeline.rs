//! Throughput over loopback, per topology: signed Stripe webhooks for pre-created, paid
//! checkouts are fired at the intake by `BENCH_CONC` concurrent clients (every
//! `BENCH_DUP_EVERY`-th event delivered twice, as providers do), and every order is followed
//! to `fulfilled`. Prints, per topology, intake requests/s with p50/p99/max latency,
//! duplicates suppressed, end-to-end orders/s (first webhook to last order fulfilled) and the
//! peak RSS of the engine processes; writes the same table as JSON to `BENCH_JSON`
//! (default `target/bench-pipeline.json`) for comparison between runs.
//!
//! Topologies (`BENCH_TOPOLOGIES`, comma-separated; default all three):
//! - `embedded`: `serve` on SQLite, in this process.
//! - `embedded-intake`, `pg-redis-intake`: `intake` alone on SQLite, or on Postgres and
//!   Redis, in this process: what the intake takes with no pipeline competing for the CPU
//!   (no end-to-end figure).
//! - `pg-redis-1`, `pg-redis-2`: an intake in this process, and 1 or 2 `fulfilld work`
//!   processes, on Postgres (`BENCH_POSTGRES`, default the local server) and Redis
//!   (`BENCH_REDIS`, default the local server).
//! - `pg-notify-1`, `pg-notify-2`: the same with Postgres notifications for the queue.
//!
//! ```sh
//! cargo bench --bench pipeline                                    # 2000 orders, 64 clients
//! BENCH_ORDERS=5000 BENCH_TOPOLOGIES=pg-redis-2 cargo bench --bench pipeline
//! ```
//! A throwaway Postgres database and Redis key prefix are made per run, and removed.
//! `FULFILLD__*` variables override the engine's settings (e.g. `FULFILLD__QUEUE__CONCURRENCY`);
//! `BENCH_WORKER_LOG` is the `work` processes' `RUST_LOG` (default `warn`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fulfilld::Role;
use fulfilld::config::Config;
use fulfilld::providers::stripe::sign;
use fulfilld::store::Store;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const SECRET: &str = "whsec_bench";

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

#[derive(Debug, Serialize)]
struct Row {
    topology: String,
    orders: usize,
    clients: usize,
    requests: usize,
    intake_req_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    duplicates_suppressed: usize,
    e2e_orders_per_s: f64,
    /// Peak resident memory of the engine: this process for `embedded` (which also runs
    /// the load generator), else the largest worker process.
    peak_rss_mb: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: usize = env_or("BENCH_ORDERS", "2000").parse()?;
    let conc: usize = env_or("BENCH_CONC", "64").parse()?;
    let dup_every: usize = env_or("BENCH_DUP_EVERY", "10").parse()?;
    let topologies = env_or("BENCH_TOPOLOGIES", "embedded,pg-redis-1,pg-redis-2");
    let mut rows = Vec::new();
    for t in topologies
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let workers = match t {
            "embedded" | "embedded-intake" | "pg-redis-intake" => 0,
            "pg-redis-1" | "pg-notify-1" => 1,
            "pg-redis-2" | "pg-notify-2" => 2,
            other => anyhow::bail!("unknown topology {other:?}"),
        };
        let row = run(t, workers, orders, conc, dup_every.max(1)).await?;
        eprintln!("{row:?}");
        rows.push(row);
    }
    println!(
        "{:<11} {:>6} {:>7} {:>12} {:>8} {:>8} {:>8} {:>6} {:>10} {:>8}",
        "topology",
        "orders",
        "clients",
        "intake req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "dups",
        "e2e ord/s",
        "RSS MB"
    );
    for r in &rows {
        println!(
            "{:<11} {:>6} {:>7} {:>12.0} {:>8.1} {:>8.1} {:>8.1} {:>6} {:>10.0} {:>8.0}",
            r.topology,
            r.orders,
            r.clients,
            r.intake_req_per_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.duplicates_suppressed,
            r.e2e_orders_per_s,
            r.peak_rss_mb
        );
    }
    let out = env_or(
        "BENCH_JSON",
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-pipeline.json"),
    );
    std::fs::write(&out, serde_json::to_vec_pretty(&rows)?)?;
    eprintln!("written to {out}");
    Ok(())
}

/// Whether every order is fulfilled; an error once 600 s have passed since `start`.
async fn all_fulfilled(store: &Store, orders: usize, start: Instant) -> anyhow::Result<bool> {
    let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'fulfilled'")
        .fetch_one(&store.pool)
        .await?;
    anyhow::ensure!(
        start.elapsed() < Duration::from_secs(600),
        "only {done} of {orders} fulfilled after 600 s"
    );
    Ok(done as usize >= orders)
}

/// Peak RSS (VmHWM) of a process, in MB.
fn peak_rss_mb(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn run(
    topology: &str,
    workers: usize,
    orders: usize,
    conc: usize,
    dup_every: usize,
) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let shared = topology.starts_with("pg-");
    let (store_url, pg) = if !shared {
        (format!("sqlite://{}/bench.db", dir.path().display()), None)
    } else {
        let admin_url = env_or(
            "BENCH_POSTGRES",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let admin = Store::connect(&admin_url, 1).await?;
        let name = format!(
            "fulfilld_bench_{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin.pool)
            .await?;
        let mut u = url::Url::parse(&admin_url)?;
        u.set_path(&format!("/{name}"));
        (u.to_string(), Some((admin, name)))
    };
    let app_l = TcpListener::bind("127.0.0.1:0").await?;
    let sb_l = TcpListener::bind("127.0.0.1:0").await?;
    let app = format!("http://{}", app_l.local_addr()?);
    let sb = format!("http://{}", sb_l.local_addr()?);
    let outbox = dir.path().join("outbox");
    let prefix = format!(
        "fulfilld_bench_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let mut env: Vec<(String, String)> = [
        ("FULFILLD__STORE__URL", store_url.clone()),
        ("FULFILLD__ADMIN__TOKEN", "bench".into()),
        ("FULFILLD__PROVIDERS__STRIPE__API_BASE", sb.clone()),
        (
            "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS",
            SECRET.into(),
        ),
        ("FULFILLD__SANDBOX__WEBHOOK_TARGET", app.clone()),
        ("FULFILLD__EMAIL__OUTBOX_DIR", outbox.display().to_string()),
        (
            "FULFILLD__SANDBOX__PAYPAL_CERT_FILE",
            dir.path().join("paypal-cert.pem").display().to_string(),
        ),
        (
            "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE",
            dir.path().join("paypal-cert.pem").display().to_string(),
        ),
        (
            "FULFILLD__ENTITLEMENTS__GRANTS__SEAT__FEATURE",
            "pass".into(),
        ),
        // The load generator is one client.
        ("FULFILLD__API__RATE_LIMIT_PER_MINUTE", "0".into()),
        ("FULFILLD__ENTITLEMENTS__COOKIE_SECRET", "bench".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if shared {
        let queue = if topology.starts_with("pg-notify") {
            store_url.clone()
        } else {
            env_or("BENCH_REDIS", "redis://127.0.0.1:6379")
        };
        env.push(("FULFILLD__QUEUE__URL".into(), queue));
        env.push(("FULFILLD__QUEUE__PREFIX".into(), prefix.clone()));
    }
    // FULFILLD__* from the environment override the above, for tuning runs.
    env.extend(std::env::vars().filter(|(k, _)| k.starts_with("FULFILLD__")));
    let config = Config::load_from(None, &env, false)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let sb_task = tokio::spawn(fulfilld::sandbox::run(
        config.clone(),
        sb_l,
        wait(stop_rx.clone()),
    ));
    let intake_only = topology.ends_with("-intake");
    let role = if !shared && !intake_only {
        Role::Serve
    } else {
        Role::Intake
    };
    let app_task = tokio::spawn(fulfilld::run_role(
        role,
        config.clone(),
        app_l,
        wait(stop_rx.clone()),
    ));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()?;
    while http.get(format!("{app}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut children = Vec::new();
    for _ in 0..workers {
        let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .arg("work")
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("FULFILLD__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", env_or("BENCH_WORKER_LOG", "warn"))
            .kill_on_drop(true)
            .spawn()?;
        while http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        children.push(child);
    }
    // Setup (not timed): catalogue, orders, checkouts, and paid sessions whose webhooks the
    // sandbox holds back; we deliver them ourselves below.
    let setup = Instant::now();
    let r = http
        .put(format!("{app}/api/admin/skus/SEAT"))
        .bearer_auth("bench")
        .json(&json!({"name": "Seat", "price_minor": 1000, "currency": "usd", "stock": orders}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "put sku: {}", r.status());
    // The signed-and-held completion event of each paid checkout.
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::with_capacity(orders)));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc.min(16) {
        let (http, app, sb, bodies, next) = (
            http.clone(),
            app.clone(),
            sb.clone(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < orders {
                let o: Value = http
                    .post(format!("{app}/api/orders"))
                    .json(&json!({"customer_email": "bench@example.com", "items": [{"sku": "SEAT", "qty": 1}]}))
                    .send().await?.json().await?;
                let id = o["id"].as_str().unwrap_or_default().to_owned();
                let co: Value = http
                    .post(format!("{app}/api/payments/create-order"))
                    .header("x-buyer-token", o["buyer_token"].as_str().unwrap_or_default())
                    .json(&json!({"order_id": id, "provider": "stripe"}))
                    .send().await?.json().await?;
                let session = co["provider_order_id"].as_str().unwrap_or_default().to_owned();
                let paid: Value = http
                    .post(format!("{sb}/sandbox/stripe/checkout/sessions/{session}/pay"))
                    .json(&json!({"webhook": "none"}))
                    .send().await?.json().await?;
                bodies.lock().await.push(serde_json::to_vec(&paid["event"])?);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let events = Arc::new(std::mem::take(&mut *bodies.lock().await));
    eprintln!(
        "setup: {} paid checkouts in {:.1?}",
        events.len(),
        setup.elapsed()
    );

    // Timed: deliver every event, every `dup_every`-th one twice, `conc` at a time.
    let deliveries: Arc<Vec<usize>> = Arc::new(
        (0..events.len())
            .flat_map(|i| {
                let twice = i % dup_every == 0;
                std::iter::repeat_n(i, if twice { 2 } else { 1 })
            })
            .collect(),
    );
    let dups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let start_ms = fulfilld::clock::now_ms();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, app, events, next, deliveries, dups) = (
            http.clone(),
            app.clone(),
            events.clone(),
            next.clone(),
            deliveries.clone(),
            dups.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = deliveries.get(i).and_then(|&e| events.get(e)) else {
                    break;
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs() as i64;
                let t = Instant::now();
                let r = http
                    .post(format!("{app}/webhooks/stripe"))
                    .header("stripe-signature", sign(SECRET, now, body))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "webhook: {}", r.status());
                lat.push(t.elapsed());
                let answer: Value = r.json().await?;
                if answer["duplicate"] == true {
                    dups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(orders);
    for t in tasks {
        lat.extend(t.await??);
    }
    let intake = start.elapsed();
    let store = Store::connect(&store_url, 2).await?;
    // Every order followed to fulfilled (not for an intake alone: nothing runs the steps).
    // The end is when the last order turned fulfilled (its `updated_at`), so the poll can be
    // slow: polling often would load the store it measures.
    while !intake_only && !all_fulfilled(&store, orders, start).await? {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last: Option<i64> =
        sqlx::query_scalar("SELECT MAX(updated_at) FROM orders WHERE status = 'fulfilled'")
            .fetch_one(&store.pool)
            .await?;
    let e2e = Duration::from_millis(last.map_or(0, |l| (l - start_ms).max(1)) as u64);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let peak = if workers == 0 {
        peak_rss_mb("self")
    } else {
        children
            .iter()
            .filter_map(|c| c.id())
            .map(|pid| peak_rss_mb(&pid.to_string()))
            .fold(0.0, f64::max)
    };
    let row = Row {
        topology: topology.to_owned(),
        orders,
        clients: conc,
        requests: lat.len(),
        intake_req_per_s: lat.len() as f64 / intake.as_secs_f64(),
        p50_ms: ms(pct(0.5)),
        p99_ms: ms(pct(0.99)),
        max_ms: ms(lat[lat.len() - 1]),
        duplicates_suppressed: dups.load(std::sync::atomic::Ordering::Relaxed),
        e2e_orders_per_s: if intake_only {
            0.0
        } else {
            orders as f64 / e2e.as_secs_f64()
        },
        peak_rss_mb: peak,
    };
    store.pool.close().await;
    for mut c in children {
        let _ = c.kill().await;
    }
    let _ = stop_tx.send(true);
    let _ = app_task.await;
    let _ = sb_task.await;
    if let Some((admin, name)) = pg {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin.pool)
        .await?;
    }
    if shared {
        let client = redis::Client::open(env_or("BENCH_REDIS", "redis://127.0.0.1:6379"))?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = jobs::StepKind::ALL
            .iter()
            .map(|k| format!("{prefix}:wake:{}", k.as_str()))
            .chain([format!("{prefix}:epoch")])
            .collect();
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<i64>(&mut c)
            .await?;
    }
    Ok(row)
}
