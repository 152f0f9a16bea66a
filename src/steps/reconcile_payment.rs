//! `reconcile_payment`: re-read a payment an event contradicted and let the provider's
//! answer decide (see `jobs::reconcile_payment`).

use jobs::{StepError, StepKind};

use super::{StepResult, complete, payment_of, provider_of};
use crate::Engine;
use crate::domain::{OrderStatus, PaymentStatus};
use crate::providers::PaymentChange;
use crate::store::steps::Lease;
use crate::store::{orders, payments, steps};

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let payment = payment_of(e, lease).await?;
    let (provider, at) = provider_of(e, &payment)?;
    let state = provider.payment_state(&at).await?;
    let provider_failed = matches!(state.change, PaymentChange::Failed | PaymentChange::Expired);
    let mut tx = e.store.begin().await?;
    // Read again inside the transaction: the payment may have moved since.
    let Some(p) = payments::by_id(&mut *tx, &payment.id).await? else {
        return Err(StepError::Permanent("payment row missing".into()));
    };
    // A capture the provider held as pending has settled, one way or the other, and its
    // event was lost: the `confirm_capture` step waiting on it decides, now rather than at
    // its next slow poll (the same rule `core::payments::apply` follows for the event).
    if p.status == PaymentStatus::Paid
        && (state.paid || provider_failed)
        && let Some(w) = steps::hurry(&mut tx, &p.order_id, &p.id, StepKind::ConfirmCapture).await?
    {
        let outcome = format!(
            "the provider has settled it ({}): the capture check waiting on it runs now",
            state.state
        );
        let mut wake = vec![w];
        wake.extend(complete(tx, lease, &outcome).await?);
        return Ok(wake);
    }
    let mut wake = Vec::new();
    let outcome = match verdict(p.status, state.paid, provider_failed) {
        Verdict::Agrees => format!("the provider agrees: {}", state.state),
        Verdict::Revive => {
            // Captured after all: the amount must still be right before anything ships.
            if state.amount_minor != p.amount_minor
                || !state.currency.eq_ignore_ascii_case(&p.currency)
            {
                orders::transition(
                    &mut tx,
                    &p.order_id,
                    &[
                        OrderStatus::PaymentFailed,
                        OrderStatus::PendingPayment,
                        OrderStatus::Created,
                    ],
                    OrderStatus::NeedsReview,
                )
                .await?;
                format!(
                    "captured after we gave it up, for {} {} instead of {} {}: needs review",
                    state.amount_minor, state.currency, p.amount_minor, p.currency
                )
            } else {
                payments::transition(
                    &mut tx,
                    &p.id,
                    &[PaymentStatus::Failed, PaymentStatus::Expired],
                    PaymentStatus::Paid,
                )
                .await?;
                if let Some(ppid) = &state.provider_payment_id {
                    payments::set_provider_payment_id(&mut tx, &p.id, ppid).await?;
                }
                let (what, w) = crate::core::payments::captured(&mut tx, &p).await?;
                wake = w;
                format!("captured after we gave it up ({}): {what}", state.state)
            }
        }
        Verdict::Review => {
            orders::transition(
                &mut tx,
                &p.order_id,
                &[
                    OrderStatus::Paid,
                    OrderStatus::Fulfilled,
                    OrderStatus::PartiallyRefunded,
                ],
                OrderStatus::NeedsReview,
            )
            .await?;
            format!(
                "we hold it as {}, the provider says {}: needs review",
                p.status, state.state
            )
        }
        Verdict::Undecided if p.status.open() => {
            let (what, w) = crate::core::payments::apply(&mut tx, &p, &state.change).await?;
            wake = w;
            what
        }
        Verdict::Undecided => format!("nothing to decide yet: {}", state.state),
    };
    wake.extend(complete(tx, lease, &outcome).await?);
    Ok(wake)
}

pub struct ReconcilePayment;

#[async_trait::async_trait]
impl super::Step for ReconcilePayment {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::ReconcilePayment
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}

/// What the provider's answer means for a payment we hold as `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The provider agrees with us: the event was stale.
    Agrees,
    /// We gave the payment up (failed, expired) but the provider captured it: take it back
    /// up — fulfil the order with it, or refund it if the order was paid otherwise.
    Revive,
    /// We hold the payment as captured, the provider says it failed: a person must look.
    Review,
    /// The provider has not decided either way yet (still open, pending).
    Undecided,
}

/// `held`: our payment status; `provider_paid` / `provider_failed`: what the API says.
pub fn verdict(held: PaymentStatus, provider_paid: bool, provider_failed: bool) -> Verdict {
    let ours_paid = held.captured();
    let ours_gone = held.gone();
    match (ours_paid, ours_gone, provider_paid, provider_failed) {
        (true, _, true, _) | (_, true, _, true) => Verdict::Agrees,
        (_, true, true, _) => Verdict::Revive,
        (true, _, _, true) => Verdict::Review,
        _ => Verdict::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_decides() {
        assert_eq!(verdict(PaymentStatus::Paid, true, false), Verdict::Agrees);
        assert_eq!(verdict(PaymentStatus::Failed, false, true), Verdict::Agrees);
        assert_eq!(
            verdict(PaymentStatus::Expired, true, false),
            Verdict::Revive
        );
        assert_eq!(verdict(PaymentStatus::Failed, true, false), Verdict::Revive);
        assert_eq!(verdict(PaymentStatus::Paid, false, true), Verdict::Review);
        assert_eq!(
            verdict(PaymentStatus::Paid, false, false),
            Verdict::Undecided
        );
        assert_eq!(
            verdict(PaymentStatus::Created, false, false),
            Verdict::Undecided
        );
    }
}
