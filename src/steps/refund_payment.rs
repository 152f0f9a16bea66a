//! `refund_payment`: refund the whole payment of an order that sold out, through the
//! provider, once (see `jobs::refund_payment`). The refund is recorded and applied like any
//! other (`store::refunds`, asked for by `refund_calls::make`): payment and order
//! `refunded`. The same run serves `refund_extra_payment`: a second captured payment of an
//! order paid already is refunded, leaving the order as it is.

use jobs::{StepError, StepKind};

use super::{StepResult, complete, payment_of};
use crate::Engine;
use crate::background::refund_calls::{self, Made};
use crate::store::steps::Lease;

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let payment = payment_of(e, lease).await?;
    // One fixed id per payment and reason: a retried step finds the same refund, and asks
    // the provider with the same idempotency key.
    let (refund_id, reason) = if lease.step.kind == StepKind::RefundExtraPayment.as_str() {
        (format!("rfd_extra_{}", payment.id), "duplicate_payment")
    } else {
        (format!("rfd_stock_{}", payment.id), "out_of_stock")
    };
    let row = e
        .store
        .request_engine_refund(&payment, &refund_id, reason)
        .await?;
    match refund_calls::make(e, &row, &payment).await? {
        Made::Settled(row) => {
            let outcome = format!(
                "refunded {}",
                row.provider_refund_id.as_deref().unwrap_or(&row.id)
            );
            let tx = e.store.begin().await?;
            complete(tx, lease, &outcome).await
        }
        // Booked when the provider's event says it succeeded (a failure then sends the
        // order to review: the buyer is still owed the money).
        Made::Pending(row) => {
            let tx = e.store.begin().await?;
            complete(
                tx,
                lease,
                &format!(
                    "refund {} pending at the provider",
                    row.provider_refund_id.as_deref().unwrap_or(&row.id)
                ),
            )
            .await
        }
        Made::Refused(_, why) => Err(StepError::Permanent(why)),
        Made::Unanswered(_, why) => Err(StepError::Transient(why)),
    }
}

pub struct RefundPayment;

#[async_trait::async_trait]
impl super::Step for RefundPayment {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::RefundPayment
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}

pub struct RefundExtraPayment;

#[async_trait::async_trait]
impl super::Step for RefundExtraPayment {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::RefundExtraPayment
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}
