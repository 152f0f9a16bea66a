//! The shop's own settings: `[checkout]`, `[invoice]`, `[email]`, `[entitlements]`,
//! `[refunds]`, `[payments]` and `[reconciliation]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lettre::message::Mailbox;
use serde::Deserialize;

use super::{ConfigError, LIVE_MIN, Secret, a_url, bad, not_live, values::parsed};

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

#[derive(Debug, Clone, Deserialize)]
pub struct Email {
    pub transport: Transport,
    pub outbox_dir: PathBuf,
    /// May hold the SMTP password.
    pub smtp_url: Secret,
    #[serde(deserialize_with = "parsed")]
    pub from: Mailbox,
}

/// How receipts leave: written as `.eml` files to `email.outbox_dir`, or sent over SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Transport {
    File,
    Smtp,
}

impl TryFrom<String> for Transport {
    type Error = String;

    fn try_from(s: String) -> Result<Transport, String> {
        match s.as_str() {
            "file" => Ok(Transport::File),
            "smtp" => Ok(Transport::Smtp),
            other => Err(format!("{other:?} is not \"file\" or \"smtp\"")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Entitlements {
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Signs the access cookie (`POST /api/entitlements/activate`); the same on every intake.
    pub cookie_secret: Secret,
    pub cookie_max_age_days: u32,
    /// The page a sign-in email links to; `{token}` becomes the link's token.
    pub sign_in_url: String,
    /// How long a sign-in link works (once).
    pub sign_in_ttl_secs: u64,
    /// Sign-in emails one address may be sent per hour.
    pub sign_in_per_hour: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    pub feature: String,
    #[serde(default)]
    pub duration_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refunds {
    pub restock: bool,
    pub resume_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Payments {
    pub stale_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reconciliation {
    pub interval_secs: u64,
    pub lookback_secs: u64,
}

impl Checkout {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        a_url("checkout.success_url", &self.success_url)?;
        a_url("checkout.cancel_url", &self.cancel_url)
    }
}

impl Invoice {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.tax_rate_bps > 10_000 {
            return bad("invoice.tax_rate_bps", "must be at most 10000 (100 %)");
        }
        if self.series.is_empty() {
            return bad("invoice.series", "must not be empty");
        }
        Ok(())
    }
}

impl Email {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.transport == Transport::Smtp && self.smtp_url.is_empty() {
            return bad(
                "email.smtp_url",
                "is empty while email.transport = \"smtp\"; set FULFILLD__EMAIL__SMTP_URL",
            );
        }
        Ok(())
    }
}

impl Entitlements {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        a_url("entitlements.sign_in_url", &self.sign_in_url)?;
        if !self.sign_in_url.contains("{token}") {
            return bad(
                "entitlements.sign_in_url",
                "must hold {token}, where the link's token goes",
            );
        }
        Ok(())
    }

    /// With a provider live (`live` names them), the cookie secret is set here and long, not
    /// generated into a local file that differs between intakes.
    pub(super) fn check_live(&self, live: &str) -> Result<(), ConfigError> {
        if self.cookie_secret.expose().len() < LIVE_MIN {
            return not_live(
                "entitlements.cookie_secret",
                "FULFILLD__ENTITLEMENTS__COOKIE_SECRET (at least 32 random characters, the same on every intake)",
                &format!("must be set, at least {LIVE_MIN} characters, while {live} is live"),
            );
        }
        Ok(())
    }
}

impl Reconciliation {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.lookback_secs == 0 {
            return bad("reconciliation.lookback_secs", "must be positive");
        }
        Ok(())
    }
}
