//! Throughput of the embedded engine, in-process over loopback: signed Stripe webhooks for
//! pre-created, paid checkouts are fired at the intake by `BENCH_CONC` concurrent clients,
//! and every order is followed to `fulfilled`. Prints intake requests/s with p50/p99/max
//! latency and end-to-end orders/s (first webhook to last order fulfilled).
//!
//! ```sh
//! cargo bench --bench pipeline                                   # SQLite, 1000 orders, 64 clients
//! BENCH_STORE=postgres://postgres@127.0.0.1:5432/postgres BENCH_ORDERS=2000 cargo bench --bench pipeline
//! ```
//! With a Postgres URL, a throwaway database is created beside the one named, and dropped.
//! `FULFILLD__*` variables override the engine's settings (e.g. `FULFILLD__QUEUE__CONCURRENCY`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fulfilld::config::Config;
use fulfilld::providers::stripe::sign;
use fulfilld::store::Store;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const SECRET: &str = "whsec_bench";

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: usize = env_or("BENCH_ORDERS", "1000").parse()?;
    let conc: usize = env_or("BENCH_CONC", "64").parse()?;
    let store_arg = env_or("BENCH_STORE", "sqlite");
    let dir = tempfile::tempdir()?;
    let (store_url, pg) = if store_arg == "sqlite" {
        (format!("sqlite://{}/bench.db", dir.path().display()), None)
    } else {
        let admin = Store::connect(&store_arg, 1).await?;
        let name = format!(
            "fulfilld_bench_{}",
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin.pool)
            .await?;
        let mut u = url::Url::parse(&store_arg)?;
        u.set_path(&format!("/{name}"));
        (u.to_string(), Some((admin, name)))
    };
    let app_l = TcpListener::bind("127.0.0.1:0").await?;
    let sb_l = TcpListener::bind("127.0.0.1:0").await?;
    let app = format!("http://{}", app_l.local_addr()?);
    let sb = format!("http://{}", sb_l.local_addr()?);
    let outbox = dir.path().join("outbox");
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
            "FULFILLD__ENTITLEMENTS__GRANTS__SEAT__FEATURE",
            "pass".into(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
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
    let app_task = tokio::spawn(fulfilld::run(config.clone(), app_l, wait(stop_rx.clone())));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()?;
    while http.get(format!("{app}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
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

    // Timed: deliver every event once, `conc` at a time.
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, app, events, next) = (http.clone(), app.clone(), events.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = events.get(i) else {
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
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'fulfilled'")
                .fetch_one(&store.pool)
                .await?;
        if done as usize >= orders {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "only {done} of {orders} fulfilled after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e2e = start.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!("store      orders  clients  intake req/s  p50      p99      max      e2e orders/s");
    println!(
        "{:<10} {:<7} {:<8} {:<13.0} {:<8.1?} {:<8.1?} {:<8.1?} {:.0}",
        if pg.is_some() { "postgres" } else { "sqlite" },
        orders,
        conc,
        orders as f64 / intake.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        orders as f64 / e2e.as_secs_f64(),
    );
    store.pool.close().await;
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
    Ok(())
}
