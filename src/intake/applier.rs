//! The event applier: what the intake appended (outcome `received`) is applied here, in
//! batches — each event's payment, order, stock and pipeline move in one transaction per
//! batch, its outcome is written, and the steps it created are woken.
//!
//! Runs in every process that takes webhooks (`serve`, `intake`). It is told after each
//! append, and also looks every second, so events that another intake appended and could
//! not apply (it stopped) are applied by whichever intake is still running; on start it
//! applies whatever a stopped process left. On Postgres several appliers take disjoint
//! events (`FOR UPDATE SKIP LOCKED`); on SQLite the write lock admits one at a time.
//!
//! Events are read back from the store and normalized again by their provider
//! (`Provider::read_stored`), without a second signature check, so a process that died
//! between the append and the apply loses nothing.

use std::sync::Arc;
use std::time::Duration;

use jobs::Wake;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::providers::ProviderEvent;
use crate::providers::headers_from_kept;
use crate::store::events::{self, Incoming, Unapplied};
use crate::store::{Result, Tx};

/// Events applied in one transaction at most: a SQLite transaction holds the write lock
/// (webhook appends wait for it), so it is kept to a few milliseconds.
const BATCH: i64 = 64;

/// Applies appended events until `stop`; then applies what is left and returns.
pub async fn run(e: Arc<Engine>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        drain(&e).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = e.events.appended() => {}
            _ = tick.tick() => {}
        }
    }
    drain(&e).await;
}

/// Applies batches until none is full, each when the intake gives it a turn (webhooks
/// waiting for their commit go first); a failure is logged and left for the next look. A
/// batch in which some event could not be applied (and stays, to be tried again) ends the
/// drain too: the same events would be taken again at once.
async fn drain(e: &Engine) {
    loop {
        e.events.turn().await;
        match apply_batch(e).await {
            Ok(Batch { taken, left }) if taken == BATCH as usize && left == 0 => {}
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, "applying webhook events failed; they stay stored and are retried");
                return;
            }
        }
    }
}

/// What one batch did: events taken, and how many of them are still unapplied.
struct Batch {
    taken: usize,
    left: usize,
}

/// Applies up to [`BATCH`] of the oldest unapplied events. If the batch fails, each event
/// is applied in a transaction of its own, so one event that cannot be applied holds up no
/// other. One the store refuses as data (it would refuse it every time), or that failed
/// [`events::APPLY_TRIES`] times, is given the reason as its outcome — shown, replayable,
/// and never taken again to head every batch.
async fn apply_batch(e: &Engine) -> Result<Batch> {
    let mut tx = e.store.begin().await?;
    let taken = events::take_unapplied(&mut tx, e.store.backend, BATCH).await?;
    if taken.is_empty() {
        tx.rollback().await?;
        return Ok(Batch { taken: 0, left: 0 });
    }
    let n = taken.len();
    match apply(e, &mut tx, &taken).await {
        Ok(wake) => {
            tx.commit().await?;
            e.queue.wake(&wake);
            return Ok(Batch { taken: n, left: 0 });
        }
        // The store is away or busy (a deadlock between appliers): nothing to learn about
        // the events; the next look tries again.
        Err(err) if err.is_transient() => return Err(err),
        Err(err) => {
            tracing::warn!(error = %err, events = n, "webhook events failed to apply; applying them one by one");
            tx.rollback().await?;
        }
    }
    let mut left = 0;
    for ev in taken {
        let mut tx = e.store.begin().await?;
        // Still unapplied? Another applier may have taken it since the rollback.
        if !events::take_unapplied_one(&mut tx, e.store.backend, ev.id).await? {
            tx.rollback().await?;
            continue;
        }
        match apply(e, &mut tx, std::slice::from_ref(&ev)).await {
            Ok(wake) => {
                tx.commit().await?;
                e.queue.wake(&wake);
            }
            Err(err) if err.is_refused_data() => {
                tracing::error!(error = %err, event = ev.id, "the store refuses a webhook event; it is kept, not applied");
                tx.rollback().await?;
                let mut tx = e.store.begin().await?;
                events::set_unapplicable(&mut tx, ev.id, &format!("the store refused it: {err}"))
                    .await?;
                tx.commit().await?;
            }
            // Not the event's fault: it is not counted against it.
            Err(err) if err.is_transient() => return Err(err),
            Err(err) => {
                tx.rollback().await?;
                let mut tx = e.store.begin().await?;
                let parked = events::apply_failed(&mut tx, ev.id, &err.to_string()).await?;
                tx.commit().await?;
                if parked {
                    tracing::error!(error = %err, event = ev.id, "a webhook event failed to apply too often; it is kept, not applied");
                } else {
                    tracing::warn!(error = %err, event = ev.id, "a webhook event failed to apply; it stays stored and is retried");
                    left += 1;
                }
            }
        }
    }
    Ok(Batch { taken: n, left })
}

/// Applies the events in `tx`: the steps to wake once it commits.
async fn apply(e: &Engine, tx: &mut Tx, taken: &[Unapplied]) -> Result<Vec<Wake>> {
    let mut read: Vec<(&Unapplied, ProviderEvent)> = Vec::with_capacity(taken.len());
    for t in taken {
        let headers = headers_from_kept(t.headers.as_deref().unwrap_or("{}"));
        let ev = match e.providers.get("provider", &t.provider) {
            Ok(p) => p.read_stored(&headers, &t.raw_body),
            Err(err) => Err(err.to_string()),
        };
        match ev {
            Ok(ev) => read.push((t, ev)),
            Err(why) => {
                tracing::error!(event = t.id, provider = %t.provider, error = %why, "a stored webhook event cannot be applied");
                events::set_unapplicable(tx, t.id, &why).await?;
            }
        }
    }
    // Stored already: applying needs only the event.
    let incoming: Vec<Incoming<'_>> = read
        .iter()
        .map(|(t, ev)| Incoming {
            ev,
            raw: &[],
            headers: "",
            restock_default: e.config.refunds.restock,
            request_id: t.request_id.as_deref(),
        })
        .collect();
    let ids: Vec<Option<i64>> = read.iter().map(|(t, _)| Some(t.id)).collect();
    let applied = crate::core::events::apply_stored(tx, &incoming, &ids).await?;
    for ((t, ev), a) in read.iter().zip(&applied) {
        tracing::debug!(event = t.id, request_id = t.request_id, provider = ev.provider, event_id = %ev.event_id, kind = %ev.event_type, outcome = %a.outcome, "webhook applied");
    }
    Ok(applied.into_iter().flat_map(|a| a.wake).collect())
}
