//! `deduct_stock`: consume the reservations with a conditional decrement; when the stock is
//! gone, switch the order to the refund path (see `jobs::deduct_stock`).

use std::collections::HashMap;

use jobs::deduct_stock::Outcome;
use jobs::{StepError, StepKind};

use super::batch::Applied;
use super::{StepResult, complete, finish};
use crate::Engine;
use crate::domain::now_ms;
use crate::store::steps::{self, Lease};
use crate::store::{StoreError, Tx, catalogue, orders, payments};

/// Consumes the reservations and deducts the stock in `tx` (see `pipeline::batch`).
pub async fn apply(tx: &mut Tx, lease: &Lease) -> Result<Applied, StepError> {
    let order_id = &lease.step.order_id;
    let items = orders::items_in(tx, order_id).await?;
    let held: HashMap<String, i64> = sqlx::query_as(
        "SELECT sku, qty FROM stock_reservations WHERE order_id = $1 AND status = 'held'",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(StoreError::from)?
    .into_iter()
    .collect();
    sqlx::query(
        "UPDATE stock_reservations SET status = 'consumed', updated_at = $1
         WHERE order_id = $2 AND status = 'held'",
    )
    .bind(now_ms())
    .bind(order_id)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::from)?;
    let Some(wake) = finish(tx, lease, Outcome::Deducted.as_str()).await? else {
        return Ok(Applied::LeaseLost);
    };
    // The SKU rows are what every order for the same item contends for: touch them last,
    // so each holds their lock only for the decrement and the commit.
    for it in &items {
        let held_qty = held.get(&it.sku).copied().unwrap_or(0).min(it.qty);
        if !catalogue::try_deduct(tx, &it.sku, it.qty, held_qty).await? {
            // The caller rolls back the lines already deducted, and refunds instead.
            return Ok(Applied::OutOfStock);
        }
    }
    Ok(Applied::Done(wake))
}

/// Some line found no stock: the order is refunded instead, its reservations released.
pub async fn out_of_stock(e: &Engine, lease: &Lease) -> StepResult {
    let order_id = &lease.step.order_id;
    let mut tx = e.store.begin().await?;
    payments::release_reservations(&mut tx, order_id).await?;
    steps::skip(
        &mut tx,
        order_id,
        &[StepKind::IssueInvoice, StepKind::GrantEntitlement],
        "out of stock: order refunded",
    )
    .await?;
    steps::insert(
        &mut tx,
        order_id,
        &lease.step.payment_id,
        StepKind::RefundPayment,
        "waiting",
    )
    .await?;
    orders::transition(&mut tx, order_id, &["paid"], "refund_pending").await?;
    complete(tx, lease, Outcome::OutOfStock.as_str()).await
}
