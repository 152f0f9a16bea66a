//! Reads of what a buyer has access to now, and the emailed sign-in links that let a buyer
//! prove an address on another device. Entitlements are granted by the `grant_entitlement`
//! step and revoked by refunds; these reads decide every access check, so a refund takes
//! effect at the next one. An address is one buyer whatever its case.

use serde::Serialize;

use super::{Result, Store};
use crate::clock::now_ms;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Access {
    pub feature: String,
    pub sku: String,
    pub order_id: String,
    pub granted_at: i64,
    pub expires_at: Option<i64>,
}

impl Store {
    /// The entitlements in force now (not revoked, not expired) that either belong to `customer_email` (an address the
    /// buyer proved) or were granted for one of `orders` (orders the buyer proved), oldest
    /// first, each once.
    pub async fn access(
        &self,
        customer_email: Option<&str>,
        orders: &[String],
    ) -> Result<Vec<Access>> {
        let mut whom = Vec::new();
        if customer_email.is_some() {
            whom.push("lower(customer_email) = lower($2)".to_owned());
        }
        if !orders.is_empty() {
            let first = if customer_email.is_some() { 3 } else { 2 };
            let marks: Vec<String> = (0..orders.len())
                .map(|i| format!("${}", first + i))
                .collect();
            whom.push(format!("order_id IN ({})", marks.join(", ")));
        }
        if whom.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT feature, sku, order_id, granted_at, expires_at FROM entitlements
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
               AND ({})
             ORDER BY granted_at, id",
            whom.join(" OR ")
        );
        // Only placeholders are formatted in; every value is bound.
        let mut q = sqlx::query_as::<_, Access>(sqlx::AssertSqlSafe(sql)).bind(now_ms());
        if let Some(email) = customer_email {
            q = q.bind(email);
        }
        for o in orders {
            q = q.bind(o);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Keeps a sign-in link for `email` (the token's hash), good until `expires_at`, if the
    /// address has access now and was sent fewer than `per_hour` links in the last hour:
    /// whether it was kept (and so is to be sent). Requests for one address at the same
    /// moment may each see the same count and pass the cap together; the per-client rate
    /// limit on the route bounds how many.
    pub async fn keep_sign_in(
        &self,
        email: &str,
        token_hash: &str,
        expires_at: i64,
        per_hour: i64,
    ) -> Result<bool> {
        let now = now_ms();
        let _writer = self.write_guard().await;
        let r = sqlx::query(
            "INSERT INTO sign_in_links (token_hash, email, created_at, expires_at)
             SELECT $1, lower($2), $3, $4
             WHERE EXISTS (SELECT 1 FROM entitlements
                           WHERE lower(customer_email) = lower($2) AND revoked_at IS NULL
                             AND (expires_at IS NULL OR expires_at > $3))
               AND (SELECT COUNT(*) FROM sign_in_links
                    WHERE email = lower($2) AND created_at > $3 - 3600000) < $5",
        )
        .bind(token_hash)
        .bind(email)
        .bind(now)
        .bind(expires_at)
        .bind(per_hour)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Uses the sign-in link whose token hashes to `token_hash`: its address, if the link
    /// was issued, has not expired and was not used before (it is used up now).
    pub async fn use_sign_in(&self, token_hash: &str) -> Result<Option<String>> {
        let now = now_ms();
        let _writer = self.write_guard().await;
        Ok(sqlx::query_scalar(
            "UPDATE sign_in_links SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING email",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Removes sign-in links that ended more than a day ago (the day keeps the per-hour
    /// cap's memory and what an admin may want to see of a recent complaint).
    pub async fn sign_in_cleanup(&self) -> Result<u64> {
        let _writer = self.write_guard().await;
        let r = sqlx::query("DELETE FROM sign_in_links WHERE expires_at < $1")
            .bind(now_ms() - 86_400_000)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
