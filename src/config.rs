//! Layered configuration: the compiled-in `config/default.toml` < `./config/{FULFILLD_ENV}.toml`
//! (when `FULFILLD_ENV` is set, e.g. `production`) < `./config/local.toml` (if present) <
//! `--config FILE` < `FULFILLD__SECTION__KEY` environment variables. Then
//! validation, so that a missing or malformed setting stops start-up with a message that
//! names the key rather than failing later in a request.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The documented defaults; also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub http: Http,
    pub log: Log,
    pub store: Store,
    pub queue: Queue,
    pub admin: Admin,
    pub metrics: Metrics,
    pub checkout: Checkout,
    pub invoice: Invoice,
    pub email: Email,
    pub entitlements: Entitlements,
    pub refunds: Refunds,
    pub providers: Providers,
    pub sandbox: Sandbox,
    pub api: Api,
    pub payments: Payments,
    pub reconciliation: Reconciliation,
    pub merchant_webhooks: MerchantWebhooks,
    /// Per step kind (`retry.confirm_capture.base_ms = …`): overrides of the retry policy
    /// each step declares next to its code.
    #[serde(default)]
    pub retry: BTreeMap<String, RetryOverride>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Api {
    pub idempotency_ttl_secs: u64,
    pub idempotency_lock_ms: u64,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub forged_webhooks_per_minute: u32,
}

/// Webhooks to the merchant's systems (`background::notify_merchant`); durations are written
/// like `5s`, `30m`, `5d`.
#[derive(Debug, Clone, Deserialize)]
pub struct MerchantWebhooks {
    /// One attempt's time limit.
    pub timeout: String,
    /// The waits before each retry, space-separated; after the last, the delivery is dead.
    pub retry_schedule: String,
    /// An endpoint whose every attempt has failed for this long is disabled.
    pub disable_after: String,
    /// Send to loopback, private and link-local addresses too (a receiver on the same
    /// network; tests).
    pub allow_private: bool,
    /// Only these hosts, when any are listed.
    pub allowed_hosts: Vec<String>,
    /// Deliveries in flight at once, per process.
    pub concurrency: usize,
    /// Endpoints kept by configuration (`merchant_webhooks.endpoints.<name>`), beside those
    /// admins add through the API.
    #[serde(default)]
    pub endpoints: BTreeMap<String, ConfiguredEndpoint>,
}

/// An endpoint from configuration; its secret from the environment
/// (`FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__<NAME>__SECRET`).
#[derive(Clone, Deserialize)]
pub struct ConfiguredEndpoint {
    pub url: String,
    /// Event types, as a list or one space- or comma-separated string; `*` for all.
    pub event_types: OneOrMany,
    /// `whsec_` and base64, as the Standard Webhooks libraries read it.
    pub secret: String,
}

impl std::fmt::Debug for ConfiguredEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredEndpoint")
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("secret", &redact(&self.secret))
            .finish()
    }
}

/// A list written as a TOML array or as one string (which is what an environment
/// variable can hold).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::Many(v) => v.clone(),
            OneOrMany::One(s) => s
                .split([' ', ','])
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

