//! # fulfilld
//!
//! Turns "the payment provider says this was paid" into everything a shop must do next —
//! confirm the capture, deduct stock, issue the invoice, send the receipt, grant access —
//! exactly once per order, however often, late or out of order the provider's webhooks
//! arrive.
//!
//! # Layout
//! - [`config`]: layered configuration (compiled-in defaults < files < `FULFILLD__*`), one
//!   file per section, parsed once into typed values.
//! - [`domain`]: newtypes that can only hold valid values (money, SKUs, ids, emails).
//! - [`api`]: the HTTP edge's error type (stable codes) and path extractor, for intake and
//!   admin alike.
//! - [`intake`]: the axum routes — webhooks, the shop API, health.
//! - [`providers`]: signature checks, event normalization and API clients per provider.
//! - [`core`]: the state machines that decide what a payment change or a stored event
//!   does; they move rows through `store`.
//! - [`store`]: the SQL source of truth (SQLite or Postgres), one module per aggregate.
//! - [`queue`]: wake-ups for the workers, and the sweeper that makes losing them harmless.
//! - [`pipeline`]: apalis workers that run one step per wake-up, and the group commit of
//!   their writes; it knows no step by name.
//! - [`steps`]: the fulfilment steps, one file per step kind, behind one `Step` trait.
//! - [`background`]: the loops beside the steps: housekeeping (stale payments, expired
//!   reservations, old keys), reconciliation, refund calls, the merchant webhook sender.
//! - [`email`]: outgoing mail (file outbox or SMTP).
//! - [`metrics`]: what `/metrics` reports.
//! - [`outbound`]: where the engine may send what a merchant chose the target of.
//! - [`clock`], [`text`]: the time (ms, s, RFC 3339) and HTML escaping.
//! - [`admin`]: the admin API behind one gate, the dashboard, and `fulfilld admin …`.
//! - [`sandbox`]: `fulfilld sandbox`, the provider emulator used by tests and first runs.
//! - [`demo`]: `fulfilld demo`, the engine and the sandbox with a scripted shop day.
//! - `jobs` (a crate of its own): the job contract — step kinds, payloads, retry policies.
//!
//! [`run`] is the one entry point for `fulfilld serve` and for every test: it takes a bound
//! listener and a shutdown future, so tests run the real engine on a random port.

pub mod admin;
pub mod api;
pub mod background;
pub mod clock;
pub mod config;
pub mod core;
pub mod demo;
pub mod domain;
pub mod email;
pub mod intake;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod providers;
pub mod queue;
pub mod sandbox;
pub mod steps;
pub mod store;
pub mod text;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::Config;
use email::Mailer;
use providers::Providers;
use queue::Queue;
use store::Store;

/// Everything a request handler or a step needs, shared.
#[derive(Debug)]
pub struct Engine {
    pub config: Config,
    pub store: Store,
    /// What `/metrics` reports for this engine.
    pub metrics: Arc<metrics::Metrics>,
    pub providers: Providers,
    pub mailer: Mailer,
    pub queue: Queue,
    /// The admin bearer tokens in force, by name and role (`admin.tokens`, and
    /// `admin.token` — configured, or generated at start — as `admin`).
    pub admins: admin::Admins,
    /// When each open payment was last read from its provider by the verify call.
    pub verify_reads: intake::VerifyReads,
    /// Webhook events' way into the store (group commit); `intake::applier` applies them.
    pub events: store::group_commit::EventWriter,
    /// This engine's name, unique per start (`fulfilld-<pid>-<random>`): its apalis
    /// workers' names, and who ran each step attempt.
    pub worker: String,
    /// The store-only step kinds this process's workers run: a run that finishes an
    /// order's step goes straight on to the next when it is one of these
    /// (see [`store::steps::Chain`]).
    pub chains_into: Vec<jobs::StepKind>,
    /// This process's step writes' way into the store (group commit; see
    /// [`pipeline::batch`]).
    pub batcher: pipeline::batch::Batcher,
    /// Per-client limits on the public endpoints and on forged webhooks.
    pub limits: intake::limits::Limits,
    /// The key that signs entitlement cookies (configured, or kept in
    /// [`COOKIE_SECRET_FILE`]); empty on `work`, which serves no API.
    pub cookie_secret: String,
}

