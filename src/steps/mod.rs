//! The fulfilment steps, one file per step kind, each implementing [`Step`]; [`of`] is the
//! registry the executor (`crate::pipeline`) finds them through. Adding a step kind means its
//! `jobs::StepKind` (name, position, retry policy: the contract every worker shares), its file
//! here, and its line in [`STEPS`].
//!
//! A step with an outside effect (a provider call, an email) implements [`Step::run`]: one
//! step, its effect, then its done mark ([`complete`], or the batcher's finish). A store-only
//! step implements [`Step::run_batch`]: every step of its kind in a batch at once, in the
//! batch's transaction, leaving its writes to contended rows for the transaction's end
//! ([`tail`]). The helpers below are what every step uses to end a run.

mod confirm_capture;
mod deduct_stock;
mod grant_entitlement;
mod issue_invoice;
mod notify_payment_failed;
mod notify_refund;
mod reconcile_payment;
mod refund_payment;
pub mod send_receipt;
pub mod tail;

use async_trait::async_trait;
use jobs::{StepError, StepKind, Wake};

use crate::Engine;
use crate::providers::{PaymentRef, Provider};
use crate::store::payments::PaymentRow;
use crate::store::steps::{self, Lease};
use crate::store::{StoreError, Tx};
use tail::Tail;

/// One step kind's code.
#[async_trait]
pub trait Step: Send + Sync {
    fn kind(&self) -> StepKind;

    /// Runs one claimed step with an outside effect, and ends it.
    async fn run(&self, _e: &Engine, _lease: &Lease) -> StepResult {
        Err(StepError::Permanent(format!(
            "{} runs in batches, not alone",
            self.kind()
        )))
    }

    /// Runs every step of `leases` (all of this store-only kind) in `tx`: each one's outcome,
    /// in order. Writes to rows every batch contends for go to `tail`.
    async fn run_batch(
        &self,
        _e: &Engine,
        _tx: &mut Tx,
        _leases: &[&Lease],
        _tail: &mut Tail,
    ) -> Result<Vec<String>, StepError> {
        Err(StepError::Permanent(format!(
            "{} is not a store-only step",
            self.kind()
        )))
    }

    /// What a store-only step run alone does when its transaction's end refused to go
    /// through ([`tail::Deferred::flush`] answered false).
    async fn refused(&self, _e: &Engine, _lease: &Lease) -> StepResult {
        Err(StepError::Transient(format!(
            "{}: the transaction's end refused its writes",
            self.kind()
        )))
    }
}

/// Every step kind's code, once.
pub const STEPS: [&dyn Step; 10] = [
    &confirm_capture::ConfirmCapture,
    &deduct_stock::DeductStock,
    &refund_payment::RefundPayment,
    &issue_invoice::IssueInvoice,
    &send_receipt::SendReceipt,
    &grant_entitlement::GrantEntitlement,
    &refund_payment::RefundExtraPayment,
    &reconcile_payment::ReconcilePayment,
    &notify_payment_failed::NotifyPaymentFailed,
    &notify_refund::NotifyRefund,
];

/// The code of step kind `kind`.
pub fn of(kind: StepKind) -> &'static dyn Step {
    STEPS
        .into_iter()
        .find(|s| s.kind() == kind)
        .unwrap_or(&Unknown)
}

/// A kind without code (cannot happen while [`STEPS`] covers `StepKind::ALL`, which a test
/// checks): every run fails for good, visibly.
struct Unknown;

#[async_trait]
impl Step for Unknown {
    fn kind(&self) -> StepKind {
        StepKind::ConfirmCapture
    }

    async fn run(&self, _e: &Engine, lease: &Lease) -> StepResult {
        Err(StepError::Permanent(format!(
            "no code for step kind {:?}",
            lease.step.kind
        )))
    }
}

/// A step run's result: the step ids to wake after its commit.
pub type StepResult = Result<Vec<Wake>, StepError>;

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> StepError {
        StepError::Transient(e.to_string())
    }
}

/// The step's payment, as the store holds it.
async fn payment_of(e: &Engine, lease: &Lease) -> Result<PaymentRow, StepError> {
    e.store
        .get_payment(&lease.step.payment_id)
        .await?
        .ok_or_else(|| StepError::Permanent("payment row missing".into()))
}

/// The provider a payment was made with, and how it knows the payment.
fn provider_of<'a>(
    e: &'a Engine,
    payment: &'a PaymentRow,
) -> Result<(&'a dyn Provider, PaymentRef<'a>), StepError> {
    let provider = e
        .providers
        .get("provider", &payment.provider)
        .map_err(|err| StepError::Permanent(err.to_string()))?;
    Ok((provider, payment.provider_ref()))
}

/// Marks the leased step done and moves the pipeline on, then commits everything the step
/// wrote in `tx`. If the lease was lost meanwhile the whole transaction is rolled back, so
/// the step's effect happens only with the run that owns the step.
pub async fn complete(mut tx: Tx, lease: &Lease, outcome: &str) -> StepResult {
    match finish(&mut tx, lease, outcome).await? {
        Some(wake) => {
            tx.commit().await.map_err(StoreError::from)?;
            Ok(wake)
        }
        None => {
            tx.rollback().await.map_err(StoreError::from)?;
            Ok(Vec::new())
        }
    }
}

/// The first half of [`complete`], for steps that must touch a contended row (a SKU, the
/// invoice counter) last, right before their commit, so its lock is held as briefly as
/// possible. `None`: the lease was lost; roll back.
pub async fn finish(
    tx: &mut Tx,
    lease: &Lease,
    outcome: &str,
) -> Result<Option<Vec<Wake>>, StepError> {
    if !steps::finish(tx, lease, outcome).await? {
        tracing::warn!(
            step_id = lease.step.id,
            "lease lost before commit; effect rolled back"
        );
        return Ok(None);
    }
    Ok(Some(advance(tx, &[lease]).await?.concat()))
}

/// Moves on the orders of `finished` (see [`steps::advance_many`]); per lease, the steps to
/// wake. A next step that a lease's chain goes into is claimed and left for `run_step` in
/// the chain, which is set for every lease that has one: a step that rolls back and finishes
/// again in a new transaction leaves only the last claim.
pub async fn advance(tx: &mut Tx, finished: &[&Lease]) -> Result<Vec<Vec<Wake>>, StepError> {
    let orders: Vec<(&str, Option<&steps::Chain>)> = finished
        .iter()
        .map(|l| (l.step.order_id.as_str(), l.chain.as_deref()))
        .collect();
    let moved = steps::advance_many(tx, &orders).await?;
    Ok(finished
        .iter()
        .zip(moved)
        .map(|(lease, (wake, claimed))| {
            if let Some(chain) = &lease.chain {
                // Taken by `run_step` once the commit succeeded.
                *chain.next.lock().unwrap_or_else(|p| p.into_inner()) = claimed;
            }
            wake
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code_once() {
        for kind in StepKind::ALL {
            let n = STEPS.iter().filter(|s| s.kind() == kind).count();
            assert_eq!(n, 1, "{kind}");
            assert_eq!(of(kind).kind(), kind);
        }
    }
}