impl MerchantWebhooks {
    /// Where merchant webhooks may go (see [`crate::outbound`]).
    pub fn reach(&self) -> crate::outbound::Reach<'_> {
        crate::outbound::Reach {
            allowed_hosts: &self.allowed_hosts,
            allow_private: self.allow_private,
        }
    }

    pub fn timeout_ms(&self) -> u64 {
        crate::domain::parse_duration_ms("merchant_webhooks.timeout", &self.timeout)
            .unwrap_or(10_000)
    }

    /// The waits before each retry, in ms (checked at start-up).
    pub fn schedule_ms(&self) -> Vec<u64> {
        self.retry_schedule
            .split_whitespace()
            .filter_map(|d| {
                crate::domain::parse_duration_ms("merchant_webhooks.retry_schedule", d).ok()
            })
            .collect()
    }

    pub fn disable_after_ms(&self) -> u64 {
        crate::domain::parse_duration_ms("merchant_webhooks.disable_after", &self.disable_after)
            .unwrap_or(432_000_000)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reconciliation {
    pub interval_secs: u64,
    pub lookback_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payments {
    pub stale_after_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    pub max_attempts: Option<u32>,
    pub base_ms: Option<u64>,
    pub cap_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Http {
    pub addr: String,
    pub max_body_bytes: usize,
    /// Browser origins (`https://shop.example`) allowed to call the API cross-origin.
    pub cors_origins: Vec<String>,
    /// The header a trusted proxy puts the client's address in (`x-forwarded-for`); empty:
    /// the peer's address is the client.
    pub client_ip_header: String,
    /// Which proxies' entries in `client_ip_header` are believed.
    pub trusted_proxies: TrustedProxies,
}

/// The proxies in front of the engine, whose entries in `http.client_ip_header` are
/// believed: `1` (a count: that many hops, the nearest being the peer) or a list of
/// networks (`["10.0.0.0/8", "192.0.2.7"]`: a hop is trusted when its address is in one).
/// The client is the rightmost address that no trusted proxy stands for, as with nginx's
/// `real_ip_recursive` or Express's `trust proxy`: a value the client wrote to the left of
/// it is never read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawProxies")]
pub enum TrustedProxies {
    Count(usize),
    Nets(Vec<ipnet::IpNet>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProxies {
    One(RawProxy),
    List(Vec<RawProxy>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProxy {
    Count(u64),
    Text(String),
}

impl TryFrom<RawProxies> for TrustedProxies {
    type Error = String;

    fn try_from(raw: RawProxies) -> std::result::Result<TrustedProxies, String> {
        let list = match raw {
            RawProxies::One(one) => vec![one],
            RawProxies::List(list) => list,
        };
        // A count, written as a number or (from the environment) as text.
        let as_count = |p: &RawProxy| match p {
            RawProxy::Count(n) => Some(*n),
            RawProxy::Text(t) => t.trim().parse::<u64>().ok(),
        };
        match list.as_slice() {
            [] => return Err("name at least one proxy network, or a count".into()),
            [one] => {
                if let Some(n) = as_count(one) {
                    return usize::try_from(n)
                        .ok()
                        .filter(|n| (1..=32).contains(n))
                        .map(TrustedProxies::Count)
                        .ok_or_else(|| format!("a count of proxies is 1 to 32, not {n}"));
                }
            }
            _ => {}
        }
        list.iter()
            .map(|p| {
                let text = match p {
                    RawProxy::Text(t) if as_count(p).is_none() => t.trim(),
                    _ => return Err("a count stands alone, not in a list of networks".into()),
                };
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| format!("{text:?} is neither an address nor a network (CIDR)"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(TrustedProxies::Nets)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object a line, for a log pipeline.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Store {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Queue {
    pub url: String,
    pub prefix: String,
    pub window: usize,
    pub steps: String,
    pub concurrency: usize,
    pub shutdown_grace_ms: u64,
    pub sweep_interval_ms: u64,
    pub requeue_after_ms: u64,
    pub lease_ms: u64,
    pub max_lease_expiries: i64,
    pub housekeeping_interval_ms: u64,
}

#[derive(Clone, Deserialize)]
pub struct Admin {
    pub token: String,
    pub generate_token: bool,
    /// Named tokens (`admin.tokens.<name>.token` / `.role`): the name is who acted in the
    /// audit log. `admin.token` is one more, named `admin`, that may operate.
    #[serde(default)]
    pub tokens: BTreeMap<String, NamedToken>,
}

/// One admin's token and what it may do.
#[derive(Clone, Deserialize)]
pub struct NamedToken {
    pub token: String,
    pub role: AdminRole,
}

/// What an admin token may do: `read` sees everything but secrets; `operate` also changes
/// things (retries, refunds, catalogue, endpoints) and reads endpoint secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    Read,
    Operate,
}

/// `GET /metrics`.
#[derive(Clone, Deserialize)]
pub struct Metrics {
    /// When set, a scrape must send `Authorization: Bearer <token>`.
    pub token: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("token", &redact(&self.token))
            .finish()
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named: BTreeMap<&str, AdminRole> = self
            .tokens
            .iter()
            .map(|(name, t)| (name.as_str(), t.role))
            .collect();
        f.debug_struct("Admin")
            .field("token", &redact(&self.token))
            .field("tokens", &named)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Checkout {
    pub success_url: String,
    pub cancel_url: String,
    pub reservation_ttl_secs: u64,
    pub verify_min_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub series: String,
    pub tax_rate_bps: u32,
    pub tax_name: String,
}

#[derive(Clone, Deserialize)]
pub struct Email {
    pub transport: String,
    pub outbox_dir: PathBuf,
    pub smtp_url: String,
    pub from: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("transport", &self.transport)
            .field("outbox_dir", &self.outbox_dir)
            .field("smtp_url", &redact(&self.smtp_url))
            .field("from", &self.from)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
pub struct Entitlements {
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Signs the access cookie (`POST /api/entitlements/activate`); the same on every intake.
    pub cookie_secret: String,
    pub cookie_max_age_days: u32,
    /// The page a sign-in email links to; `{token}` becomes the link's token.
    pub sign_in_url: String,
    /// How long a sign-in link works (once).
    pub sign_in_ttl_secs: u64,
    /// Sign-in emails one address may be sent per hour.
    pub sign_in_per_hour: u32,
}

impl std::fmt::Debug for Entitlements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entitlements")
            .field("grants", &self.grants)
            .field("cookie_secret", &redact(&self.cookie_secret))
            .field("cookie_max_age_days", &self.cookie_max_age_days)
            .field("sign_in_url", &self.sign_in_url)
            .field("sign_in_ttl_secs", &self.sign_in_ttl_secs)
            .field("sign_in_per_hour", &self.sign_in_per_hour)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refunds {
    pub restock: bool,
    pub resume_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    pub feature: String,
    #[serde(default)]
    pub duration_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Providers {
    pub request_timeout_ms: u64,
    pub stripe: Stripe,
    pub razorpay: Razorpay,
    pub paypal: PayPal,
}

#[derive(Clone, Deserialize)]
pub struct Stripe {
    pub enabled: bool,
    pub secret_key: String,
    pub webhook_secrets: Vec<String>,
    pub api_base: String,
    pub webhook_tolerance_secs: u64,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("secret_key", &redact(&self.secret_key))
            .field(
                "webhook_secrets",
                &format!("[{} redacted]", self.webhook_secrets.len()),
            )
            .field("api_base", &self.api_base)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
pub struct Razorpay {
    pub enabled: bool,
    pub key_id: String,
    pub key_secret: String,
    pub webhook_secret: String,
    pub api_base: String,
}

impl std::fmt::Debug for Razorpay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Razorpay")
            .field("enabled", &self.enabled)
            .field("key_id", &self.key_id)
            .field("key_secret", &redact(&self.key_secret))
            .field("webhook_secret", &redact(&self.webhook_secret))
            .field("api_base", &self.api_base)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
pub struct PayPal {
    pub enabled: bool,
    pub client_id: String,
    pub client_secret: String,
    pub webhook_id: String,
    pub api_base: String,
    pub webhook_verification: PayPalVerification,
    pub webhook_cert_file: String,
    /// How old a webhook's `paypal-transmission-time` may be.
    pub webhook_tolerance_secs: u64,
}

/// How PayPal webhook signatures are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayPalVerification {
    /// Offline: SHA256withRSA with the certificate (the configured file, or the one
    /// `paypal-cert-url` names, fetched only from PayPal's hosts).
    Certificate,
    /// PayPal's `POST /v1/notifications/verify-webhook-signature`.
    Api,
}

impl std::fmt::Debug for PayPal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayPal")
            .field("enabled", &self.enabled)
            .field("client_id", &self.client_id)
            .field("client_secret", &redact(&self.client_secret))
            .field("webhook_id", &self.webhook_id)
            .field("api_base", &self.api_base)
            .field("webhook_verification", &self.webhook_verification)
            .field("webhook_cert_file", &self.webhook_cert_file)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sandbox {
    pub addr: String,
    pub webhook_target: String,
    pub paypal_cert_file: String,
}

fn redact(s: &str) -> &'static str {
    if s.is_empty() {
        "<empty>"
    } else {
        "<redacted>"
    }
}

/// Where `fulfilld sandbox` writes its PayPal certificate by default.
pub const SANDBOX_PAYPAL_CERT: &str = "data/sandbox/paypal-cert.pem";

/// A configuration problem, always naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Defaults, `./config/{FULFILLD_ENV}.toml`, `./config/local.toml`, `file`, then the
    /// process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env, true)
    }

    /// The layering with an explicit environment, for tests: `env` holds
    /// `FULFILLD__…` pairs exactly as the process environment would.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        local_file: bool,
    ) -> Result<Config, ConfigError> {
        let mut b = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        if local_file {
            if let Some((_, env_name)) = env.iter().find(|(k, _)| k == "FULFILLD_ENV") {
                let path = format!("config/{env_name}.toml");
                if !Path::new(&path).exists() {
                    return Err(ConfigError(format!(
                        "FULFILLD_ENV={env_name}: no file {path}"
                    )));
                }
                b = b.add_source(config::File::with_name(&path));
            }
            b = b.add_source(config::File::with_name("config/local").required(false));
        }
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError(format!(
                    "--config {}: no such file",
                    f.display()
                )));
            }
            b = b.add_source(config::File::from(f));
        }
        let vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("FULFILLD__"))
            .cloned()
            .collect();
        b = b.add_source(
            config::Environment::with_prefix("FULFILLD")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("providers.stripe.webhook_secrets")
                .with_list_parse_key("http.cors_origins")
                .with_list_parse_key("http.trusted_proxies")
                .with_list_parse_key("merchant_webhooks.allowed_hosts")
                .try_parsing(true)
                .source(Some(vars)),
        );
        let cfg: Config = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        let mut seen: Vec<&str> = vec![self.admin.token.trim()];
        for (name, t) in &self.admin.tokens {
            let key = format!("admin.tokens.{name}");
            let name_ok = (1..=40).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
            if !name_ok {
                return bad(&key, "a name is 1-40 of a-z, 0-9, - and _".into());
            }
            if name == "admin" || name == "fulfilld" {
                return bad(
                    &key,
                    "\"admin\" names admin.token and \"fulfilld\" the engine itself; choose another"
                        .into(),
                );
            }
            if t.token.trim().len() < 16 {
                return bad(
                    &format!("{key}.token"),
                    "must be at least 16 characters".into(),
                );
            }
            if seen.contains(&t.token.trim()) {
                return bad(
                    &format!("{key}.token"),
                    "is another admin's token too".into(),
                );
            }
            seen.push(t.token.trim());
        }
        if let Err(e) = self.http.addr.parse::<SocketAddr>() {
            return bad(
                "http.addr",
                format!("{:?} is not host:port ({e})", self.http.addr),
            );
        }
        if let Err(e) = self.sandbox.addr.parse::<SocketAddr>() {
            return bad(
                "sandbox.addr",
                format!("{:?} is not host:port ({e})", self.sandbox.addr),
            );
        }
        if self.http.max_body_bytes == 0 {
            return bad("http.max_body_bytes", "must be positive".into());
        }
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres:")) {
            return bad("store.url", "must start with sqlite: or postgres:".into());
        }
        let q = &self.queue.url;
        let schemes = ["redis://", "rediss://", "postgres://", "postgresql://"];
        if !(q.is_empty() || schemes.iter().any(|s| q.starts_with(s))) {
            return bad(
                "queue.url",
                "must be empty (the embedded queue) or start with redis://, rediss://, postgres:// or postgresql://".into(),
            );
        }
        if self.queue.window == 0 {
            return bad("queue.window", "must be at least 1".into());
        }
        if let Err(e) = self.step_kinds() {
            return bad("queue.steps", e);
        }
        for o in &self.http.cors_origins {
            let ok = url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !o.ends_with('/')
            });
            if !ok {
                return bad(
                    "http.cors_origins",
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                );
            }
        }
        if self.queue.concurrency == 0 {
            return bad("queue.concurrency", "must be at least 1".into());
        }
        if self.store.max_connections == 0 {
            return bad("store.max_connections", "must be at least 1".into());
        }
        let s = &self.providers.stripe;
        if s.enabled {
            if s.secret_key.is_empty() {
                return bad(
                    "providers.stripe.secret_key",
                    "is empty; set FULFILLD__PROVIDERS__STRIPE__SECRET_KEY".into(),
                );
            }
            if s.webhook_secrets.is_empty() || s.webhook_secrets.iter().any(|w| w.trim().is_empty())
            {
                return bad(
                    "providers.stripe.webhook_secrets",
                    "needs at least one non-empty secret; set FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS"
                        .into(),
                );
            }
            if url::Url::parse(&s.api_base).is_err() {
                return bad(
                    "providers.stripe.api_base",
                    format!("{:?} is not a URL", s.api_base),
                );
            }
        }
        let r = &self.providers.razorpay;
        if r.enabled {
            for (key, value) in [
                ("key_id", &r.key_id),
                ("key_secret", &r.key_secret),
                ("webhook_secret", &r.webhook_secret),
            ] {
                if value.is_empty() {
                    return bad(
                        &format!("providers.razorpay.{key}"),
                        format!(
                            "is empty; set FULFILLD__PROVIDERS__RAZORPAY__{}",
                            key.to_uppercase()
                        ),
                    );
                }
            }
            if url::Url::parse(&r.api_base).is_err() {
                return bad(
                    "providers.razorpay.api_base",
                    format!("{:?} is not a URL", r.api_base),
                );
            }
        }
        let pp = &self.providers.paypal;
        if pp.enabled {
            for (key, value) in [
                ("client_id", &pp.client_id),
                ("client_secret", &pp.client_secret),
                ("webhook_id", &pp.webhook_id),
            ] {
                if value.is_empty() {
                    return bad(
                        &format!("providers.paypal.{key}"),
                        format!(
                            "is empty; set FULFILLD__PROVIDERS__PAYPAL__{}",
                            key.to_uppercase()
                        ),
                    );
                }
            }
            if url::Url::parse(&pp.api_base).is_err() {
                return bad(
                    "providers.paypal.api_base",
                    format!("{:?} is not a URL", pp.api_base),
                );
            }
            // Transmission ids are kept a day (`webhook_transmissions`); a message must go
            // stale well before its id is forgotten.
            if !(1..=43_200).contains(&pp.webhook_tolerance_secs) {
                return bad(
                    "providers.paypal.webhook_tolerance_secs",
                    "must be between 1 and 43200 (12 hours)".into(),
                );
            }
            // Trusting the sandbox's certificate against the real PayPal would refuse every
            // genuine webhook: say so at start-up, not at the first payment.
            let real = pp.api_base.starts_with("https://api-m.paypal.com")
                || pp.api_base.starts_with("https://api-m.sandbox.paypal.com");
            if real && pp.webhook_cert_file == SANDBOX_PAYPAL_CERT {
                return bad(
                    "providers.paypal.webhook_cert_file",
                    format!(
                        "is fulfilld sandbox's certificate ({SANDBOX_PAYPAL_CERT}) while api_base is PayPal's; set FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE= (empty) to verify with PayPal's own certificates"
                    ),
                );
            }
        }
        if !s.enabled && !r.enabled && !pp.enabled {
            return bad("providers", "no provider is enabled".into());
        }
        if url::Url::parse(&self.sandbox.webhook_target).is_err() {
            return bad(
                "sandbox.webhook_target",
                format!("{:?} is not a URL", self.sandbox.webhook_target),
            );
        }
        match self.email.transport.as_str() {
            "file" => {}
            "smtp" => {
                if self.email.smtp_url.is_empty() {
                    return bad(
                        "email.smtp_url",
                        "is empty while email.transport = \"smtp\"; set FULFILLD__EMAIL__SMTP_URL"
                            .into(),
                    );
                }
            }
            other => {
                return bad(
                    "email.transport",
                    format!("{other:?} is not \"file\" or \"smtp\""),
                );
            }
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return bad(
                "email.from",
                format!("{:?} is not a mailbox", self.email.from),
            );
        }
        for url_key in [
            ("checkout.success_url", &self.checkout.success_url),
            ("checkout.cancel_url", &self.checkout.cancel_url),
            ("entitlements.sign_in_url", &self.entitlements.sign_in_url),
        ] {
            if url::Url::parse(url_key.1).is_err() {
                return bad(url_key.0, format!("{:?} is not a URL", url_key.1));
            }
        }
        if !self.entitlements.sign_in_url.contains("{token}") {
            return bad(
                "entitlements.sign_in_url",
                "must hold {token}, where the link's token goes".into(),
            );
        }
        if self.invoice.tax_rate_bps > 10_000 {
            return bad(
                "invoice.tax_rate_bps",
                "must be at most 10000 (100 %)".into(),
            );
        }
        if self.invoice.series.is_empty() {
            return bad("invoice.series", "must not be empty".into());
        }
        let mw = &self.merchant_webhooks;
        for (key, value) in [
            ("merchant_webhooks.timeout", &mw.timeout),
            ("merchant_webhooks.disable_after", &mw.disable_after),
        ] {
            if let Err(e) = crate::domain::parse_duration_ms(key, value) {
                return bad(key, e.message);
            }
        }
        for d in mw.retry_schedule.split_whitespace() {
            if let Err(e) = crate::domain::parse_duration_ms("merchant_webhooks.retry_schedule", d)
            {
                return bad("merchant_webhooks.retry_schedule", e.message);
            }
        }
        if mw.timeout_ms() == 0 {
            return bad("merchant_webhooks.timeout", "must be more than 0".into());
        }
        if mw.concurrency == 0 {
            return bad("merchant_webhooks.concurrency", "must be at least 1".into());
        }
        for (name, ep) in &mw.endpoints {
            let key = |k: &str| format!("merchant_webhooks.endpoints.{name}.{k}");
            if name.is_empty()
                || name.len() > 40
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return bad(
                    &format!("merchant_webhooks.endpoints.{name}"),
                    "a name of 1-40 of a-z, 0-9, _ and -".into(),
                );
            }
            if let Err(why) = crate::outbound::guard(&mw.reach(), &ep.url) {
                return bad(&key("url"), why);
            }
            if let Err(why) = crate::store::merchant::stored_types(&ep.event_types.items()) {
                return bad(&key("event_types"), why);
            }
            if !crate::store::merchant::secret_reads(&ep.secret) {
                return bad(
                    &key("secret"),
                    format!(
                        "must be whsec_ and base64 of at least 16 bytes; set FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__{}__SECRET",
                        name.to_ascii_uppercase()
                    ),
                );
            }
        }
        if self.queue.max_lease_expiries < 1 {
            return bad("queue.max_lease_expiries", "must be at least 1".into());
        }
        for (kind, o) in &self.retry {
            let Some(step) = jobs::StepKind::parse(kind) else {
                return bad(
                    &format!("retry.{kind}"),
                    format!(
                        "no step kind {kind:?}; known: {}",
                        jobs::StepKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                );
            };
            if o.max_attempts == Some(0) {
                return bad(
                    &format!("retry.{kind}.max_attempts"),
                    "must be at least 1".into(),
                );
            }
            let p = self.policy(step);
            if p.base_ms == 0 || p.cap_ms < p.base_ms {
                return bad(
                    &format!("retry.{kind}"),
                    format!(
                        "base_ms ({}) must be positive and at most cap_ms ({})",
                        p.base_ms, p.cap_ms
                    ),
                );
            }
        }
        if self.reconciliation.lookback_secs == 0 {
            return bad("reconciliation.lookback_secs", "must be positive".into());
        }
        if self.api.idempotency_ttl_secs == 0 {
            return bad("api.idempotency_ttl_secs", "must be positive".into());
        }
        Ok(())
    }

    /// The retry policy in force for a step kind: the one declared next to the step's code,
    /// with this configuration's overrides.
    pub fn policy(&self, kind: jobs::StepKind) -> jobs::RetryPolicy {
        let mut p = kind.policy();
        if let Some(o) = self.retry.get(kind.as_str()) {
            p.max_attempts = o.max_attempts.unwrap_or(p.max_attempts);
            p.base_ms = o.base_ms.unwrap_or(p.base_ms);
            p.cap_ms = o.cap_ms.unwrap_or(p.cap_ms);
        }
        p
    }

    /// The step kinds this process's workers run (`queue.steps`; empty: all).
    pub fn step_kinds(&self) -> Result<Vec<jobs::StepKind>, String> {
        parse_step_kinds(&self.queue.steps)
    }

    /// The grant configured for a SKU. Matched without regard to case, because keys set
    /// through environment variables arrive lower-cased.
    pub fn grant_for(&self, sku: &str) -> Option<&Grant> {
        let grants = &self.entitlements.grants;
        grants.get(sku).or_else(|| {
            grants
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(sku))
                .map(|(_, g)| g)
        })
    }

    /// Refuses, for `serve` and `intake`, a provider that can move real money — its API base
    /// is not a loopback address (where `fulfilld sandbox` runs) or its key is a live key —
    /// while a secret that decides what to trust is empty or still the compiled-in sandbox
    /// value, which anyone can read in this repository. With a live provider, the admin token
    /// and the cookie secret must be set too, not generated into a local file that differs
    /// between machines. The error names the setting to fill in.
    pub fn refuse_sandbox_secrets_live(&self) -> Result<(), ConfigError> {
        let d = compiled_defaults();
        let bad = |key: &str, env: &str, why: &str| {
            Err(ConfigError(format!(
                "{key}: {why}; set {env} before going live"
            )))
        };
        let p = &self.providers;
        let mut live = Vec::new();
        if p.stripe.enabled
            && (!is_loopback_url(&p.stripe.api_base)
                || ["sk_live_", "rk_live_"]
                    .iter()
                    .any(|k| p.stripe.secret_key.starts_with(k)))
        {
            live.push("stripe");
            let defaults = &d.providers.stripe.webhook_secrets;
            if p.stripe.webhook_secrets.is_empty()
                || p.stripe
                    .webhook_secrets
                    .iter()
                    .any(|w| defaults.contains(w))
            {
                return bad(
                    "providers.stripe.webhook_secrets",
                    "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS (the endpoint's whsec_… from the Stripe dashboard)",
                    "holds the sandbox's public secret while Stripe is live, so anyone could sign events",
                );
            }
            if p.stripe.secret_key == d.providers.stripe.secret_key {
                return bad(
                    "providers.stripe.secret_key",
                    "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY",
                    "is the sandbox's key while api_base is not the sandbox",
                );
            }
        }
        if p.razorpay.enabled
            && (!is_loopback_url(&p.razorpay.api_base)
                || p.razorpay.key_id.starts_with("rzp_live_"))
        {
            live.push("razorpay");
            let r = &d.providers.razorpay;
            if p.razorpay.webhook_secret.is_empty() || p.razorpay.webhook_secret == r.webhook_secret
            {
                return bad(
                    "providers.razorpay.webhook_secret",
                    "FULFILLD__PROVIDERS__RAZORPAY__WEBHOOK_SECRET (the secret set on the Razorpay dashboard's webhook)",
                    "holds the sandbox's public secret while Razorpay is live, so anyone could sign events",
                );
            }
            // The key secret also signs the checkout's payment signature, which the verify
            // call trusts.
            if p.razorpay.key_secret == r.key_secret {
                return bad(
                    "providers.razorpay.key_secret",
                    "FULFILLD__PROVIDERS__RAZORPAY__KEY_SECRET",
                    "is the sandbox's public secret while Razorpay is live, so anyone could sign a payment",
                );
            }
        }
        if p.paypal.enabled && !is_loopback_url(&p.paypal.api_base) {
            live.push("paypal");
            let pp = &d.providers.paypal;
            if p.paypal.webhook_id == pp.webhook_id {
                return bad(
                    "providers.paypal.webhook_id",
                    "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_ID (the id PayPal gave your webhook)",
                    "is the sandbox's while PayPal is live",
                );
            }
            if p.paypal.client_secret == pp.client_secret {
                return bad(
                    "providers.paypal.client_secret",
                    "FULFILLD__PROVIDERS__PAYPAL__CLIENT_SECRET",
                    "is the sandbox's while PayPal is live",
                );
            }
            if !p.paypal.webhook_cert_file.is_empty()
                && p.paypal.webhook_cert_file == pp.webhook_cert_file
            {
                return bad(
                    "providers.paypal.webhook_cert_file",
                    "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE= (empty, PayPal's own certificates)",
                    "is the certificate fulfilld sandbox writes while PayPal is live",
                );
            }
        }
        if live.is_empty() {
            return Ok(());
        }
        const MIN: usize = 32;
        let a = &self.admin;
        if let Some((name, _)) = a.tokens.iter().find(|(_, t)| t.token.len() < MIN) {
            return bad(
                &format!("admin.tokens.{name}.token"),
                &format!(
                    "FULFILLD__ADMIN__TOKENS__{}__TOKEN (at least 32 random characters)",
                    name.to_ascii_uppercase()
                ),
                &format!(
                    "must be at least {MIN} characters while {} is live",
                    live.join(", ")
                ),
            );
        }
        let generated = a.token.is_empty() && a.generate_token && a.tokens.is_empty();
        if generated || (!a.token.is_empty() && a.token.len() < MIN) {
            return bad(
                "admin.token",
                "FULFILLD__ADMIN__TOKEN (at least 32 random characters, e.g. `openssl rand -hex 32`), or admin.generate_token = false to keep the admin API off",
                &format!(
                    "must be set, at least {MIN} characters, while {} is live",
                    live.join(", ")
                ),
            );
        }
        if self.entitlements.cookie_secret.len() < MIN {
            return bad(
                "entitlements.cookie_secret",
                "FULFILLD__ENTITLEMENTS__COOKIE_SECRET (at least 32 random characters, the same on every intake)",
                &format!(
                    "must be set, at least {MIN} characters, while {} is live",
                    live.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// Providers whose API base is not the real one: start-up warns about each.
    pub fn sandboxed_providers(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let p = &self.providers;
        if p.stripe.enabled && !p.stripe.api_base.starts_with("https://api.stripe.com") {
            v.push("stripe");
        }
        if p.razorpay.enabled && !p.razorpay.api_base.starts_with("https://api.razorpay.com") {
            v.push("razorpay");
        }
        if p.paypal.enabled && !p.paypal.api_base.starts_with("https://api-m.paypal.com") {
            v.push("paypal");
        }
        v
    }
}

/// The compiled-in `config/default.toml` alone: the sandbox's public secrets.
fn compiled_defaults() -> Config {
    config::Config::builder()
        .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("config/default.toml deserializes (a unit test loads it)")
}

/// Whether `url` names a loopback host (127.0.0.0/8, ::1, localhost), where
/// `fulfilld sandbox` runs; anything else may be a real provider.
fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `"confirm_capture, send_receipt"` → those kinds; empty → every kind.
pub fn parse_step_kinds(list: &str) -> Result<Vec<jobs::StepKind>, String> {
    if list.trim().is_empty() {
        return Ok(jobs::StepKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = jobs::StepKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = jobs::StepKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown step kind {name:?} (known: {})", known.join(", "))
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_env_overrides_nest() {
        let c = Config::load_from(None, &[], false).expect("defaults are valid");
        assert_eq!(c.http.addr, "127.0.0.1:8080");
        assert!(c.store.url.starts_with("sqlite://data/"));
        let c = Config::load_from(
            None,
            &env(&[
                ("FULFILLD__HTTP__ADDR", "127.0.0.1:9000"),
                (
                    "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS",
                    "whsec_new,whsec_old",
                ),
                ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_test_x"),
                ("FULFILLD__QUEUE__CONCURRENCY", "3"),
            ]),
            false,
        )
        .expect("valid overrides");
        assert_eq!(c.http.addr, "127.0.0.1:9000");
        assert_eq!(
            c.providers.stripe.webhook_secrets,
            vec!["whsec_new", "whsec_old"]
        );
        assert_eq!(c.providers.stripe.secret_key, "sk_test_x");
        assert_eq!(c.queue.concurrency, 3);
    }

    #[test]
    fn named_admin_tokens_are_checked() {
        let load = |pairs: &[(&str, &str)]| Config::load_from(None, &env(pairs), false);
        let c = load(&[
            (
                "FULFILLD__ADMIN__TOKENS__OPS__TOKEN",
                "ops-token-0123456789",
            ),
            ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "read"),
        ])
        .expect("a named token");
        assert_eq!(c.admin.tokens["ops"].role, AdminRole::Read);
        assert!(!format!("{c:?}").contains("ops-token"), "never printed");
        for (pairs, key) in [
            (
                vec![
                    ("FULFILLD__ADMIN__TOKENS__OPS__TOKEN", "short"),
                    ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "read"),
                ],
                "admin.tokens.ops.token",
            ),
            (
                vec![
                    (
                        "FULFILLD__ADMIN__TOKENS__ADMIN__TOKEN",
                        "ops-token-0123456789",
                    ),
                    ("FULFILLD__ADMIN__TOKENS__ADMIN__ROLE", "read"),
                ],
                "admin.tokens.admin",
            ),
            (
                vec![
                    ("FULFILLD__ADMIN__TOKEN", "ops-token-0123456789"),
                    (
                        "FULFILLD__ADMIN__TOKENS__OPS__TOKEN",
                        "ops-token-0123456789",
                    ),
                    ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "operate"),
                ],
                "admin.tokens.ops.token",
            ),
            (
                vec![
                    (
                        "FULFILLD__ADMIN__TOKENS__OPS__TOKEN",
                        "ops-token-0123456789",
                    ),
                    ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "root"),
                ],
                "role",
            ),
        ] {
            let err = load(&pairs).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_are_a_count_or_networks() {
        let load = |v: &str| {
            Config::load_from(None, &env(&[("FULFILLD__HTTP__TRUSTED_PROXIES", v)]), false)
                .map(|c| c.http.trusted_proxies)
        };
        let defaults = Config::load_from(None, &[], false).expect("defaults");
        assert_eq!(defaults.http.trusted_proxies, TrustedProxies::Count(1));
        assert_eq!(load("2").expect("a count"), TrustedProxies::Count(2));
        let nets = load("10.0.0.0/8, 192.0.2.7,2001:db8::/32").expect("networks");
        assert_eq!(
            nets,
            TrustedProxies::Nets(vec![
                "10.0.0.0/8".parse().expect("net"),
                "192.0.2.7/32".parse().expect("net"),
                "2001:db8::/32".parse().expect("net"),
            ])
        );
        for bad in ["0", "33", "proxy.example", "10.0.0.0/99", "1,10.0.0.0/8"] {
            let err = load(bad).expect_err(bad).to_string();
            assert!(
                err.contains("trusted_proxies") || err.contains("count"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (k, v, key) in [
            ("FULFILLD__HTTP__ADDR", "nonsense", "http.addr"),
            ("FULFILLD__QUEUE__CONCURRENCY", "many", "concurrency"),
            ("FULFILLD__STORE__URL", "mysql://x", "store.url"),
            ("FULFILLD__EMAIL__TRANSPORT", "pigeon", "email.transport"),
            (
                "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY",
                "",
                "providers.stripe.secret_key",
            ),
            (
                "FULFILLD__PROVIDERS__RAZORPAY__WEBHOOK_SECRET",
                "",
                "providers.razorpay.webhook_secret",
            ),
            (
                "FULFILLD__PROVIDERS__RAZORPAY__API_BASE",
                "nowhere",
                "providers.razorpay.api_base",
            ),
            (
                "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_ID",
                "",
                "providers.paypal.webhook_id",
            ),
            (
                "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_VERIFICATION",
                "trust_me",
                "webhook_verification",
            ),
            (
                "FULFILLD__PROVIDERS__PAYPAL__API_BASE",
                "https://api-m.paypal.com",
                "providers.paypal.webhook_cert_file",
            ),
        ] {
            let err = Config::load_from(None, &env(&[(k, v)]), false)
                .expect_err(k)
                .to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
    }

    #[test]
    fn merchant_webhook_settings_are_checked() {
        for (k, v, key) in [
            (
                "FULFILLD__MERCHANT_WEBHOOKS__TIMEOUT",
                "soon",
                "merchant_webhooks.timeout",
            ),
            (
                "FULFILLD__MERCHANT_WEBHOOKS__TIMEOUT",
                "0s",
                "merchant_webhooks.timeout",
            ),
            (
                "FULFILLD__MERCHANT_WEBHOOKS__RETRY_SCHEDULE",
                "5s 1w",
                "retry_schedule",
            ),
            (
                "FULFILLD__MERCHANT_WEBHOOKS__DISABLE_AFTER",
                "5",
                "disable_after",
            ),
        ] {
            let err = Config::load_from(None, &env(&[(k, v)]), false)
                .expect_err(k)
                .to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
        let endpoint = |url: &str, types: &str, secret: &str| {
            let e = env(&[
                ("FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__URL", url),
                (
                    "FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__EVENT_TYPES",
                    types,
                ),
                (
                    "FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__SECRET",
                    secret,
                ),
            ]);
            Config::load_from(None, &e, false).map_err(|e| e.to_string())
        };
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let c = endpoint(
            "https://erp.example.com/h",
            "order.paid order.refunded",
            good,
        )
        .expect("a good endpoint");
        let erp = &c.merchant_webhooks.endpoints["erp"];
        assert_eq!(erp.event_types.items(), ["order.paid", "order.refunded"]);
        assert!(!format!("{c:?}").contains(good), "the secret in Debug");
        for (url, types, secret, key) in [
            ("http://127.0.0.1/h", "*", good, "endpoints.erp.url"),
            (
                "https://erp.example.com/h",
                "order.shipped",
                good,
                "endpoints.erp.event_types",
            ),
            ("https://erp.example.com/h", "*", "", "endpoints.erp.secret"),
            (
                "https://erp.example.com/h",
                "*",
                "whsec_c2hvcnQ=",
                "endpoints.erp.secret",
            ),
        ] {
            let err = endpoint(url, types, secret).expect_err(key);
            assert!(err.contains(key), "{err}");
            assert!(!err.contains(good), "the secret in {err}");
        }
    }

    #[test]
    fn no_sandbox_secret_works_live() {
        let sandbox = Config::load_from(None, &[], false).expect("defaults");
        sandbox
            .refuse_sandbox_secrets_live()
            .expect("the sandbox runs on its own secrets");
        let strong = "0123456789abcdef0123456789abcdef";
        let others = [
            ("FULFILLD__PROVIDERS__RAZORPAY__ENABLED", "false"),
            ("FULFILLD__PROVIDERS__PAYPAL__ENABLED", "false"),
            ("FULFILLD__ADMIN__TOKEN", strong),
            ("FULFILLD__ENTITLEMENTS__COOKIE_SECRET", strong),
        ];
        let live = |extra: &[(&str, &str)]| {
            let mut pairs: Vec<(&str, &str)> = others.to_vec();
            pairs.extend_from_slice(extra);
            Config::load_from(None, &env(&pairs), false)
                .expect("loads")
                .refuse_sandbox_secrets_live()
                .map_err(|e| e.to_string())
        };
        // A live key or a real API base, each with the public sandbox signing secret.
        for extra in [
            &[("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x")][..],
            &[
                ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_test_x"),
                (
                    "FULFILLD__PROVIDERS__STRIPE__API_BASE",
                    "https://api.stripe.com",
                ),
            ][..],
        ] {
            let err = live(extra).expect_err("whsec_sandbox live");
            assert!(
                err.contains("providers.stripe.webhook_secrets")
                    && err.contains("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS"),
                "{err}"
            );
        }
        let stripe_ok = [
            ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x"),
            ("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS", "whsec_real"),
        ];
        live(&stripe_ok).expect("real secrets");
        // The admin token and the cookie secret, each unset, generated or short.
        for (k, v, key) in [
            ("FULFILLD__ADMIN__TOKEN", "", "admin.token"),
            ("FULFILLD__ADMIN__TOKEN", "short", "admin.token"),
            (
                "FULFILLD__ENTITLEMENTS__COOKIE_SECRET",
                "",
                "entitlements.cookie_secret",
            ),
        ] {
            let mut extra = stripe_ok.to_vec();
            extra.push((k, v));
            let err = live(&extra).expect_err(key);
            assert!(err.starts_with(&format!("configuration: {key}")), "{err}");
        }
        let mut off = stripe_ok.to_vec();
        off.extend([
            ("FULFILLD__ADMIN__TOKEN", ""),
            ("FULFILLD__ADMIN__GENERATE_TOKEN", "false"),
        ]);
        live(&off).expect("admin API off is allowed");
        // Razorpay and PayPal, live by key or by host.
        let rzp = Config::load_from(
            None,
            &env(&[
                ("FULFILLD__PROVIDERS__RAZORPAY__KEY_ID", "rzp_live_x"),
                ("FULFILLD__PROVIDERS__STRIPE__ENABLED", "false"),
                ("FULFILLD__PROVIDERS__PAYPAL__ENABLED", "false"),
            ]),
            false,
        )
        .expect("loads")
        .refuse_sandbox_secrets_live()
        .expect_err("rzp_whsec_sandbox live")
        .to_string();
        assert!(rzp.contains("providers.razorpay.webhook_secret"), "{rzp}");
        let pp = Config::load_from(
            None,
            &env(&[
                (
                    "FULFILLD__PROVIDERS__PAYPAL__API_BASE",
                    "https://api-m.paypal.com",
                ),
                ("FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE", ""),
                ("FULFILLD__PROVIDERS__STRIPE__ENABLED", "false"),
                ("FULFILLD__PROVIDERS__RAZORPAY__ENABLED", "false"),
            ]),
            false,
        )
        .expect("loads")
        .refuse_sandbox_secrets_live()
        .expect_err("sandbox webhook id live")
        .to_string();
        assert!(pp.contains("providers.paypal.webhook_id"), "{pp}");
        assert!(is_loopback_url("http://127.0.0.5:8099") && is_loopback_url("http://[::1]:1"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example"));
    }

    #[test]
    fn production_overlay_demands_secrets() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
        let err = Config::load_from(Some(&path), &[], false)
            .expect_err("no secrets")
            .to_string();
        assert!(err.contains("providers.stripe.secret_key"), "{err}");
        let secrets = [
            ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x"),
            ("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS", "whsec_x"),
            ("FULFILLD__EMAIL__SMTP_URL", "smtps://u:p@mail.example:465"),
        ];
        // Without an admin token it starts with the admin API off (nothing generated).
        let off = Config::load_from(Some(&path), &env(&secrets), false).expect("admin off");
        assert!(off.admin.token.is_empty() && !off.admin.generate_token);
        let ok = Config::load_from(
            Some(&path),
            &env(&[
                ("FULFILLD__ADMIN__TOKEN", "t"),
                ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x"),
                ("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS", "whsec_x"),
                ("FULFILLD__EMAIL__SMTP_URL", "smtps://u:p@mail.example:465"),
            ]),
            false,
        )
        .expect("complete production config");
        assert!(ok.sandboxed_providers().is_empty());
        let dbg = format!("{ok:?}");
        assert!(
            !dbg.contains("sk_live_x") && !dbg.contains("u:p@"),
            "secrets leak in Debug"
        );
    }
}
