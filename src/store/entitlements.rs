//! Reads of what a buyer has access to now. Entitlements are granted by the
//! `grant_entitlement` step and revoked by refunds; these reads decide every access check,
//! so a refund takes effect at the next one.

use serde::Serialize;

use super::{Result, Store};
use crate::domain::now_ms;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Access {
    pub feature: String,
    pub sku: String,
    pub order_id: String,
    pub granted_at: i64,
    pub expires_at: Option<i64>,
}

impl Store {
    /// The buyer's entitlements in force now (not revoked, not expired), oldest first.
    pub async fn access_of(&self, customer_email: &str) -> Result<Vec<Access>> {
        Ok(sqlx::query_as::<_, Access>(
            "SELECT feature, sku, order_id, granted_at, expires_at FROM entitlements
             WHERE customer_email = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $2)
             ORDER BY granted_at, id",
        )
        .bind(customer_email)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?)
    }
}
