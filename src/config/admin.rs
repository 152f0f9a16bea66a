//! `[admin]` and `[metrics]`: who may use the admin API and who may scrape.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, LIVE_MIN, Secret, bad};

#[derive(Debug, Clone, Deserialize)]
pub struct Admin {
    pub token: Secret,
    pub generate_token: bool,
    /// Named tokens (`admin.tokens.<name>.token` / `.role`): the name is who acted in the
    /// audit log. `admin.token` is one more, named `admin`, that may operate.
    #[serde(default)]
    pub tokens: BTreeMap<String, NamedToken>,
}

/// One admin's token and what it may do.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedToken {
    pub token: Secret,
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

impl Admin {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<&str> = vec![self.token.trimmed()];
        for (name, t) in &self.tokens {
            let key = format!("admin.tokens.{name}");
            let name_ok = (1..=40).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
            if !name_ok {
                return bad(&key, "a name is 1-40 of a-z, 0-9, - and _");
            }
            if name == "admin" || name == "fulfilld" {
                return bad(
                    &key,
                    "\"admin\" names admin.token and \"fulfilld\" the engine itself; choose another",
                );
            }
            if t.token.trimmed().len() < 16 {
                return bad(&format!("{key}.token"), "must be at least 16 characters");
            }
            if seen.contains(&t.token.trimmed()) {
                return bad(&format!("{key}.token"), "is another admin's token too");
            }
            seen.push(t.token.trimmed());
        }
        Ok(())
    }

    /// With a provider live (`live` names them), every token is long and set here, not
    /// generated into a local file that differs between machines.
    pub(super) fn check_live(&self, live: &str) -> Result<(), ConfigError> {
        if let Some((name, _)) = self
            .tokens
            .iter()
            .find(|(_, t)| t.token.expose().len() < LIVE_MIN)
        {
            return super::not_live(
                &format!("admin.tokens.{name}.token"),
                &format!(
                    "FULFILLD__ADMIN__TOKENS__{}__TOKEN (at least 32 random characters)",
                    name.to_ascii_uppercase()
                ),
                &format!("must be at least {LIVE_MIN} characters while {live} is live"),
            );
        }
        let generated = self.token.is_empty() && self.generate_token && self.tokens.is_empty();
        if generated || (!self.token.is_empty() && self.token.expose().len() < LIVE_MIN) {
            return super::not_live(
                "admin.token",
                "FULFILLD__ADMIN__TOKEN (at least 32 random characters, e.g. `openssl rand -hex 32`), or admin.generate_token = false to keep the admin API off",
                &format!("must be set, at least {LIVE_MIN} characters, while {live} is live"),
            );
        }
        Ok(())
    }
}

/// `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
pub struct Metrics {
    /// When set, a scrape must send `Authorization: Bearer <token>`.
    pub token: Secret,
}
