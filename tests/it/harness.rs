//! `spawn()`: the engine and the sandbox on random ports, wired to each other, on a fresh
//! store of the requested backend — built by the same `fulfilld::run` that `serve` uses.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fulfilld::config::Config;
use fulfilld::store::Store;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const WEBHOOK_SECRET: &str = "whsec_test_suite";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for an `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        pub mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        pub mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            )*
        }
    };
}

pub struct TestApp {
    pub url: String,
    pub config: Config,
    pub sandbox: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub outbox: PathBuf,
    _dir: tempfile::TempDir,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pg_db: Option<String>,
    /// The engine as a separate `fulfilld serve` process ([`spawn_process`]), and the
    /// environment it is started with.
    child: Option<tokio::process::Child>,
    env: Vec<(String, String)>,
    /// The buyer token of each order [`TestApp::create_order`] made.
    buyer_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

fn postgres_admin_url() -> String {
    std::env::var("FULFILLD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn fresh_postgres() -> (String, String) {
    let admin = postgres_admin_url();
    let name = format!(
        "fulfilld_t_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    );
    let store = Store::connect(&admin, 1).await.unwrap_or_else(|e| {
        panic!(
            "Postgres tests need a server at {admin} (set FULFILLD_TEST_POSTGRES, or run \
             scripts/test, which finds or starts one): {e}"
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&store.pool)
        .await
        .expect("create test database");
    store.pool.close().await;
    let mut url = url::Url::parse(&admin).expect("postgres url");
    url.set_path(&format!("/{name}"));
    (url.to_string(), name)
}

/// Starts sandbox + engine. `extra` holds more `FULFILLD__…` settings.
pub async fn spawn(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    start(backend, extra, Engine::InProcess).await
}

/// Sandbox and store only: the test starts `fulfilld intake` / `work` processes itself
/// ([`TestApp::start_role`]); the sandbox's webhooks go to `url`, where the test should start
/// an intake.
pub async fn spawn_bare(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    start(backend, extra, Engine::None).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    InProcess,
    Serve,
    None,
}

/// The Redis the tests share (`FULFILLD_TEST_REDIS`, set by scripts/test; default the
/// standard local port). Each test keeps to its own key prefix ([`fresh_prefix`]).
pub fn redis_url() -> String {
    std::env::var("FULFILLD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn fresh_prefix() -> String {
    format!(
        "fulfilld_t_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// The queue backend the tests' engines use, from `FULFILLD_TEST_QUEUE`: `memory` (the
/// default: in-process), `redis` (the shared Redis, under a fresh key prefix) or `notify`
/// (Postgres notifications on the test's own database; a SQLite test, which has no
/// Postgres, keeps the in-process queue). A test that sets its own queue still wins.
fn queue_env(backend: Backend, store_url: &str) -> Vec<(String, String)> {
    let chosen = std::env::var("FULFILLD_TEST_QUEUE").unwrap_or_default();
    let url = match chosen.as_str() {
        "" | "memory" => return Vec::new(),
        "redis" => redis_url(),
        "notify" if backend == Backend::Postgres => store_url.to_owned(),
        "notify" => return Vec::new(),
        other => panic!("FULFILLD_TEST_QUEUE={other:?}: say memory, redis or notify"),
    };
    vec![
        ("FULFILLD__QUEUE__URL".to_owned(), url),
        ("FULFILLD__QUEUE__PREFIX".to_owned(), fresh_prefix()),
    ]
}

/// A free port on loopback (bound, read, released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `fulfilld intake|work|serve` child process ([`TestApp::start_role`]).
pub struct RoleProcess {
    pub url: String,
    pub log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl RoleProcess {
    /// SIGKILL: no shutdown, no cleanup, whatever it was doing.
    pub async fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("SIGKILL");
        }
    }

    /// SIGTERM, then waits for the process to exit; returns whether it exited cleanly.
    pub async fn sigterm(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let pid = c.id().expect("pid").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(60), c.wait())
            .await
            .expect("exits within a minute of SIGTERM")
            .expect("wait");
        status.success()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// [`spawn`] with the engine as a real `fulfilld serve` process (its log in the test's
/// temp dir), so a test can SIGKILL it and start another on the same port and store.
pub async fn spawn_process(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    start(backend, extra, Engine::Serve).await
}

async fn start(backend: Backend, extra: &[(&str, &str)], engine: Engine) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store_url, pg_db) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}/fulfilld.db", dir.path().display()),
            None,
        ),
        Backend::Postgres => {
            let (u, n) = fresh_postgres().await;
            (u, Some(n))
        }
    };
    let app_l = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let sb_l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sandbox");
    let url = format!("http://{}", app_l.local_addr().expect("addr"));
    let sandbox = format!("http://{}", sb_l.local_addr().expect("addr"));
    let outbox = dir.path().join("outbox");
    let paypal_cert = dir.path().join("paypal-cert.pem");
    let paypal_cert = paypal_cert.to_str().expect("utf-8 path");
    let mut env: Vec<(String, String)> = [
        ("FULFILLD__STORE__URL", store_url.as_str()),
        ("FULFILLD__ADMIN__TOKEN", ADMIN_TOKEN),
        ("FULFILLD__PROVIDERS__STRIPE__API_BASE", sandbox.as_str()),
        ("FULFILLD__PROVIDERS__RAZORPAY__API_BASE", sandbox.as_str()),
        ("FULFILLD__PROVIDERS__PAYPAL__API_BASE", sandbox.as_str()),
        ("FULFILLD__SANDBOX__PAYPAL_CERT_FILE", paypal_cert),
        (
            "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE",
            paypal_cert,
        ),
        (
            "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS",
            WEBHOOK_SECRET,
        ),
        (
            "FULFILLD__EMAIL__OUTBOX_DIR",
            outbox.to_str().expect("utf-8 path"),
        ),
        ("FULFILLD__QUEUE__SWEEP_INTERVAL_MS", "200"),
        // A scheduled reconciliation would read the sandbox at start; tests ask for one.
        ("FULFILLD__RECONCILIATION__INTERVAL_SECS", "0"),
        // Tests verify in quick succession; the throttle has a test of its own.
        ("FULFILLD__CHECKOUT__VERIFY_MIN_INTERVAL_MS", "0"),
        (
            "FULFILLD__ENTITLEMENTS__GRANTS__SEAT__FEATURE",
            "conference-pass",
        ),
        ("FULFILLD__ENTITLEMENTS__GRANTS__SEAT__DURATION_DAYS", "30"),
        ("FULFILLD__INVOICE__TAX_RATE_BPS", "2000"),
        // Every request of a test comes from 127.0.0.1; the limits have tests of their own.
        ("FULFILLD__API__RATE_LIMIT_PER_MINUTE", "0"),
        // Else kept in data/ of the working directory: the crate's, for an in-process engine.
        (
            "FULFILLD__ENTITLEMENTS__COOKIE_SECRET",
            "test-cookie-secret",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.push(("FULFILLD__SANDBOX__WEBHOOK_TARGET".into(), url.clone()));
    env.push((
        "FULFILLD__HTTP__ADDR".into(),
        url.trim_start_matches("http://").to_owned(),
    ));
    env.extend(queue_env(backend, &store_url));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::load_from(None, &env, false).expect("test config");

    let (stop_sb, rx_sb) = oneshot::channel::<()>();
    let (stop_app, rx_app) = oneshot::channel::<()>();
    let sb_task = tokio::spawn({
        let config = config.clone();
        async move {
            fulfilld::sandbox::run(config, sb_l, async move {
                let _ = rx_sb.await;
            })
            .await
            .expect("sandbox runs");
        }
    });
    let store = fulfilld::open_store(&config).await.expect("store opens");
    let mut stop = vec![stop_sb];
    let mut tasks = vec![sb_task];
    if engine == Engine::InProcess {
        stop.insert(0, stop_app);
        tasks.insert(0, start_engine(config.clone(), app_l, rx_app));
    } else {
        drop((app_l, rx_app, stop_app));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut app = TestApp {
        url,
        config,
        sandbox,
        http,
        store,
        outbox,
        _dir: dir,
        stop,
        tasks,
        pg_db,
        child: None,
        env,
        buyer_tokens: Default::default(),
    };
    match engine {
        Engine::Serve => app.start_engine_process().await,
        Engine::InProcess => app.wait_healthy().await,
        Engine::None => {}
    }
    app
}

fn start_engine(
    config: Config,
    listener: TcpListener,
    stop: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        fulfilld::run(config, listener, async move {
            let _ = stop.await;
        })
        .await
        .expect("engine runs");
    })
}

impl TestApp {
    /// Stops the engine (graceful shutdown) and starts a new one on the same store, as a
    /// deploy or a crash-and-restart would. The sandbox keeps running.
    pub async fn restart_engine(&mut self) {
        let _ = self.stop.remove(0).send(());
        self.tasks.remove(0).await.expect("engine stops cleanly");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        self.url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = oneshot::channel();
        self.stop.insert(0, stop);
        self.tasks
            .insert(0, start_engine(self.config.clone(), listener, rx));
        self.wait_healthy().await;
    }

    /// Starts one more engine in this process on the same store (its own port, queue,
    /// workers and sweeper), as a second `serve` process beside the first would run.
    /// Returns its URL once it answers.
    pub async fn start_another_engine(&mut self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, rx) = oneshot::channel();
        self.stop.push(stop);
        self.tasks
            .push(start_engine(self.config.clone(), listener, rx));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "{url} did not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        url
    }

    /// Starts `fulfilld serve` as a process on this app's port and store, and waits until
    /// it answers.
    pub async fn start_engine_process(&mut self) {
        assert!(self.child.is_none(), "an engine process is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._dir.path().join("engine.log"))
            .expect("engine log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .arg("serve")
            .current_dir(self._dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start fulfilld serve");
        self.child = Some(child);
        self.wait_healthy().await;
    }

    /// Starts `fulfilld <role> <args…>` with this app's environment plus `extra`, listening
    /// on `addr` (default: a free port), and waits until its `/healthz` answers.
    pub async fn start_role(
        &self,
        role: &str,
        args: &[&str],
        addr: Option<&str>,
        extra: &[(&str, &str)],
    ) -> RoleProcess {
        let addr = match addr {
            Some(a) => a.trim_start_matches("http://").to_owned(),
            None => format!("127.0.0.1:{}", free_port().await),
        };
        let log = self
            ._dir
            .path()
            .join(format!("{role}-{}.log", addr.replace([':', '.'], "_")));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("role log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
            .arg(role)
            .args(args)
            .current_dir(self._dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,sqlx=warn")
            .envs(extra.iter().copied())
            .env("FULFILLD__HTTP__ADDR", &addr)
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start fulfilld");
        let p = RoleProcess {
            url: format!("http://{addr}"),
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", p.url)).send().await
                && r.status().is_success()
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "fulfilld {role} did not answer:\n{}",
                p.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the engine process: no shutdown, no cleanup, whatever it was doing.
    pub async fn kill_engine_process(&mut self) {
        let mut child = self.child.take().expect("an engine process");
        child.kill().await.expect("SIGKILL");
    }

    /// The directory the engine and its processes run in.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The engine process's log so far.
    pub fn engine_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Makes the sandbox's next Stripe API calls fail as listed (statuses, "timeout", "hang").
    pub async fn inject_api_errors_json(&self, faults: Value) {
        self.sandbox_post("/sandbox/stripe/faults", json!({ "api_errors": faults }))
            .await;
    }

    /// Makes the sandbox's next Stripe API calls fail with these statuses.
    pub async fn inject_api_errors(&self, statuses: &[u16]) {
        self.sandbox_post("/sandbox/stripe/faults", json!({ "api_errors": statuses }))
            .await;
    }

    /// Polls `sql` (a count) until `ok` holds for it, for at most `limit`; a timeout fails
    /// with `logs()`. A query that fails (the store restarting) reads as -1.
    pub async fn until_count(
        &self,
        what: &str,
        sql: &'static str,
        ok: impl Fn(i64) -> bool,
        limit: Duration,
        logs: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(&self.store.pool)
                .await
                .unwrap_or(-1);
            if ok(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {what} (last {n}); logs:\n{}",
                logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the order until `pred` holds for it.
    pub async fn wait_until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = self.order(id).await;
            if pred(&o) {
                return o;
            }
            assert!(Instant::now() < deadline, "order {id}: never {what}: {o:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the engine answers its health check and the sandbox serves (it makes
    /// its PayPal signing key first).
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in [
            format!("{}/healthz", self.url),
            format!("{}/v1/notifications/certs/CERT-sandbox", self.sandbox),
        ] {
            loop {
                if let Ok(r) = self.http.get(&url).send().await
                    && r.status().is_success()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "{url} did not answer");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// [`TestApp::finish`] for an app shared with tasks that have all ended.
    pub async fn finish_shared(app: std::sync::Arc<TestApp>) {
        match std::sync::Arc::try_unwrap(app) {
            Ok(app) => app.finish().await,
            Err(_) => panic!("app still shared"),
        }
    }

    /// Stops engine and sandbox, and drops a Postgres test database.
    pub async fn finish(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("stop the engine process");
        }
        for s in self.stop.drain(..) {
            let _ = s.send(());
        }
        for t in self.tasks.drain(..) {
            t.await.expect("task ends cleanly");
        }
        self.store.pool.close().await;
        let q = &self.config.queue;
        if q.url.starts_with("redis") {
            let keys: Vec<String> = jobs::StepKind::ALL
                .iter()
                .map(|k| format!("{}:wake:{}", q.prefix, k.as_str()))
                .chain([format!("{}:epoch", q.prefix)])
                .collect();
            let del = async {
                let client = redis::Client::open(q.url.as_str()).ok()?;
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<i64>(&mut c)
                    .await
                    .ok()
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), del).await;
        }
        if let Some(db) = &self.pg_db
            && let Ok(admin) = Store::connect(&postgres_admin_url(), 1).await
        {
            let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&admin.pool)
                .await;
            admin.pool.close().await;
        }
    }

    pub async fn put_sku(&self, sku: &str, price_minor: i64, stock: i64) -> Value {
        let r = self
            .http
            .put(format!("{}/api/admin/skus/{sku}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": format!("{sku} item"), "price_minor": price_minor, "currency": "usd", "stock": stock}))
            .send()
            .await
            .expect("put sku");
        assert_eq!(r.status(), 200, "put sku");
        r.json().await.expect("json")
    }

    pub async fn create_order(&self, email: &str, items: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/api/orders", self.url))
            .json(&json!({"customer_email": email, "items": items}))
            .send()
            .await
            .expect("create order");
        assert_eq!(r.status(), 201, "create order");
        let order: Value = r.json().await.expect("json");
        let token = s(&order["buyer_token"]).to_owned();
        assert!(token.starts_with("bt_"), "{order}");
        self.buyer_tokens
            .lock()
            .expect("tokens")
            .insert(s(&order["id"]).to_owned(), token);
        order
    }

    /// The buyer token [`TestApp::create_order`] got for `order_id`.
    pub fn buyer_token(&self, order_id: &str) -> String {
        self.buyer_tokens
            .lock()
            .expect("tokens")
            .get(order_id)
            .cloned()
            .unwrap_or_else(|| panic!("no buyer token kept for {order_id}"))
    }

    /// `POST /api/payments/create-order` for the order with Stripe; returns status and body.
    pub async fn try_checkout(&self, order_id: &str) -> (u16, Value) {
        self.try_checkout_with(order_id, "stripe").await
    }

    /// As the order's buyer: with the buyer token [`TestApp::create_order`] got, if any.
    pub async fn try_checkout_with(&self, order_id: &str, provider: &str) -> (u16, Value) {
        let token = self
            .buyer_tokens
            .lock()
            .expect("tokens")
            .get(order_id)
            .cloned();
        let mut req = self
            .http
            .post(format!("{}/api/payments/create-order", self.url))
            .json(&json!({"order_id": order_id, "provider": provider}));
        if let Some(t) = token {
            req = req.header("x-buyer-token", t);
        }
        let r = req.send().await.expect("create-order");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    /// A new order of `qty` SEATs with an open checkout through `provider`: the order id
    /// and the create-order answer.
    pub async fn seat_checkout(&self, email: &str, qty: i64, provider: &str) -> (String, Value) {
        let order = self
            .create_order(email, json!([{"sku": "SEAT", "qty": qty}]))
            .await;
        let id = s(&order["id"]).to_owned();
        let (status, co) = self.try_checkout_with(&id, provider).await;
        assert_eq!(status, 201, "create-order: {co}");
        (id, co)
    }

    /// `on_hand` and `reserved` of a SKU.
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
        sqlx::query_as("SELECT on_hand, reserved FROM skus WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.store.pool)
            .await
            .expect("sku")
    }

    /// Opens a Stripe checkout for the order, which must succeed; returns the answer.
    pub async fn checkout(&self, order_id: &str) -> Value {
        let (status, body) = self.try_checkout(order_id).await;
        assert_eq!(status, 201, "create-order: {body}");
        body
    }

    /// POSTs JSON to the engine; returns status and body.
    /// An admin API call (bearer token); `body` None sends no body. Status and JSON body.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-fulfilld-actor", "test-operator");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect(path);
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    pub async fn post_api(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect(path);
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    /// The browser's `POST /api/payments/verify` with a Stripe session id.
    pub async fn verify(&self, order_id: &str, session_id: &str) -> (u16, Value) {
        let payload = json!({"session_id": session_id});
        self.verify_with(order_id, "stripe", payload).await
    }

    pub async fn verify_with(
        &self,
        order_id: &str,
        provider: &str,
        payload: Value,
    ) -> (u16, Value) {
        self.post_api(
            "/api/payments/verify",
            json!({"order_id": order_id, "provider": provider, "payload": payload}),
        )
        .await
    }

    /// Asks the sandbox to complete the session; returns its answer (event, deliveries).
    pub async fn pay(&self, session: &str, opts: Value) -> Value {
        self.sandbox_post(
            &format!("/sandbox/stripe/checkout/sessions/{session}/pay"),
            opts,
        )
        .await
    }

    /// Stripe's `POST /v1/checkout/sessions/{id}/expire`; the sandbox delivers
    /// `checkout.session.expired` before it answers (with the session).
    pub async fn expire_session(&self, session: &str) -> Value {
        let r = self
            .http
            .post(format!(
                "{}/v1/checkout/sessions/{session}/expire",
                self.sandbox
            ))
            .bearer_auth("sk_test_sandbox")
            .send()
            .await
            .expect("expire");
        assert_eq!(r.status(), 200, "expire");
        let v = r.json().await.expect("json");
        self.applied().await;
        v
    }

    pub async fn sandbox_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.sandbox))
            .send()
            .await
            .expect(path);
        assert_eq!(r.status(), 200, "sandbox {path}");
        r.json().await.expect("json")
    }

    /// An OAuth token from the PayPal sandbox, for calling its API directly.
    pub async fn paypal_token(&self) -> String {
        let t: Value = self
            .http
            .post(format!("{}/v1/oauth2/token", self.sandbox))
            .basic_auth(
                &self.config.providers.paypal.client_id,
                Some(self.config.providers.paypal.client_secret.expose()),
            )
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        s(&t["access_token"]).to_owned()
    }

    pub async fn sandbox_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.sandbox))
            .json(&body)
            .send()
            .await
            .expect("sandbox call");
        assert_eq!(r.status(), 200, "sandbox {path}");
        let v = r.json().await.expect("json");
        // What the sandbox delivered was stored before it answered; wait until it is applied.
        self.applied().await;
        v
    }

    pub async fn order(&self, id: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/api/orders/{id}", self.url))
            // The admin's view: everything, provider ids and step errors included.
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("get order");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    /// Polls the order (as a success page would) until its status is one of `terminal` and
    /// no step is left to run (a refunded order still sends its notice).
    pub async fn wait_for(&self, id: &str, terminal: &[&str]) -> Value {
        self.wait_until(
            id,
            &format!("in {terminal:?} with nothing left to run"),
            |o| {
                let settled = o["waiting_on"].is_null()
                    || o["steps"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|st| st["status"] == "dead"));
                settled && terminal.contains(&o["status"].as_str().unwrap_or(""))
            },
        )
        .await
    }

    /// Posts a raw webhook body with the given signature header (None: no header).
    pub async fn post_webhook(
        &self,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> reqwest::Response {
        self.post_webhook_to(&self.url, body, signature).await
    }

    /// [`TestApp::post_webhook`] to the engine at `url`.
    pub async fn post_webhook_to(
        &self,
        url: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{url}/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("stripe-signature", s);
        }
        req.send().await.expect("post webhook")
    }

    /// Waits until the engine has applied every webhook event it took (a webhook's 200
    /// means stored; the applier applies it right after).
    pub async fn applied(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM webhook_events WHERE outcome = 'received'",
            )
            .fetch_one(&self.store.pool)
            .await
            .expect("unapplied events");
            if left == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{left} webhook events never applied"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The provider's payment id (payment intent, Razorpay payment, PayPal capture) of the
    /// order's payment, if it has one.
    pub async fn provider_payment_id(&self, order_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT provider_payment_id FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.store.pool)
            .await
            .expect("payment")
    }

    /// The outcome of `provider`'s signed event that could not be read, once applied.
    pub async fn unreadable_outcome(&self, provider: &str) -> String {
        self.applied().await;
        sqlx::query_scalar(
            "SELECT outcome FROM webhook_events WHERE provider = $1 AND event_type = 'unreadable'",
        )
        .bind(provider)
        .fetch_one(&self.store.pool)
        .await
        .expect("kept")
    }

    /// The outcome the engine gave the webhook event `event_id`, once it is applied.
    pub async fn event_outcome(&self, event_id: &str) -> String {
        self.applied().await;
        sqlx::query_scalar("SELECT outcome FROM webhook_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&self.store.pool)
            .await
            .expect("event outcome")
    }

    pub async fn count(&self, sql: &'static str, arg: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_one(&self.store.pool)
            .await
            .expect(sql)
    }

    pub fn outbox_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(&self.outbox) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

/// Stripe's signature header for `body`, `age_secs` in the past.
pub fn signature(secret: &str, body: &[u8], age_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    fulfilld::providers::stripe::sign(secret, now - age_secs, body)
}

/// The `id` of a Stripe event body.
pub fn event_id_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("event json");
    s(&v["id"]).to_owned()
}

pub fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}
