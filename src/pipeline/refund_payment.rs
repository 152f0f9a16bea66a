//! `refund_payment`: refund the whole payment of an order that sold out, through the
//! provider, once (see `jobs::refund_payment`). The refund is recorded and applied like any
//! other (`store::refunds`): payment and order `refunded`. The same run serves
//! `refund_extra_payment`: a second captured payment of an order paid already is refunded,
//! leaving the order as it is.

use jobs::refund_payment::idempotency_key;
use jobs::{StepError, StepKind};

use super::{StepResult, complete, payment_of, provider_of};
use crate::Engine;
use crate::providers::RefundRequest;
use crate::store::steps::Lease;

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let payment = payment_of(e, lease).await?;
    let (provider, at) = provider_of(e, &payment)?;
    // One fixed id per payment: a retried step records the same refund.
    let (refund_id, reason) = if lease.step.kind == StepKind::RefundExtraPayment.as_str() {
        (format!("rfd_extra_{}", payment.id), "duplicate_payment")
    } else {
        (format!("rfd_stock_{}", payment.id), "out_of_stock")
    };
    let req = RefundRequest {
        refund_id: &refund_id,
        payment_id: &payment.id,
        amount_minor: payment.amount_minor,
        currency: &payment.currency,
        idempotency_key: &idempotency_key(&payment.id),
    };
    e.store
        .request_engine_refund(&payment, &refund_id, reason)
        .await?;
    let refund = provider.refund(&at, &req).await?;
    let (row, mut wake) = e
        .store
        .refund_answered(&refund_id, &refund.id, refund.failed())
        .await?;
    if row.status == "failed" {
        return Err(StepError::Permanent(format!(
            "refund {} is {}",
            refund.id, refund.status
        )));
    }
    let tx = e.store.begin().await?;
    wake.extend(complete(tx, lease, &format!("refunded {}", refund.id)).await?);
    Ok(wake)
}
