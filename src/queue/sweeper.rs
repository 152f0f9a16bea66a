//! The sweeper: every `queue.sweep_interval_ms` it gives back steps whose worker lease
//! expired and re-sends a wake-up for every due step that has none in flight. Its first
//! pass after start re-sends every due step, because the in-process queue starts empty.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Queue;
use crate::config;
use crate::domain::now_ms;
use crate::store::Store;

/// Steps re-sent per pass; the rest wait for the next pass, which keeps a huge backlog from
/// flooding the queue all at once.
const BATCH: i64 = 1_000;

pub async fn run(store: Store, queue: Queue, config: config::Queue, shutdown: CancellationToken) {
    let interval = Duration::from_millis(config.sweep_interval_ms);
    let mut first = true;
    loop {
        if let Err(e) = pass(&store, &queue, first, &config).await {
            tracing::warn!(error = %e, "sweeper pass failed; trying again next tick");
        } else {
            first = false;
        }
        // ±25 % jitter: sweepers of several processes never fall into step with each other
        // (nor hand every retry to the same one).
        let pause = interval.mul_f64(rand::Rng::random_range(&mut rand::rng(), 0.75..1.25));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One pass; returns how many steps were woken.
pub async fn pass(
    store: &Store,
    queue: &Queue,
    everything_due: bool,
    config: &config::Queue,
) -> crate::store::Result<usize> {
    let released = store
        .release_expired_leases(config.max_lease_expiries)
        .await?;
    if released > 0 {
        tracing::warn!(released, "released steps whose worker lease expired");
    }
    let requeue_before = if everything_due {
        now_ms()
    } else {
        now_ms() - config.requeue_after_ms as i64
    };
    let ids = store.take_due(requeue_before, BATCH).await?;
    if !ids.is_empty() {
        tracing::debug!(count = ids.len(), "sweeper woke due steps");
        queue.wake(&ids);
    }
    Ok(ids.len())
}
