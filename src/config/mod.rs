//! Layered configuration: the compiled-in `config/default.toml` < `./config/{FULFILLD_ENV}.toml`
//! (when `FULFILLD_ENV` is set, e.g. `production`) < `./config/local.toml` (if present) <
//! `--config FILE` < `FULFILLD__SECTION__KEY` environment variables. Then
//! validation, so that a missing or malformed setting stops start-up with a message that
//! names the key rather than failing later in a request.

//!
//! One file per section; each section is parsed once into typed values ([`values`]:
//! durations, secrets that never print, step kinds), and checks its own rules.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

mod admin;
mod http;
mod merchant_webhooks;
mod providers;
mod runtime;
mod shop;
mod values;

pub use admin::{Admin, AdminRole, Metrics, NamedToken};
pub use http::{Api, Http, TrustedProxies};
pub use merchant_webhooks::{ConfiguredEndpoint, MerchantWebhooks, OneOrMany};
pub use providers::{
    PayPal, PayPalVerification, Providers, Razorpay, SANDBOX_PAYPAL_CERT, Sandbox, Stripe,
};
pub use runtime::{Log, LogFormat, Queue, RetryOverride, Store};
pub use shop::{
    Checkout, Email, Entitlements, Grant, Invoice, Payments, Reconciliation, Refunds, Transport,
};
pub use values::{Millis, Schedule, Secret, StepKinds};

/// The documented defaults; also the reference for every key.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

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

/// A configuration problem, always naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// The setting `key` is wrong, and `why`.
fn bad<T>(key: &str, why: impl std::fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("{key}: {why}")))
}

/// The setting `key` holds a URL.
fn a_url(key: &str, value: &str) -> Result<(), ConfigError> {
    if url::Url::parse(value).is_err() {
        return bad(key, format!("{value:?} is not a URL"));
    }
    Ok(())
}

/// The setting `key` must not keep its value while a provider is live; `env` sets it.
fn not_live<T>(key: &str, env: &str, why: &str) -> Result<T, ConfigError> {
    Err(ConfigError(format!(
        "{key}: {why}; set {env} before going live"
    )))
}

/// The shortest admin token or cookie secret accepted while a provider is live.
const LIVE_MIN: usize = 32;

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
        self.admin.check()?;
        self.http.check()?;
        self.store.check()?;
        self.queue.check()?;
        self.providers.check()?;
        self.sandbox.check()?;
        self.email.check()?;
        self.checkout.check()?;
        self.entitlements.check()?;
        self.invoice.check()?;
        self.merchant_webhooks.check()?;
        self.reconciliation.check()?;
        self.api.check()?;
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
                return bad(&format!("retry.{kind}.max_attempts"), "must be at least 1");
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

    /// Refuses, for `serve` and `intake`, a provider that can move real money while a secret
    /// that decides what to trust is empty or still the compiled-in sandbox value
    /// ([`Providers::live`]). With a live provider, the admin token and the cookie secret
    /// must be set too, not generated into a local file that differs between machines. The
    /// error names the setting to fill in.
    pub fn refuse_sandbox_secrets_live(&self) -> Result<(), ConfigError> {
        let live = self.providers.live(&compiled_defaults().providers)?;
        if live.is_empty() {
            return Ok(());
        }
        let live = live.join(", ");
        self.admin.check_live(&live)?;
        self.entitlements.check_live(&live)
    }

    /// Providers whose API base is not the real one: start-up warns about each.
    pub fn sandboxed_providers(&self) -> Vec<&'static str> {
        self.providers.sandboxed()
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

#[cfg(test)]
mod tests;
