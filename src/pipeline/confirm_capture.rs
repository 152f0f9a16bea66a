//! `confirm_capture`: re-read the payment from the provider and check it against the order
//! (policy and checks: `jobs::confirm_capture`).

use jobs::confirm_capture::{Expected, Observed, check};

use super::{StepResult, complete, payment_of, provider_of};
use crate::Engine;
use crate::store::payments;
use crate::store::steps::Lease;

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let payment = payment_of(e, lease).await?;
    let (provider, at) = provider_of(e, &payment)?;
    let state = provider.payment_state(&at).await?;
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
    let mut tx = e.store.begin().await?;
    if let Some(ppid) = &state.provider_payment_id {
        // The webhook may not have carried it; refunds need it.
        payments::set_provider_payment_id(&mut tx, &payment.id, ppid).await?;
    }
    complete(tx, lease, "captured").await
}
