//! `grant_entitlement`: what each paid SKU grants, from `entitlements.grants` (expiry:
//! `jobs::grant_entitlement`).

use jobs::StepError;
use jobs::grant_entitlement::expires_at_ms;

use crate::Engine;
use crate::clock::now_ms;
use crate::domain::OrderStatus;
use crate::store::orders::{self, OrderRow};
use crate::store::steps::Lease;
use crate::store::{StoreError, Tx, value_rows};

/// Grants what the orders of `leases` bought, in `tx` (see `pipeline::batch`), with one
/// insert for them all; returns each step's outcome.
pub async fn apply(e: &Engine, tx: &mut Tx, leases: &[&Lease]) -> Result<Vec<String>, StepError> {
    let order_ids: Vec<&str> = leases.iter().map(|l| l.step.order_id.as_str()).collect();
    // Locks the order rows: a refund applied meanwhile either committed before (and is
    // seen here) or waits for this grant and revokes it.
    let found = orders::get_many(tx, &order_ids, true).await?;
    let items = orders::items_many(tx, &order_ids).await?;
    let now = now_ms();
    let mut outcomes = Vec::with_capacity(leases.len());
    // (order, SKU, feature, expiry) of every entitlement to insert.
    let mut grants: Vec<(&OrderRow, &str, &str, Option<i64>)> = Vec::new();
    for (order, items) in found.iter().zip(&items) {
        let order = order
            .as_ref()
            .ok_or_else(|| StepError::Permanent("order row missing".into()))?;
        if order.status == OrderStatus::Refunded {
            outcomes.push("nothing to grant: order refunded".to_owned());
            continue;
        }
        let mut granted = Vec::new();
        for it in items {
            let Some(grant) = e.config.grant_for(&it.sku) else {
                continue;
            };
            grants.push((
                order,
                &it.sku,
                &grant.feature,
                expires_at_ms(now, grant.duration_days),
            ));
            granted.push(grant.feature.as_str());
        }
        outcomes.push(if granted.is_empty() {
            "nothing to grant".to_owned()
        } else {
            format!("granted {}", granted.join(", "))
        });
    }
    if !grants.is_empty() {
        let sql = format!(
            "INSERT INTO entitlements (order_id, sku, customer_email, feature, expires_at, granted_at)
             VALUES {} ON CONFLICT (order_id, sku) DO NOTHING",
            value_rows(2, grants.len(), 5, ", $1")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(grants.len() == 1)
            .bind(now);
        for (order, sku, feature, expires) in &grants {
            q = q
                .bind(&order.id)
                .bind(*sku)
                .bind(&order.customer_email)
                .bind(*feature)
                .bind(*expires);
        }
        q.execute(&mut **tx).await.map_err(StoreError::from)?;
    }
    Ok(outcomes)
}

pub struct GrantEntitlement;

#[async_trait::async_trait]
impl super::Step for GrantEntitlement {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::GrantEntitlement
    }

    async fn run_batch(
        &self,
        e: &Engine,
        tx: &mut Tx,
        leases: &[&Lease],
        _tail: &mut super::tail::Tail,
    ) -> Result<Vec<String>, StepError> {
        apply(e, tx, leases).await
    }
}
