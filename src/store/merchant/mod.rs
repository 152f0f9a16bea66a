//! Webhooks to the merchant's systems: the endpoints admins configure, and one delivery per
//! (event, endpoint) — queued in the same transaction as the change it tells of, so an
//! event is never announced that did not happen, nor lost when one did. The sender
//! (`background::notify_merchant`) claims due deliveries with a lease, like steps.
//!
//! Events: `order.paid`, `order.fulfilled`, `order.payment_failed`, `order.refunded`,
//! `order.needs_review`, `step.dead`. With no endpoint subscribed, queuing one costs a single
//! read of the (small) endpoints table.

use serde::Serialize;
use serde_json::{Value, json};

use super::rows::{ItemRow, OrderRow};
use super::{Backend, Result, Store, Tx, placeholders};
use crate::clock::{now_ms, rfc3339};
use crate::domain::new_id;

mod deliveries;

pub use deliveries::*;

pub const EVENT_TYPES: [&str; 7] = [
    "order.paid",
    "order.fulfilled",
    "order.payment_failed",
    "order.refunded",
    "order.refund_failed",
    "order.needs_review",
    "step.dead",
];

/// Event types as an endpoint keeps them — `*`, or known types space-separated, each once
/// — or why `types` cannot be (for the admin API and the configuration alike).
pub fn stored_types(types: &[String]) -> std::result::Result<String, String> {
    if types.is_empty() {
        return Err("name at least one event type, or \"*\"".into());
    }
    let mut kept: Vec<&str> = Vec::new();
    for t in types {
        if t == "*" {
            continue;
        }
        let Some(known) = EVENT_TYPES.iter().find(|k| **k == t.as_str()) else {
            return Err(format!(
                "no event type {t:?}; known: {}",
                EVENT_TYPES.join(", ")
            ));
        };
        if !kept.contains(known) {
            kept.push(known);
        }
    }
    if types.iter().any(|t| t == "*") {
        return Ok("*".into());
    }
    Ok(kept.join(" "))
}

/// An endpoint without its secrets.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    /// Space-separated event types, or `*`.
    #[serde(skip)]
    pub event_types: String,
    #[serde(skip)]
    pub enabled: i64,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
    pub previous_secret_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Endpoint {
    pub fn types(&self) -> Vec<&str> {
        self.event_types.split_whitespace().collect()
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled == 1
    }
}

const ENDPOINT_COLS: &str = "id, url, description, event_types, enabled, disabled_reason, \
                             failing_since, previous_secret_until, created_at, updated_at";

/// The secrets that sign a delivery now: the current one, and the previous one while its
/// grace lasts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Secrets {
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
}

impl Secrets {
    /// The secret a rotation replaced and when its grace ends, while the grace lasts.
    pub fn previous(&self, now: i64) -> Option<(&str, i64)> {
        match (&self.previous_secret, self.previous_secret_until) {
            (Some(p), Some(until)) if until > now => Some((p, until)),
            _ => None,
        }
    }

    pub fn signing(&self, now: i64) -> Vec<&str> {
        let mut v = vec![self.secret.as_str()];
        v.extend(self.previous(now).map(|(p, _)| p));
        v
    }
}

/// A new endpoint's signing secret: `whsec_` and 32 random bytes, base64 (the form the
/// Standard Webhooks libraries read).
pub fn new_secret() -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    )
}

/// Whether `secret` is one the Standard Webhooks libraries read: `whsec_` and base64 of at
/// least 16 bytes.
pub fn secret_reads(secret: &str) -> bool {
    use base64::Engine as _;
    secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| k.len() >= 16)
}

/// Changes to an endpoint (`None`: leave as is).
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<String>,
    pub enabled: Option<bool>,
}

