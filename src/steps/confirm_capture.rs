//! `confirm_capture`: re-read the payment from the provider (capturing it when the buyer
//! only approved or authorized it) and check it against the order (policy and checks:
//! `jobs::confirm_capture`). A capture the provider declines ends the payment here: the
//! stock is released, the rest of the pipeline skipped, and the order can be paid again.

use jobs::StepKind;
use jobs::confirm_capture::{Expected, Observed, check};

use super::{StepResult, complete, payment_of, provider_of};
use crate::Engine;
use crate::domain::PaymentStatus;
use crate::providers::PaymentChange;
use crate::store::steps::{self, Lease};
use crate::store::{payments, refunds};

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let payment = payment_of(e, lease).await?;
    let (provider, at) = provider_of(e, &payment)?;
    let state = provider.payment_state(&at).await?;
    // The provider holds the capture as pending (PayPal: an eCheck, a review): nothing is
    // fulfilled until it completes or is denied, which its event or the next look says.
    if let PaymentChange::AwaitingSettlement { .. } = state.change {
        return Err(jobs::StepError::Waiting(format!(
            "awaiting settlement ({})",
            state.state
        )));
    }
    if matches!(state.change, PaymentChange::Failed | PaymentChange::Expired) {
        let mut tx = e.store.begin().await?;
        payments::transition(
            &mut tx,
            &payment.id,
            &[PaymentStatus::Paid],
            PaymentStatus::Failed,
        )
        .await?;
        let rest = &StepKind::FULFILMENT[1..];
        steps::skip(
            &mut tx,
            &payment.order_id,
            rest,
            "payment failed at capture",
        )
        .await?;
        let mut wake = crate::core::payments::failed(&mut tx, &payment).await?;
        wake.extend(complete(tx, lease, &format!("capture failed: {}", state.state)).await?);
        return Ok(wake);
    }
    check(
        &Expected {
            amount_minor: payment.amount_minor,
            currency: &payment.currency,
        },
        &Observed {
            paid: state.paid,
            state: state.state.clone(),
            amount_minor: state.amount_minor,
            currency: &state.currency,
        },
    )?;
    let Some(ppid) = state
        .provider_payment_id
        .as_ref()
        .filter(|id| payment.provider_payment_id.as_ref() != Some(*id))
    else {
        return e.batcher.finish(e, lease, "captured".into(), None).await;
    };
    // The event did not carry it (an approval, an authorization): refunds need it, and
    // refund events that came before it can be placed now.
    let mut tx = e.store.begin().await?;
    payments::set_provider_payment_id(&mut tx, &payment.id, ppid).await?;
    let mut wake = refunds::catch_up(&mut tx, &payment.id, &payment.order_id).await?;
    wake.extend(complete(tx, lease, "captured").await?);
    Ok(wake)
}

pub struct ConfirmCapture;

#[async_trait::async_trait]
impl super::Step for ConfirmCapture {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::ConfirmCapture
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}