/// Where `serve` writes a generated admin token when none is configured.
pub const ADMIN_TOKEN_FILE: &str = "data/admin-token";
/// Where the entitlement cookies' signing key is kept when none is configured.
pub const COOKIE_SECRET_FILE: &str = "data/cookie-secret";

/// Connects to the store and applies its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect_with(
        &config.store.url,
        config.store.max_connections,
        Duration::from_millis(config.store.acquire_timeout_ms),
    )
    .await
    .with_context(|| "store.url: cannot open the store")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `fulfilld serve`: intake, workers and the periodic work, in one process.
    Serve,
    /// `fulfilld intake`: the HTTP API and webhooks only; stateless, run many.
    Intake,
    /// `fulfilld work`: workers for `queue.steps`, the sweeper and the periodic work; its
    /// HTTP listener answers `/healthz` and `/readyz` only.
    Work,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Intake => "intake",
            Role::Work => "work",
        }
    }
}

/// Runs the whole engine — intake, workers and sweeper — until `shutdown` completes, then
/// stops taking requests, lets in-flight steps finish, and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_role(Role::Serve, config, listener, shutdown).await
}

/// Runs one role until `shutdown` completes. Then the HTTP server stops accepting and
/// finishes the requests it has; workers stop taking wake-ups and get
/// `queue.shutdown_grace_ms` to finish the steps they run (one cut off is handed out again
/// when its lease expires); nothing is lost whichever way the process stops.
pub async fn run_role(
    role: Role,
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    for p in config.sandboxed_providers() {
        tracing::warn!(
            provider = p,
            "provider API points at a sandbox, not the real provider: no real money moves"
        );
    }
    if config.providers.stripe.enabled && config.checkout.reservation_ttl_secs < 1800 {
        // Stripe keeps a Checkout Session open at least 30 minutes (`expires_at`'s range).
        tracing::warn!(
            reservation_ttl_secs = config.checkout.reservation_ttl_secs,
            "checkout.reservation_ttl_secs is below Stripe's 30-minute minimum session: a \
             session can be paid after its stock went back (the payment is then refunded if \
             the stock is gone); 1800 or more avoids it"
        );
    }
    if role != Role::Work {
        // Before anything is opened or bound to: a forged event must never be trusted live.
        config.refuse_sandbox_secrets_live()?;
    }
    let kinds = config.queue.steps.kinds().to_vec();
    let store = open_store(&config).await?;
    for (name, ep) in &config.merchant_webhooks.endpoints {
        // Checked when the configuration was read.
        let types =
            store::merchant::stored_types(&ep.event_types.items()).map_err(anyhow::Error::msg)?;
        store
            .keep_configured_endpoint(name, &ep.url, &types, ep.secret.expose())
            .await?;
    }
    let admin_token = match role {
        Role::Work => String::new(),
        Role::Intake => config.admin.token.expose().to_owned(),
        Role::Serve => admin_token(&config)?,
    };
    let admins = match role {
        Role::Work => admin::Admins::default(),
        _ => admin::Admins::new(&admin_token, &config.admin.tokens),
    };
    if role != Role::Work && admins.is_empty() {
        tracing::warn!("admin API off: no admin.token configured (FULFILLD__ADMIN__TOKEN)");
    }
    let mailer = Mailer::from_config(&config.email)?;
    let providers = Providers::from_config(&config);
    let runs: &[jobs::StepKind] = if role == Role::Intake { &[] } else { &kinds };
    let queue = Queue::open(&config.queue, role == Role::Work, runs)?;
    let chains_into = runs.iter().copied().filter(|k| k.store_only()).collect();
    let events = store::group_commit::EventWriter::start(store.clone());
    let limits = intake::limits::Limits::from_config(&config.api);
    let cookie_secret = match role {
        Role::Work => String::new(),
        _ if !config.entitlements.cookie_secret.is_empty() => {
            config.entitlements.cookie_secret.expose().to_owned()
        }
        _ => kept_secret(COOKIE_SECRET_FILE, "entitlements.cookie_secret")?,
    };
    let engine = Arc::new(Engine {
        metrics: Arc::new(metrics::Metrics::new(store.fulfilled_after.clone())),
        limits,
        cookie_secret,
        events,
        config,
        store,
        providers,
        mailer,
        queue,
        admins,
        verify_reads: Default::default(),
        worker: {
            // The last characters of a ULID are its random part.
            let id = domain::new_id("");
            format!(
                "fulfilld-{}-{}-{}",
                role.name(),
                std::process::id(),
                &id[id.len() - 8..]
            )
        },
        chains_into,
        batcher: Default::default(),
    });

    let stop = CancellationToken::new();
    let mut background = Vec::new();
    if role != Role::Intake {
        let q = &engine.config.queue;
        background.push(tokio::spawn(queue::sweeper::run(
            engine.store.clone(),
            engine.queue.clone(),
            kinds.clone(),
            q.clone(),
            stop.clone(),
        )));
        background.push(tokio::spawn(pipeline::run_workers(
            engine.clone(),
            kinds,
            stop.clone(),
        )));
        background.push(tokio::spawn(background::housekeeping::run(
            engine.clone(),
            stop.clone(),
        )));
        background.push(tokio::spawn(background::reconciliation::schedule(
            engine.clone(),
            stop.clone(),
        )));
        background.push(tokio::spawn(background::notify_merchant::run(
            engine.clone(),
            stop.clone(),
        )));
        background.push(tokio::spawn(background::refund_calls::resume(
            engine.clone(),
            Duration::from_millis(q.sweep_interval_ms),
            stop.clone(),
        )));
    }

    if role != Role::Work {
        background.push(tokio::spawn(intake::applier::run(
            engine.clone(),
            stop.clone(),
        )));
    }

    let addr = listener.local_addr()?;
    tracing::info!(%addr, role = role.name(), worker = %engine.worker, store = ?engine.store.backend, queue = ?engine.queue, "fulfilld running");
    let router = match role {
        Role::Work => intake::health_router(engine.clone()),
        Role::Serve | Role::Intake => intake::router(engine.clone()),
    };
    let stop_http = stop.clone();
    let router = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_http.cancelled() => {}
            }
        })
        .await;
    stop.cancel();
    for task in background {
        let _ = task.await;
    }
    engine.store.pool.close().await;
    served.context("http server")?;
    Ok(())
}

