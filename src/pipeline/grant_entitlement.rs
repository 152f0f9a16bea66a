//! `grant_entitlement`: what each paid SKU grants, from `entitlements.grants` (expiry:
//! `jobs::grant_entitlement`).

use jobs::StepError;
use jobs::grant_entitlement::expires_at_ms;

use crate::Engine;
use crate::domain::now_ms;
use crate::store::steps::Lease;
use crate::store::{StoreError, Tx, orders};

/// Grants in `tx` (see `pipeline::batch`); returns the step's outcome.
pub async fn apply(e: &Engine, tx: &mut Tx, lease: &Lease) -> Result<String, StepError> {
    let order_id = &lease.step.order_id;
    // Locks the order row: a refund applied meanwhile either committed before (and is
    // seen here) or waits for this grant and revokes it.
    let order = orders::lock_in(tx, order_id)
        .await?
        .ok_or_else(|| StepError::Permanent("order row missing".into()))?;
    if order.status == "refunded" {
        return Ok("nothing to grant: order refunded".to_owned());
    }
    grant(e, tx, &order).await
}

/// Inserts what the order's items grant; says what that was.
async fn grant(e: &Engine, tx: &mut Tx, order: &orders::OrderRow) -> Result<String, StepError> {
    let order_id = &order.id;
    let items = orders::items_in(tx, order_id).await?;
    let now = now_ms();
    let mut granted = Vec::new();
    for it in &items {
        let Some(grant) = e.config.grant_for(&it.sku) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO entitlements (order_id, sku, customer_email, feature, granted_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (order_id, sku) DO NOTHING",
        )
        .bind(order_id)
        .bind(&it.sku)
        .bind(&order.customer_email)
        .bind(&grant.feature)
        .bind(now)
        .bind(expires_at_ms(now, grant.duration_days))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from)?;
        granted.push(grant.feature.as_str());
    }
    Ok(if granted.is_empty() {
        "nothing to grant".to_owned()
    } else {
        format!("granted {}", granted.join(", "))
    })
}
