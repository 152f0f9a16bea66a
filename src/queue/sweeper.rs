//! The sweeper (the relay from the step table to the queue): every `queue.sweep_interval_ms`
//! it gives back steps whose worker lease expired, then tops up each kind's queue to its
//! window with due steps whose wake-up was sent more than `queue.requeue_after_ms` ago (or
//! never) and that have not started. Where wake-ups may have been lost ([`super::Lost`]: a
//! process start, a failed push, a Redis that came back empty) it sends every
//! due step of that kind, as room allows. With Postgres notifications, a notification asks
//! for a pass at once, for its kind only, taking the steps no sweeper has taken yet; each
//! tick takes those too, so a notification that never arrived costs one interval.

use std::time::Duration;

use jobs::StepKind;
use tokio_util::sync::CancellationToken;

use super::Queue;
use crate::clock::now_ms;
use crate::config;
use crate::store::Store;

/// After a pass that filled a queue to its window (more may be due), the next comes this
/// soon, so workers draining a backlog are never left idle for a whole interval.
const REFILL_PAUSE: Duration = Duration::from_millis(50);

pub async fn run(
    store: Store,
    queue: Queue,
    kinds: Vec<StepKind>,
    config: config::Queue,
    shutdown: CancellationToken,
) {
    let interval = Duration::from_millis(config.sweep_interval_ms);
    let mut failing = false;
    let mut nudged = false;
    loop {
        let pause = match pass(&store, &queue, &kinds, &config, nudged).await {
            Ok(filled) => {
                if failing {
                    tracing::info!("sweeper working again");
                    failing = false;
                }
                if filled { Some(REFILL_PAUSE) } else { None }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "sweeper pass failed; trying again each tick");
                    failing = true;
                }
                None
            }
        };
        // ±25 % jitter: sweepers of several processes never fall into step with each other
        // (nor hand every retry to the same one).
        let pause = pause.unwrap_or_else(|| {
            interval.mul_f64(rand::Rng::random_range(&mut rand::rng(), 0.75..1.25))
        });
        nudged = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => false,
            _ = queue.nudged() => true,
        };
    }
}

/// One pass over `kinds`; true if it filled some queue to its window (more steps of that
/// kind may be due). `nudged`: a pass asked for between ticks, for the kinds marked lost
/// only (leases and requeue timers wait for the tick).
pub async fn pass(
    store: &Store,
    queue: &Queue,
    kinds: &[StepKind],
    config: &config::Queue,
    nudged: bool,
) -> anyhow::Result<bool> {
    if !nudged {
        let released = store
            .release_expired_leases(config.max_lease_expiries)
            .await?;
        if released > 0 {
            tracing::warn!(released, "released steps whose worker lease expired");
        }
    }
    let now = now_ms();
    let mut filled = false;
    queue.collect_lost(kinds).await?;
    let depths = queue.depths().await?;
    for (kind, depth) in depths {
        let room = queue.window().saturating_sub(depth);
        if room == 0 || !kinds.contains(&kind) {
            continue;
        }
        let lost = queue.take_lost(kind, depth);
        let fresh = !lost && queue.take_fresh(kind);
        if nudged && !lost && !fresh {
            continue;
        }
        let wakes = if lost {
            store.take_due(kind, now, room).await
        } else if fresh {
            store.take_fresh(kind, room).await
        } else {
            store
                .take_due(kind, now - config.requeue_after_ms as i64, room)
                .await
        };
        let mut wakes = match wakes {
            Ok(w) => w,
            Err(e) => {
                if lost {
                    queue.mark_lost(kind);
                } else if fresh {
                    queue.mark_fresh(kind);
                }
                return Err(e.into());
            }
        };
        // With notifications, a tick also takes what no sweeper took yet: a notification
        // that never arrived costs one interval, not the requeue timer.
        if !nudged && !lost && !fresh && queue.notifies() && wakes.len() < room {
            match store.take_fresh(kind, room - wakes.len()).await {
                Ok(w) => wakes.extend(w),
                Err(e) => {
                    queue.deliver(&wakes);
                    return Err(e.into());
                }
            }
        }
        let full = wakes.len() == room;
        // More may be due than the room took: keep sending them.
        if lost && full {
            queue.mark_lost(kind);
        } else if fresh && full {
            queue.mark_fresh(kind);
        }
        if !wakes.is_empty() {
            tracing::debug!(
                kind = kind.as_str(),
                count = wakes.len(),
                "sweeper woke due steps"
            );
            queue.deliver(&wakes);
        }
        filled |= full;
    }
    Ok(filled)
}