/// The configured admin token, or a generated one written to [`ADMIN_TOKEN_FILE`]
/// (mode 0600), or none when `admin.generate_token` is false (admin off). The token itself
/// is never logged.
fn admin_token(config: &Config) -> anyhow::Result<String> {
    if !config.admin.token.is_empty()
        || !config.admin.generate_token
        || !config.admin.tokens.is_empty()
    {
        return Ok(config.admin.token.expose().to_owned());
    }
    kept_secret(ADMIN_TOKEN_FILE, "admin.token")
}

/// The secret in `file`, or a new random one written there (mode 0600) for the next start
/// and the other processes that run in this directory. `key` names the setting that would
/// have made it unneeded.
fn kept_secret(file: &str, key: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(file);
    if let Ok(existing) = std::fs::read_to_string(path) {
        let t = existing.trim().to_owned();
        if !t.is_empty() {
            tracing::info!(file, "{key} read from file");
            return Ok(t);
        }
    }
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    let token = hex::encode(bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(path, &token).with_context(|| format!("writing {file}"))?;
    tracing::warn!(
        file,
        "no {key} configured: generated one and wrote it to this file"
    );
    Ok(token)
}

fn write_private(path: &std::path::Path, s: &str) -> std::io::Result<()> {
    use std::io::Write;
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(s.as_bytes())
}

/// Options for a file only this user may read (0600 on Unix): the store, generated secrets,
/// the outbox's emails. Data files hold buyers' addresses and orders.
pub(crate) fn private_file() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}
