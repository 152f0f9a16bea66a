//! `reconcile_payment`: re-read a payment an event contradicted and let the provider's
//! answer decide (see `jobs::reconcile_payment`).

use jobs::StepError;
use jobs::reconcile_payment::{Verdict, verdict};

use super::{StepResult, complete, payment_of, provider_of};
use crate::Engine;
use crate::providers::PaymentChange;
use crate::store::steps::Lease;
use crate::store::{orders, payments};

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
    let mut wake = Vec::new();
    let outcome = match verdict(&p.status, state.paid, provider_failed) {
        Verdict::Agrees => format!("the provider agrees: {}", state.state),
        Verdict::Revive => {
            // Captured after all: the amount must still be right before anything ships.
            if state.amount_minor != p.amount_minor
                || !state.currency.eq_ignore_ascii_case(&p.currency)
            {
                orders::transition(
                    &mut tx,
                    &p.order_id,
                    &["payment_failed", "pending_payment", "created"],
                    "needs_review",
                )
                .await?;
                format!(
                    "captured after we gave it up, for {} {} instead of {} {}: needs review",
                    state.amount_minor, state.currency, p.amount_minor, p.currency
                )
            } else {
                payments::transition(&mut tx, &p.id, &["failed", "expired"], "paid").await?;
                if let Some(ppid) = &state.provider_payment_id {
                    payments::set_provider_payment_id(&mut tx, &p.id, ppid).await?;
                }
                let (what, w) = payments::captured(&mut tx, &p).await?;
                wake = w;
                format!("captured after we gave it up ({}): {what}", state.state)
            }
        }
        Verdict::Review => {
            orders::transition(
                &mut tx,
                &p.order_id,
                &["paid", "fulfilled", "partially_refunded"],
                "needs_review",
            )
            .await?;
            format!(
                "we hold it as {}, the provider says {}: needs review",
                p.status, state.state
            )
        }
        Verdict::Undecided if matches!(p.status.as_str(), "creating" | "created" | "pending") => {
            let (what, w) = payments::apply(&mut tx, &p, &state.change).await?;
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
