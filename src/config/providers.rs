//! `[providers.*]` and `[sandbox]`: the payment providers' keys and where their APIs are, and
//! the rule that no compiled-in sandbox secret works against a live provider.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, Secret, a_url, bad, not_live};

#[derive(Debug, Clone, Deserialize)]
pub struct Providers {
    pub request_timeout_ms: u64,
    pub stripe: Stripe,
    pub razorpay: Razorpay,
    pub paypal: PayPal,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stripe {
    pub enabled: bool,
    pub secret_key: Secret,
    pub webhook_secrets: Vec<Secret>,
    pub api_base: String,
    pub webhook_tolerance_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Razorpay {
    pub enabled: bool,
    pub key_id: String,
    pub key_secret: Secret,
    pub webhook_secret: Secret,
    pub api_base: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PayPal {
    pub enabled: bool,
    pub client_id: String,
    pub client_secret: Secret,
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

#[derive(Debug, Clone, Deserialize)]
pub struct Sandbox {
    #[serde(deserialize_with = "super::values::parsed")]
    pub addr: SocketAddr,
    pub webhook_target: String,
    pub paypal_cert_file: String,
}

/// Where `fulfilld sandbox` writes its PayPal certificate by default.
pub const SANDBOX_PAYPAL_CERT: &str = "data/sandbox/paypal-cert.pem";

/// An enabled provider's setting that is empty: name the variable that sets it.
fn required(provider: &str, key: &str, empty: bool) -> Result<(), ConfigError> {
    if empty {
        return bad(
            &format!("providers.{provider}.{key}"),
            format!(
                "is empty; set FULFILLD__PROVIDERS__{}__{}",
                provider.to_uppercase(),
                key.to_uppercase()
            ),
        );
    }
    Ok(())
}

fn url(provider: &str, api_base: &str) -> Result<(), ConfigError> {
    a_url(&format!("providers.{provider}.api_base"), api_base)
}

impl Providers {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let s = &self.stripe;
        if s.enabled {
            required("stripe", "secret_key", s.secret_key.is_empty())?;
            if s.webhook_secrets.is_empty()
                || s.webhook_secrets.iter().any(|w| w.trimmed().is_empty())
            {
                return bad(
                    "providers.stripe.webhook_secrets",
                    "needs at least one non-empty secret; set FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS",
                );
            }
            url("stripe", &s.api_base)?;
        }
        let r = &self.razorpay;
        if r.enabled {
            required("razorpay", "key_id", r.key_id.is_empty())?;
            required("razorpay", "key_secret", r.key_secret.is_empty())?;
            required("razorpay", "webhook_secret", r.webhook_secret.is_empty())?;
            url("razorpay", &r.api_base)?;
        }
        let pp = &self.paypal;
        if pp.enabled {
            required("paypal", "client_id", pp.client_id.is_empty())?;
            required("paypal", "client_secret", pp.client_secret.is_empty())?;
            required("paypal", "webhook_id", pp.webhook_id.is_empty())?;
            url("paypal", &pp.api_base)?;
            // Transmission ids are kept a day (`webhook_transmissions`); a message must go
            // stale well before its id is forgotten.
            if !(1..=43_200).contains(&pp.webhook_tolerance_secs) {
                return bad(
                    "providers.paypal.webhook_tolerance_secs",
                    "must be between 1 and 43200 (12 hours)",
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
            return bad("providers", "no provider is enabled");
        }
        Ok(())
    }

    /// The providers that can move real money (their API base is not a loopback address,
    /// where `fulfilld sandbox` runs, or their key is a live key), after refusing any of them
    /// that still trusts a secret from `defaults` (the compiled-in sandbox values, which
    /// anyone can read in this repository). The error names the setting to fill in.
    pub(super) fn live(&self, defaults: &Providers) -> Result<Vec<&'static str>, ConfigError> {
        let mut live = Vec::new();
        let s = &self.stripe;
        if s.enabled
            && (!is_loopback_url(&s.api_base)
                || ["sk_live_", "rk_live_"]
                    .iter()
                    .any(|k| s.secret_key.expose().starts_with(k)))
        {
            live.push("stripe");
            let sandbox = &defaults.stripe.webhook_secrets;
            if s.webhook_secrets.is_empty() || s.webhook_secrets.iter().any(|w| sandbox.contains(w))
            {
                return not_live(
                    "providers.stripe.webhook_secrets",
                    "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS (the endpoint's whsec_… from the Stripe dashboard)",
                    "holds the sandbox's public secret while Stripe is live, so anyone could sign events",
                );
            }
            if s.secret_key == defaults.stripe.secret_key {
                return not_live(
                    "providers.stripe.secret_key",
                    "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY",
                    "is the sandbox's key while api_base is not the sandbox",
                );
            }
        }
        let r = &self.razorpay;
        if r.enabled && (!is_loopback_url(&r.api_base) || r.key_id.starts_with("rzp_live_")) {
            live.push("razorpay");
            let sandbox = &defaults.razorpay;
            if r.webhook_secret.is_empty() || r.webhook_secret == sandbox.webhook_secret {
                return not_live(
                    "providers.razorpay.webhook_secret",
                    "FULFILLD__PROVIDERS__RAZORPAY__WEBHOOK_SECRET (the secret set on the Razorpay dashboard's webhook)",
                    "holds the sandbox's public secret while Razorpay is live, so anyone could sign events",
                );
            }
            // The key secret also signs the checkout's payment signature, which the verify
            // call trusts.
            if r.key_secret == sandbox.key_secret {
                return not_live(
                    "providers.razorpay.key_secret",
                    "FULFILLD__PROVIDERS__RAZORPAY__KEY_SECRET",
                    "is the sandbox's public secret while Razorpay is live, so anyone could sign a payment",
                );
            }
        }
        let pp = &self.paypal;
        if pp.enabled && !is_loopback_url(&pp.api_base) {
            live.push("paypal");
            let sandbox = &defaults.paypal;
            if pp.webhook_id == sandbox.webhook_id {
                return not_live(
                    "providers.paypal.webhook_id",
                    "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_ID (the id PayPal gave your webhook)",
                    "is the sandbox's while PayPal is live",
                );
            }
            if pp.client_secret == sandbox.client_secret {
                return not_live(
                    "providers.paypal.client_secret",
                    "FULFILLD__PROVIDERS__PAYPAL__CLIENT_SECRET",
                    "is the sandbox's while PayPal is live",
                );
            }
            if !pp.webhook_cert_file.is_empty() && pp.webhook_cert_file == sandbox.webhook_cert_file
            {
                return not_live(
                    "providers.paypal.webhook_cert_file",
                    "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE= (empty, PayPal's own certificates)",
                    "is the certificate fulfilld sandbox writes while PayPal is live",
                );
            }
        }
        Ok(live)
    }

    /// Providers whose API base is not the real one: start-up warns about each.
    pub fn sandboxed(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.stripe.enabled && !self.stripe.api_base.starts_with("https://api.stripe.com") {
            v.push("stripe");
        }
        if self.razorpay.enabled
            && !self
                .razorpay
                .api_base
                .starts_with("https://api.razorpay.com")
        {
            v.push("razorpay");
        }
        if self.paypal.enabled && !self.paypal.api_base.starts_with("https://api-m.paypal.com") {
            v.push("paypal");
        }
        v
    }
}

impl Sandbox {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        a_url("sandbox.webhook_target", &self.webhook_target)
    }
}

/// Whether `url` names a loopback host (127.0.0.0/8, ::1, localhost), where
/// `fulfilld sandbox` runs; anything else may be a real provider.
pub(super) fn is_loopback_url(url: &str) -> bool {
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
