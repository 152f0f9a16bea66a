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
//! This is the executor and knows no step by name: each kind's code is its file in
//! `crate::steps`, found through `steps::of`. A store-only kind runs through `batch` (many
//! steps' writes in one transaction); any other kind runs alone.

pub mod batch;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use apalis::prelude::*;
use jobs::{StepError, StepKind, Wake};
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::store::StoreError;
use crate::store::steps::{self, Failed, Lease};

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
        Some(kind) if kind.store_only() => engine.batcher.run(engine, lease).await,
        Some(kind) => crate::steps::of(kind).run(engine, lease).await,
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
