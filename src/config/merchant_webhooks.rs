//! `[merchant_webhooks]`: sending to the merchant's systems (`background::notify_merchant`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Millis, Schedule, Secret, bad};

/// Durations are written like `5s`, `30m`, `5d`, and read once, here.
#[derive(Debug, Clone, Deserialize)]
pub struct MerchantWebhooks {
    /// One attempt's time limit.
    pub timeout: Millis,
    /// The waits before each retry; after the last, the delivery is dead.
    pub retry_schedule: Schedule,
    /// An endpoint whose every attempt has failed for this long is disabled.
    pub disable_after: Millis,
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
#[derive(Debug, Clone, Deserialize)]
pub struct ConfiguredEndpoint {
    pub url: String,
    /// Event types, as a list or one space- or comma-separated string; `*` for all.
    pub event_types: OneOrMany,
    /// `whsec_` and base64, as the Standard Webhooks libraries read it.
    pub secret: Secret,
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

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.timeout.ms() == 0 {
            return bad("merchant_webhooks.timeout", "must be more than 0");
        }
        if self.concurrency == 0 {
            return bad("merchant_webhooks.concurrency", "must be at least 1");
        }
        for (name, ep) in &self.endpoints {
            let key = |k: &str| format!("merchant_webhooks.endpoints.{name}.{k}");
            if name.is_empty()
                || name.len() > 40
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return bad(
                    &format!("merchant_webhooks.endpoints.{name}"),
                    "a name of 1-40 of a-z, 0-9, _ and -",
                );
            }
            if let Err(why) = crate::outbound::guard(&self.reach(), &ep.url) {
                return bad(&key("url"), why);
            }
            if let Err(why) = crate::store::merchant::stored_types(&ep.event_types.items()) {
                return bad(&key("event_types"), why);
            }
            if !crate::store::merchant::secret_reads(ep.secret.expose()) {
                return bad(
                    &key("secret"),
                    format!(
                        "must be whsec_ and base64 of at least 16 bytes; set FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__{}__SECRET",
                        name.to_ascii_uppercase()
                    ),
                );
            }
        }
        Ok(())
    }
}
