//! The fulfilment pipeline: apalis workers that turn a wake-up into one step run.
//!
//! A run claims the step row under a lease (a duplicate or stale wake-up claims nothing and
//! ends here), runs the step's file below, and either marks it done — in the same
//! transaction as the step's effect, then wakes the next step — or records the failure with
//! the step's retry policy. When the next step only touches the store and this process runs
//! its kind, the same transaction claims it instead, and the run goes straight on to it
//! (`store::steps::Chain`). Handlers never return errors to apalis for step failures: the
//! retry schedule lives in the store, where it survives restarts.
//!
//! One file per step: `confirm_capture`, `deduct_stock`, `refund_payment` (also for
//! `refund_extra_payment`), `issue_invoice`, `send_receipt`, `grant_entitlement`,
//! `reconcile_payment`, `notify_payment_failed`, `notify_refund`. Each one's retry policy and pure logic sit in the
//! file of the same name in the `jobs` crate. `notify_merchant` is the exception: one
//! delivery per event and endpoint rather than a step per order, with its own table, lease
//! and schedule (see its file).

pub mod batch;
mod confirm_capture;
mod deduct_stock;
mod grant_entitlement;
pub mod housekeeping;
mod issue_invoice;
pub mod notify_merchant;
mod notify_payment_failed;
mod notify_refund;
mod reconcile_payment;
pub mod reconciliation;
pub mod refund_calls;
mod refund_payment;
mod send_receipt;
mod tail;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use apalis::prelude::*;
use jobs::{StepError, StepKind, Wake};
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::providers::{PaymentRef, Provider};
use crate::store::payments::PaymentRow;
use crate::store::steps::{self, Failed, Lease};
use crate::store::{StoreError, Tx};

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

/// The apalis handler: one wake-up, at most one step run.
async fn handle(wake: Wake, engine: Data<Arc<Engine>>) -> Result<(), BoxDynError> {
    run_step(&engine, wake.step_id).await.map_err(Into::into)
}

/// Claims and runs one step. Errors returned here are store errors while recording the
/// outcome; the step's lease then expires and the sweeper hands it out again. (Each run
/// logs in a span of its own step: see [`run_claimed`].)
pub async fn run_step(engine: &Engine, step_id: i64) -> Result<(), StoreError> {
    let Some(mut lease) = engine.batcher.claim(engine, step_id).await? else {
        return Ok(());
    };
    loop {
        let chain = (!engine.chains_into.is_empty()).then(|| {
            Arc::new(steps::Chain {
                into: engine.chains_into.clone(),
                lease_ms: engine.config.queue.lease_ms,
                worker: engine.worker.clone(),
                next: Default::default(),
            })
        });
        lease.chain = chain.clone();
        let done = run_claimed(engine, &lease).await?;
        let next = chain
            .filter(|_| done)
            .and_then(|c| c.next.lock().unwrap_or_else(|p| p.into_inner()).take());
        match next {
            Some(next) => lease = next,
            None => return Ok(()),
        }
    }
}

/// Runs a claimed step and records its outcome; true if it succeeded (its commit went
/// through, so a step it chained to is claimed).
async fn run_claimed(engine: &Engine, lease: &Lease) -> Result<bool, StoreError> {
    let started = std::time::Instant::now();
    // Each line of the run carries the request that caused the step, and so does each step
    // the run creates or arms.
    let step = &lease.step;
    // At error level, like the intake's request span: on whenever any line of the run is.
    let span = tracing::error_span!("step", step_id = step.id, kind = %step.kind, order_id = %step.order_id,
        request_id = step.request_id.as_deref().unwrap_or(""));
    let outcome = crate::store::CAUSE
        .scope(
            step.request_id.clone(),
            record(engine, lease).instrument(span),
        )
        .await;
    let word = match &outcome {
        Ok(None) => "done",
        Ok(Some(Failed::RetryAt(_))) => "retry",
        Ok(Some(Failed::Dead)) => "dead",
        Ok(Some(Failed::LostLease)) => "lost_lease",
        Err(_) => "store_error",
    };
    engine
        .metrics
        .step_ran(&lease.step.kind, word, started.elapsed());
    outcome.map(|failed| failed.is_none())
}

