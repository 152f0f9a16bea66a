//! An admin's manual actions on an order, beside the dead-letter ones: mark an order that
//! needs review resolved, and ask its provider about its payment again. Each is written to
//! `admin_actions` in the same transaction as its effect: who, when, why.

use jobs::{StepKind, Wake};

use super::audit::record as audit;
use super::{Result, Store, orders, payments};
use crate::clock::now_ms;
use crate::domain::OrderStatus;

/// What [`Store::resolve_order`] did.
#[derive(Debug)]
pub enum Resolved {
    /// The order is `resolved`; this many dead steps of it were discarded.
    Done {
        discarded: u64,
    },
    NotFound,
    /// Only an order that needs review can be resolved.
    NotInReview {
        status: OrderStatus,
    },
}

/// What [`Store::recheck_payment`] did.
#[derive(Debug)]
pub enum Rechecked {
    /// The payment is read again; wake this.
    Armed(Vec<Wake>),
    NotFound,
    NoPayment,
}

impl Store {
    /// Closes an order that needs review, by a human's decision (refunded by phone,
    /// shipped by hand, …): its dead steps are discarded, its held stock released, and it
    /// is `resolved`, with the reason in the audit log.
    pub async fn resolve_order(&self, id: &str, actor: &str, reason: &str) -> Result<Resolved> {
        let mut tx = self.begin().await?;
        let Some(order) = orders::get_many(&mut tx, &[id], true)
            .await?
            .pop()
            .flatten()
        else {
            return Ok(Resolved::NotFound);
        };
        if order.status != OrderStatus::NeedsReview {
            return Ok(Resolved::NotInReview {
                status: order.status,
            });
        }
        let now = now_ms();
        let discarded = sqlx::query(
            "UPDATE steps SET status = 'discarded', outcome = $1, updated_at = $2
             WHERE order_id = $3 AND status = 'dead'",
        )
        .bind(format!("discarded by {actor}: order resolved"))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        payments::release_reservations(&mut tx, id).await?;
        orders::transition(
            &mut tx,
            id,
            &[OrderStatus::NeedsReview],
            OrderStatus::Resolved,
        )
        .await?;
        audit(&mut tx, actor, "order.resolve", id, Some(reason)).await?;
        tx.commit().await?;
        Ok(Resolved::Done { discarded })
    }

    /// Asks the provider about the order's latest payment again (`reconcile_payment`): its
    /// answer decides, as when an event contradicted the store.
    pub async fn recheck_payment(
        &self,
        id: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Rechecked> {
        let mut tx = self.begin().await?;
        if orders::get_many(&mut tx, &[id], true)
            .await?
            .pop()
            .flatten()
            .is_none()
        {
            return Ok(Rechecked::NotFound);
        }
        let Some(p) = payments::latest_for_order(&mut *tx, id).await? else {
            return Ok(Rechecked::NoPayment);
        };
        let wake = super::steps::arm(&mut tx, id, &p.id, StepKind::ReconcilePayment).await?;
        audit(&mut tx, actor, "order.recheck_payment", id, reason).await?;
        tx.commit().await?;
        Ok(Rechecked::Armed(wake.into_iter().collect()))
    }
}
