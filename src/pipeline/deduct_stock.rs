//! `deduct_stock`: consume the reservations with a conditional decrement; when the stock is
//! gone, switch the order to the refund path (see `jobs::deduct_stock`).

use std::collections::{BTreeMap, HashMap};

use jobs::deduct_stock::Outcome;
use jobs::{StepError, StepKind};

use super::batch::Tail;
use super::{StepResult, complete};
use crate::Engine;
use crate::domain::now_ms;
use crate::store::steps::{self, Lease};
use crate::store::{StoreError, Tx, catalogue, orders, payments};

/// Consumes the reservations in `tx`; the stock decrements wait in `tail` (see
/// `pipeline::batch`). Returns the step's outcome.
pub async fn apply(tx: &mut Tx, lease: &Lease, tail: &mut Tail) -> Result<String, StepError> {
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
    for it in &items {
        let held_qty = held.get(&it.sku).copied().unwrap_or(0).min(it.qty);
        let d = tail.stock.entry(it.sku.clone()).or_default();
        d.0 += it.qty;
        d.1 += held_qty;
    }
    Ok(Outcome::Deducted.as_str().to_owned())
}

/// Deducts the stock of `stock` (SKU → quantity, of which held), right before the commit:
/// the SKU rows are what every order for the same item contends for, so each is locked only
/// for its decrement and the commit, once for a whole batch, in SKU order. False, when some
/// SKU has not enough on hand: the caller rolls back, and each order finds out alone.
pub async fn deduct_all(
    tx: &mut Tx,
    stock: &BTreeMap<String, (i64, i64)>,
) -> Result<bool, StoreError> {
    for (sku, (qty, held)) in stock {
        if !catalogue::try_deduct(tx, sku, *qty, *held).await? {
            return Ok(false);
        }
    }
    Ok(true)
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