/// Runs a claimed step and records its outcome: `None` if it succeeded, else how its
/// failure was recorded.
async fn record(engine: &Engine, lease: &Lease) -> Result<Option<Failed>, StoreError> {
    let step_id = lease.step.id;
    let kind = StepKind::parse(&lease.step.kind);
    let result = match kind {
        Some(StepKind::ConfirmCapture) => confirm_capture::run(engine, lease).await,
        Some(StepKind::DeductStock | StepKind::IssueInvoice | StepKind::GrantEntitlement) => {
            engine.batcher.run(engine, lease).await
        }
        Some(StepKind::RefundPayment | StepKind::RefundExtraPayment) => {
            refund_payment::run(engine, lease).await
        }
        Some(StepKind::SendReceipt) => send_receipt::run(engine, lease).await,
        Some(StepKind::ReconcilePayment) => reconcile_payment::run(engine, lease).await,
        Some(StepKind::NotifyPaymentFailed) => notify_payment_failed::run(engine, lease).await,
        Some(StepKind::NotifyRefund) => notify_refund::run(engine, lease).await,
        None => Err(StepError::Permanent(format!(
            "unknown step kind {:?}",
            lease.step.kind
        ))),
    };
    match result {
        Ok(wake) => {
            tracing::info!("step done");
            engine.queue.wake(&wake);
            Ok(None)
        }
        Err(err) => {
            let kind = kind.unwrap_or(StepKind::ConfirmCapture);
            let failed = engine
                .store
                .fail(lease, &err, engine.config.policy(kind))
                .await?;
            match failed {
                // The step's span names its order, kind and request.
                Failed::RetryAt(at) => tracing::warn!(
                    attempts = lease.step.attempts, retry_at_ms = at, error = %err, "step failed; will retry"
                ),
                Failed::Dead => tracing::error!(
                    attempts = lease.step.attempts, error = %err, "step dead; order needs review"
                ),
                Failed::LostLease => {
                    tracing::warn!(
                        step_id,
                        "lease lost while failing; another worker owns the step"
                    )
                }
            }
            Ok(Some(failed))
        }
    }
}

/// Runs this process's workers — one apalis worker per step kind in `kinds`, each running up
/// to `queue.concurrency` steps at once — until `shutdown`. Then they stop taking wake-ups
/// and in-flight steps get `queue.shutdown_grace_ms` to finish; a step cut off is handed out
/// again when its lease expires.
pub async fn run_workers(engine: Arc<Engine>, kinds: Vec<StepKind>, shutdown: CancellationToken) {
    batch::Batcher::start(&engine);
    let concurrency = engine.config.queue.concurrency;
    let grace = Duration::from_millis(engine.config.queue.shutdown_grace_ms);
    let mut monitor = Monitor::new();
    for kind in kinds {
        // Unique per process start, kind and restart: apalis tracks workers by name.
        let base = format!("{}-{}", engine.worker, kind.as_str());
        let engine = engine.clone();
        monitor = monitor.register(move |restart| {
            WorkerBuilder::new(format!("{base}-{restart}"))
                .backend(engine.queue.backend(kind))
                .concurrency(concurrency)
                .parallelize(tokio::spawn)
                .catch_panic()
                .data(engine.clone())
                .build(handle)
        });
    }
    let monitor = monitor.should_restart(|_, _| true).shutdown_timeout(grace);
    let signal = async move {
        shutdown.cancelled().await;
        Ok(())
    };
    if let Err(e) = monitor.run_with_signal(signal).await {
        tracing::error!(error = %e, "worker monitor stopped with an error");
    }
}