impl Store {
    /// A new endpoint, enabled, with a new secret: the endpoint and that secret.
    pub async fn create_endpoint(
        &self,
        url: &str,
        description: &str,
        event_types: &str,
        actor: &str,
    ) -> Result<(Endpoint, String)> {
        let id = new_id("ep");
        let secret = new_secret();
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO merchant_endpoints (id, url, description, event_types, enabled, secret,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $6, $6)",
        )
        .bind(&id)
        .bind(url)
        .bind(description)
        .bind(event_types)
        .bind(&secret)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        super::audit::record(&mut tx, actor, "endpoint.create", &id, Some(url)).await?;
        let ep = endpoint_in(&mut tx, &id).await?;
        tx.commit().await?;
        Ok((
            ep.ok_or_else(|| super::StoreError::Other("endpoint vanished".into()))?,
            secret,
        ))
    }

    /// Keeps the configured endpoint `name` as `ep_cfg_<name>`: added enabled the first
    /// time; afterwards its URL and event types follow the configuration, and a new secret
    /// there is a rotation (the one it replaces signs for a day more). Whether it is enabled
    /// stays the admins' (and the failure rule's) to say.
    pub async fn keep_configured_endpoint(
        &self,
        name: &str,
        url: &str,
        event_types: &str,
        secret: &str,
    ) -> Result<()> {
        let id = format!("ep_cfg_{name}");
        let now = now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO merchant_endpoints (id, url, description, event_types, enabled, secret,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5, $6, $6)
             ON CONFLICT (id) DO UPDATE SET url = $2, event_types = $4,
                 previous_secret = CASE WHEN merchant_endpoints.secret = $5
                     THEN merchant_endpoints.previous_secret ELSE merchant_endpoints.secret END,
                 previous_secret_until = CASE WHEN merchant_endpoints.secret = $5
                     THEN merchant_endpoints.previous_secret_until ELSE $6 + 86400000 END,
                 secret = $5,
                 updated_at = CASE WHEN merchant_endpoints.url = $2
                     AND merchant_endpoints.event_types = $4 AND merchant_endpoints.secret = $5
                     THEN merchant_endpoints.updated_at ELSE $6 END",
        )
        .bind(&id)
        .bind(url)
        .bind(format!("configured: merchant_webhooks.endpoints.{name}"))
        .bind(event_types)
        .bind(secret)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn endpoints(&self) -> Result<Vec<Endpoint>> {
        Ok(sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLS} FROM merchant_endpoints ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        Ok(sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLS} FROM merchant_endpoints WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn endpoint_secrets(&self, id: &str) -> Result<Option<Secrets>> {
        Ok(sqlx::query_as::<_, Secrets>(
            "SELECT secret, previous_secret, previous_secret_until FROM merchant_endpoints
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Applies `change`, audited; enabling an endpoint forgets its failures. `None` if there
    /// is no such endpoint.
    pub async fn change_endpoint(
        &self,
        id: &str,
        change: &EndpointChange,
        actor: &str,
    ) -> Result<Option<Endpoint>> {
        let mut tx = self.begin().await?;
        let Some(before) = endpoint_in(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let enabled = change.enabled.unwrap_or(before.is_enabled());
        let reenabled = enabled && !before.is_enabled();
        sqlx::query(
            "UPDATE merchant_endpoints SET url = $1, description = $2, event_types = $3,
                 enabled = $4, updated_at = $5,
                 disabled_reason = CASE WHEN $4 = 1 THEN NULL
                                        ELSE COALESCE(disabled_reason, 'disabled by an admin') END,
                 failing_since = CASE WHEN $6 = 1 THEN NULL ELSE failing_since END
             WHERE id = $7",
        )
        .bind(change.url.as_deref().unwrap_or(&before.url))
        .bind(change.description.as_deref().unwrap_or(&before.description))
        .bind(change.event_types.as_deref().unwrap_or(&before.event_types))
        .bind(i64::from(enabled))
        .bind(now_ms())
        .bind(i64::from(reenabled))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let what = match change.enabled {
            Some(true) if reenabled => "endpoint.enable",
            Some(false) if before.is_enabled() => "endpoint.disable",
            _ => "endpoint.update",
        };
        super::audit::record(&mut tx, actor, what, id, None).await?;
        let after = endpoint_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// A new secret for the endpoint; the one it replaces still signs for `grace_ms`. The
    /// new secret, or `None` if there is no such endpoint.
    pub async fn rotate_secret(
        &self,
        id: &str,
        grace_ms: i64,
        actor: &str,
    ) -> Result<Option<String>> {
        let secret = new_secret();
        let now = now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "UPDATE merchant_endpoints SET previous_secret = secret, previous_secret_until = $1,
                 secret = $2, updated_at = $3
             WHERE id = $4",
        )
        .bind(now + grace_ms)
        .bind(&secret)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        super::audit::record(&mut tx, actor, "endpoint.rotate_secret", id, None).await?;
        tx.commit().await?;
        Ok(Some(secret))
    }
}

async fn endpoint_in(tx: &mut Tx, id: &str) -> Result<Option<Endpoint>> {
    Ok(sqlx::query_as::<_, Endpoint>(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLS} FROM merchant_endpoints WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}
