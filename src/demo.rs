//! `fulfilld demo`: the engine (`serve`, on SQLite in a fresh directory of its own) and the
//! provider sandbox in one process, and a scripted shop day against them across Stripe,
//! Razorpay and PayPal: happy paths, a webhook delivered twice, a late webhook that the
//! browser's verify call overtakes, a failed payment, a refund, and three buyers racing for
//! the last seat. It prints what happened as a table, then keeps the dashboard up until
//! Ctrl-C (`--exit`: stop at once).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{Config, Grant, Transport};
use crate::{Role, run_role};

struct Shop {
    http: reqwest::Client,
    app: String,
    sandbox: String,
    token: String,
}

impl Shop {
    async fn call(
        &self,
        method: &str,
        url: String,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self
            .http
            .request(method.parse()?, &url)
            .bearer_auth(&self.token)
            .header("x-fulfilld-actor", "demo");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.with_context(|| format!("{method} {url}"))?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, v) = self
            .call(method, format!("{}{path}", self.app), Some(body))
            .await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {v}");
        }
        Ok(v)
    }

    async fn sandbox(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, v) = self
            .call("POST", format!("{}{path}", self.sandbox), Some(body))
            .await?;
        if status != 200 {
            bail!("sandbox {path}: {status} {v}");
        }
        Ok(v)
    }

    /// An order for `qty` of `sku`, and its checkout at `provider`.
    async fn checkout(
        &self,
        email: &str,
        sku: &str,
        qty: i64,
        provider: &str,
    ) -> anyhow::Result<(String, Value)> {
        let o = self
            .api(
                "POST",
                "/api/orders",
                json!({"customer_email": email, "items": [{"sku": sku, "qty": qty}]}),
            )
            .await?;
        let id = o["id"].as_str().unwrap_or_default().to_owned();
        // As the order's buyer, with its buyer token.
        let r = self
            .http
            .post(format!("{}/api/payments/create-order", self.app))
            .header("x-buyer-token", s(&o["buyer_token"]))
            .json(&json!({"order_id": id, "provider": provider}))
            .send()
            .await
            .context("POST /api/payments/create-order")?;
        let status = r.status().as_u16();
        let co: Value = r.json().await.unwrap_or(Value::Null);
        if status != 201 {
            bail!("POST /api/payments/create-order: {status} {co}");
        }
        Ok((id, co))
    }

    /// The order once it is in one of `done` with nothing left to run (60 s at most).
    async fn settled(&self, id: &str, done: &[&str]) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, o) = self
                .call("GET", format!("{}/api/orders/{id}", self.app), None)
                .await?;
            let status = o["status"].as_str().unwrap_or_default();
            if done.contains(&status) && o["waiting_on"].is_null() {
                return Ok(o);
            }
            if Instant::now() > deadline {
                bail!("order {id} did not settle: {o}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Runs the demo until `shutdown` (or, with `exit`, right after the shop day).
pub async fn run(
    mut config: Config,
    exit: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "fulfilld-demo-{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let app_l = TcpListener::bind(&config.http.addr)
        .await
        .with_context(|| format!("http.addr: cannot listen on {}", config.http.addr))?;
    let sb_l = TcpListener::bind(&config.sandbox.addr)
        .await
        .with_context(|| format!("sandbox.addr: cannot listen on {}", config.sandbox.addr))?;
    let app = format!("http://{}", app_l.local_addr()?);
    let sandbox = format!("http://{}", sb_l.local_addr()?);
    // Everything the demo writes stays in its directory; the two halves find each other.
    config.store.url = format!("sqlite://{}/demo.db", dir.display());
    config.email.transport = Transport::File;
    config.email.outbox_dir = dir.join("outbox");
    let cert = dir.join("paypal-cert.pem").display().to_string();
    config.sandbox.paypal_cert_file = cert.clone();
    config.providers.paypal.webhook_cert_file = cert;
    config.sandbox.webhook_target = app.clone();
    config.providers.stripe.api_base = sandbox.clone();
    config.providers.razorpay.api_base = sandbox.clone();
    config.providers.paypal.api_base = sandbox.clone();
    config.checkout.success_url = format!("{app}/checkout/success?order={{order_id}}");
    config.checkout.cancel_url = format!("{app}/checkout/cancel?order={{order_id}}");
    config.api.rate_limit_per_minute = 0;
    if config.admin.token.is_empty() {
        use rand::Rng;
        config.admin.token = hex::encode(rand::rng().random::<[u8; 16]>()).into();
    }
    if config.entitlements.cookie_secret.is_empty() {
        use rand::Rng;
        config.entitlements.cookie_secret = hex::encode(rand::rng().random::<[u8; 24]>()).into();
    }
    config.entitlements.grants.insert(
        "SEAT".into(),
        Grant {
            feature: "conference-pass".into(),
            duration_days: Some(30),
        },
    );
    let token = config.admin.token.expose().to_owned();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let sb = tokio::spawn(crate::sandbox::run(
        config.clone(),
        sb_l,
        stopped(stop_rx.clone()),
    ));
    let engine = tokio::spawn(run_role(
        Role::Serve,
        config,
        app_l,
        stopped(stop_rx.clone()),
    ));
    let shop = Shop {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        app: app.clone(),
        sandbox,
        token: token.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        shop.call("GET", format!("{app}/readyz"), None).await,
        Ok((200, _))
    ) {
        if Instant::now() > deadline {
            bail!("the engine did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "fulfilld demo: engine {app}, sandbox {}, data in {}",
        shop.sandbox,
        dir.display()
    );
    let rows = shop_day(&shop).await?;
    println!();
    print!(
        "{}",
        crate::admin::cli::table(
            &rows,
            &[
                ("SCENARIO", "scenario"),
                ("PROVIDER", "provider"),
                ("ORDER", "order"),
                ("STATUS", "status"),
                ("WHAT HAPPENED", "detail"),
            ],
        )
    );
    println!("\ndashboard: {app}/admin   admin token: {token}");
    println!("checkout:  {app}/checkout");
    if !exit {
        println!("(Ctrl-C to stop)");
        shutdown.await;
    }
    let _ = stop_tx.send(true);
    engine.await??;
    sb.await??;
    Ok(())
}

/// The shop day; one summary row (scenario, provider, order, status, detail) per outcome.
async fn shop_day(shop: &Shop) -> anyhow::Result<Vec<Value>> {
    for (sku, name, price, stock) in [
        ("SEAT", "Conference seat", 4900, 20),
        ("MUG", "Conference mug", 1500, 50),
        ("LAST", "Last front-row seat", 9900, 1),
    ] {
        shop.api(
            "PUT",
            &format!("/api/admin/skus/{sku}"),
            json!({"name": name, "price_minor": price, "currency": "usd", "stock": stock}),
        )
        .await?;
    }
    let mut rows = Vec::new();
    let row = |scenario: &str, provider: &str, o: &Value, detail: String| {
        json!({"scenario": scenario, "provider": provider, "order": o["id"],
               "status": o["status"], "detail": detail})
    };

    // Stripe, the happy path: paid on the provider's page, the webhook comes once.
    let (id, co) = shop
        .checkout("ada@example.com", "SEAT", 1, "stripe")
        .await?;
    let session = s(&co["provider_order_id"]);
    shop.sandbox(
        &format!("/sandbox/stripe/checkout/sessions/{session}/pay"),
        json!({}),
    )
    .await?;
    let happy = shop.settled(&id, &["fulfilled"]).await?;
    rows.push(row(
        "happy path",
        "stripe",
        &happy,
        "receipt sent, invoice issued, access granted".into(),
    ));

    // The same webhook delivered twice: fulfilled once.
    let (id, co) = shop.checkout("bob@example.com", "MUG", 2, "stripe").await?;
    let session = s(&co["provider_order_id"]);
    let paid = shop
        .sandbox(
            &format!("/sandbox/stripe/checkout/sessions/{session}/pay"),
            json!({"webhook": "twice"}),
        )
        .await?;
    let o = shop.settled(&id, &["fulfilled"]).await?;
    let deliveries = paid["deliveries"].as_array().map_or(0, Vec::len);
    let runs = o["steps"][0]["attempts"].as_i64().unwrap_or(0);
    rows.push(row(
        "duplicate webhook",
        "stripe",
        &o,
        format!("{deliveries} deliveries, capture confirmed {runs} time(s)"),
    ));

    // The webhook is 3 s late; the buyer's browser verifies first.
    let (id, co) = shop
        .checkout("cleo@example.com", "SEAT", 1, "stripe")
        .await?;
    let session = s(&co["provider_order_id"]);
    shop.sandbox(
        &format!("/sandbox/stripe/checkout/sessions/{session}/pay"),
        json!({"delay_ms": 3000}),
    )
    .await?;
    let v = shop
        .api(
            "POST",
            "/api/payments/verify",
            json!({"order_id": id, "provider": "stripe", "payload": {"session_id": session}}),
        )
        .await?;
    let o = shop.settled(&id, &["fulfilled"]).await?;
    rows.push(row(
        "late webhook",
        "stripe",
        &o,
        format!(
            "the browser's verify said {} before the 3 s late webhook came",
            s(&v["status"])
        ),
    ));

    // Razorpay: Checkout.js pays, the webhook comes.
    let (id, co) = shop
        .checkout("dev@example.com", "SEAT", 1, "razorpay")
        .await?;
    let rz = s(&co["provider_order_id"]);
    shop.sandbox(&format!("/sandbox/razorpay/orders/{rz}/pay"), json!({}))
        .await?;
    let o = shop.settled(&id, &["fulfilled"]).await?;
    rows.push(row(
        "happy path",
        "razorpay",
        &o,
        "payment captured by the pipeline".into(),
    ));

    // PayPal: the buyer approves, the engine captures.
    let (id, co) = shop.checkout("eve@example.com", "MUG", 1, "paypal").await?;
    let pp = s(&co["provider_order_id"]);
    shop.sandbox(&format!("/sandbox/paypal/orders/{pp}/approve"), json!({}))
        .await?;
    let o = shop.settled(&id, &["fulfilled"]).await?;
    rows.push(row(
        "happy path",
        "paypal",
        &o,
        "approved, captured, fulfilled".into(),
    ));

    // A capture PayPal declines: the stock held for it goes back. (At Razorpay a failed
    // attempt leaves the order payable: the buyer may try again on it.)
    let (id, co) = shop
        .checkout("finn@example.com", "MUG", 3, "paypal")
        .await?;
    let pp = s(&co["provider_order_id"]);
    shop.sandbox(
        &format!("/sandbox/paypal/orders/{pp}/approve"),
        json!({"capture": "declined"}),
    )
    .await?;
    let o = shop.settled(&id, &["payment_failed"]).await?;
    let (_, products) = shop
        .call("GET", format!("{}/api/products", shop.app), None)
        .await?;
    let mugs = products["products"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["sku"] == "MUG")
        .map_or(-1, |p| p["available"].as_i64().unwrap_or(-1));
    rows.push(row(
        "failed payment",
        "paypal",
        &o,
        format!("its 3 mugs released: {mugs} available"),
    ));

    // The first buyer asks for her money back.
    let refund = shop
        .api(
            "POST",
            "/api/payments/refund",
            json!({"order_id": happy["id"], "reason": "cannot attend"}),
        )
        .await?;
    let o = shop.settled(&s(&happy["id"]), &["refunded"]).await?;
    let (_, record) = shop
        .call(
            "GET",
            format!("{}/api/admin/orders/{}", shop.app, s(&happy["id"])),
            None,
        )
        .await?;
    let revoked = record["entitlements"]
        .as_array()
        .is_some_and(|g| !g.is_empty() && g.iter().all(|g| !g["revoked_at"].is_null()));
    rows.push(row(
        "refund",
        "stripe",
        &o,
        format!(
            "credit note {}, access {}",
            s(&refund["credit_note_number"]),
            if revoked { "revoked" } else { "kept" }
        ),
    ));

    // Three buyers race for the last seat: one holds it, two are told it is gone.
    let mut racers = Vec::new();
    for who in ["gus", "hana", "ivo"] {
        let o = shop
            .api("POST", "/api/orders", json!({"customer_email": format!("{who}@example.com"), "items": [{"sku": "LAST", "qty": 1}]}))
            .await?;
        racers.push((s(&o["id"]), s(&o["buyer_token"])));
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(racers.len()));
    let mut tasks = Vec::new();
    for (id, buyer_token) in &racers {
        let (http, url, id, buyer_token, barrier) = (
            shop.http.clone(),
            shop.app.clone(),
            id.clone(),
            buyer_token.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let r = http
                .post(format!("{url}/api/payments/create-order"))
                .header("x-buyer-token", buyer_token)
                .json(&json!({"order_id": id, "provider": "stripe"}))
                .send()
                .await?;
            let status = r.status().as_u16();
            anyhow::Ok((id, status, r.json::<Value>().await.unwrap_or(Value::Null)))
        }));
    }
    let mut sold_out = 0;
    for t in tasks {
        let (id, status, co) = t.await??;
        if status == 201 {
            let session = s(&co["provider_order_id"]);
            shop.sandbox(
                &format!("/sandbox/stripe/checkout/sessions/{session}/pay"),
                json!({}),
            )
            .await?;
            let o = shop.settled(&id, &["fulfilled"]).await?;
            rows.push(row(
                "last seat race",
                "stripe",
                &o,
                "won the last seat".into(),
            ));
        } else if co["error"]["code"] == "out_of_stock" {
            sold_out += 1;
        } else {
            bail!("last seat race: {status} {co}");
        }
    }
    let others = json!({"id": format!("{sold_out} others"), "status": "out_of_stock"});
    rows.push(row(
        "last seat race",
        "stripe",
        &others,
        "told at checkout, nothing charged".into(),
    ));
    Ok(rows)
}
