//! `deduct_stock`: consume the reservations with a conditional decrement; when the stock is
//! gone, switch the order to the refund path (see `jobs::deduct_stock`).

use std::collections::BTreeMap;

use jobs::deduct_stock::Outcome;
use jobs::{StepError, StepKind};

use super::tail::{Deferred, Tail};
use super::{StepResult, complete};
use crate::Engine;
use crate::domain::OrderStatus;
use crate::domain::StepStatus;
use crate::store::steps::{self, Lease};
use crate::store::{StoreError, Tx, catalogue, orders, payments};

/// Consumes the reservations of every order of `leases` in `tx`; the stock decrements wait
/// in `tail` (see `pipeline::batch`). Returns each step's outcome.
pub async fn apply(
    tx: &mut Tx,
    leases: &[&Lease],
    tail: &mut Tail,
) -> Result<Vec<String>, StepError> {
    let order_ids: Vec<&str> = leases.iter().map(|l| l.step.order_id.as_str()).collect();
    let items = orders::items_many(tx, &order_ids).await?;
    let held = payments::end_held(tx, &order_ids, "consumed").await?;
    for (order, items) in order_ids.iter().zip(&items) {
        for it in items {
            let held_qty = held
                .iter()
                .find(|(o, sku, _)| o == order && *sku == it.sku)
                .map_or(0, |h| h.2)
                .min(it.qty);
            let d = tail
                .part::<Deductions>()
                .0
                .entry(it.sku.clone())
                .or_default();
            d.0 += it.qty;
            d.1 += held_qty;
        }
    }
    Ok(vec![Outcome::Deducted.as_str().to_owned(); leases.len()])
}

/// The stock a transaction's steps deduct: SKU → (quantity, of which held).
#[derive(Default)]
pub struct Deductions(BTreeMap<String, (i64, i64)>);

#[async_trait::async_trait]
impl Deferred for Deductions {
    /// First: no stock left rolls the transaction back.
    fn rank(&self) -> u8 {
        0
    }

    async fn flush(&self, _e: &Engine, tx: &mut Tx) -> Result<bool, StoreError> {
        deduct_all(tx, &self.0).await
    }
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
    // Run from a batch of many orders' steps: the refund is caused by this one's request.
    tx.cause = lease.step.request_id.clone();
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
        StepStatus::Waiting,
    )
    .await?;
    orders::transition(
        &mut tx,
        order_id,
        &[OrderStatus::Paid],
        OrderStatus::RefundPending,
    )
    .await?;
    complete(tx, lease, Outcome::OutOfStock.as_str()).await
}

pub struct DeductStock;

#[async_trait::async_trait]
impl super::Step for DeductStock {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::DeductStock
    }

    async fn run_batch(
        &self,
        _e: &Engine,
        tx: &mut Tx,
        leases: &[&Lease],
        tail: &mut Tail,
    ) -> Result<Vec<String>, StepError> {
        apply(tx, leases, tail).await
    }

    /// No stock left: the order is refunded instead.
    async fn refused(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        out_of_stock(e, lease).await
    }
}
