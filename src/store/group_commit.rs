//! Group commit for webhook intake. One commit per request cannot go faster than the disk
//! can flush (a few thousand fsyncs a second here), so concurrent webhooks share commits:
//! one writer takes whatever events are waiting (up to `MAX_BATCH`), appends them all with
//! one insert, commits once, and only then answers each request. An event is durable before
//! its 200; a request simply waits for its batch.
//!
//! The intake only appends (outcome `received`); what an event means for its payment, its
//! order and the pipeline is applied afterwards by the event applier (`intake::applier`),
//! in batches of its own. Applying in the request path cost about 100 µs of writer time per
//! event and held the intake near 6,000 webhooks/s on either backend; appending alone
//! costs a tenth of that (`cargo bench --bench pipeline`, `embedded-intake`,
//! `pg-redis-intake`). Duplicates are still known at once: the insert is what finds them.
//!
//! If a batch's insert fails, its events are appended one by one, each in its own
//! transaction, so one bad event never fails the others.
//!
//! On SQLite, which admits one writer at a time, the writer runs on a thread of its own and
//! takes the write lock ahead of the pipeline's writers (`Store::begin_first`). On
//! Postgres it is a task. One writer: a second one measured no better within the noise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::events::{Incoming, append};
use super::{Backend, Result, Store, StoreError};
use crate::domain::event::ProviderEvent;

/// Events committed together at most.
const MAX_BATCH: usize = 256;

/// While webhooks keep the writer busy, the applier still gets a turn after this many of its
/// commits, or after waiting [`MAX_TURN_WAIT`]: appending goes first, but applying never
/// stops. (Commits count because they grow with the load: under a burst 32 commits carry a
/// few thousand events, at a steady trickle a few dozen.)
const TURN_EVERY: u64 = 32;

/// The longest the applier waits for its turn.
const MAX_TURN_WAIT: Duration = Duration::from_millis(100);

/// The intake counts as idle when no webhook has waited for a commit for this long. (A
/// moment with none waiting is not enough: a burst's clients all wait for one commit and
/// then send their next requests together, so there is such a moment after every commit.)
const IDLE: Duration = Duration::from_millis(2);

struct Job {
    ev: ProviderEvent,
    raw: Vec<u8>,
    headers: String,
    request_id: Option<String>,
    reply: oneshot::Sender<Result<bool>>,
}

/// The intake's way into the store for webhook events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventWriter {
    store: Store,
    /// The batch writer's queue; `None` if its thread could not start: each event then
    /// commits on its own.
    tx: Option<mpsc::Sender<Job>>,
    /// Told after every commit that appended an event (the applier waits on it).
    appended: Arc<Notify>,
    /// How many webhooks wait for their commit, how many commits the writer made, and who
    /// is told when it is the applier's turn (see [`EventWriter::turn`]).
    waiting: Arc<AtomicUsize>,
    commits: Arc<AtomicU64>,
    turn: Arc<Notify>,
    /// `commits` when the last turn began.
    turn_at: Arc<AtomicU64>,
}

impl EventWriter {
    /// Starts the batch writer; it stops when every `EventWriter` is dropped.
    pub fn start(store: Store) -> EventWriter {
        let (tx, rx) = mpsc::channel::<Job>(MAX_BATCH * 64);
        let signals = Signals {
            appended: Arc::new(Notify::new()),
            commits: Arc::new(AtomicU64::new(0)),
            turn: Arc::new(Notify::new()),
        };
        let (writer_store, told) = (store.clone(), signals.clone());
        // On SQLite the writer runs on a thread of its own: between its statements it must not
        // wait in the request handlers' run queue (under load that wait, not SQLite, set the
        // pace: 1.6× the webhooks/s). Postgres connections belong to the runtime that opened
        // them, so there it stays a task.
        let started = if store.backend == Backend::Postgres {
            tokio::spawn(writer(writer_store, rx, told));
            Ok(())
        } else {
            std::thread::Builder::new()
                .name("fulfilld-intake-writer".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(writer(writer_store, rx, told)),
                        Err(e) => tracing::error!(error = %e, "cannot start the intake's writer"),
                    }
                })
                .map(drop)
        };
        let tx = match started {
            Ok(()) => Some(tx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the intake's writer thread; events commit one by one");
                None
            }
        };
        EventWriter {
            store,
            tx,
            appended: signals.appended,
            waiting: Arc::new(AtomicUsize::new(0)),
            commits: signals.commits,
            turn: signals.turn,
            turn_at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Appends the event; returns once it is committed (with others): `true` when it was a
    /// duplicate (its id was stored before), which changes nothing. The event keeps the id
    /// of the request this task serves ([`super::CAUSE`]).
    pub async fn append(&self, ev: ProviderEvent, raw: Vec<u8>, headers: String) -> Result<bool> {
        let _waiting = Waiting::new(self);
        let request_id = super::CAUSE.try_with(Clone::clone).ok().flatten();
        let Some(queue) = &self.tx else {
            let r = append_one(
                &self.store,
                incoming(&ev, &raw, &headers, request_id.as_deref()),
            )
            .await;
            if matches!(r, Ok(false)) {
                self.appended.notify_one();
            }
            return r;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            ev,
            raw,
            headers,
            request_id,
            reply,
        };
        let gone = || StoreError::Other("the event writer has stopped".into());
        queue.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Completes after a commit appended events since the last call (at once if one did).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// Completes when applying may go ahead: once the intake has been idle for [`IDLE`],
    /// after the writer's next [`TURN_EVERY`] commits, or after [`MAX_TURN_WAIT`]. A
    /// webhook's answer waits for its commit, and applying takes the same store (on SQLite
    /// the same write lock) and the same CPU, so under a burst the 200s go first and
    /// applying catches up behind them.
    pub async fn turn(&self) {
        let idle = |since: u64| {
            self.waiting.load(Ordering::Acquire) == 0
                && self.commits.load(Ordering::Acquire) == since
        };
        // Nothing appended since the last turn, and nothing waiting: go at once.
        if !idle(self.turn_at.load(Ordering::Acquire)) {
            let deadline = tokio::time::Instant::now() + MAX_TURN_WAIT;
            while tokio::time::Instant::now() < deadline {
                let turn = self.turn.notified();
                let commits = self.commits.load(Ordering::Acquire);
                tokio::select! {
                    _ = turn => break,
                    _ = tokio::time::sleep(IDLE) => {}
                }
                if idle(commits) {
                    break;
                }
            }
        }
        self.turn_at
            .store(self.commits.load(Ordering::Acquire), Ordering::Release);
    }
}

/// One webhook waiting for its commit, for as long as it lives.
struct Waiting<'a>(&'a EventWriter);

impl<'a> Waiting<'a> {
    fn new(w: &'a EventWriter) -> Self {
        w.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(w)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone)]
struct Signals {
    appended: Arc<Notify>,
    commits: Arc<AtomicU64>,
    turn: Arc<Notify>,
}

async fn writer(store: Store, mut rx: mpsc::Receiver<Job>, signals: Signals) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if commit(&store, batch).await {
            signals.appended.notify_one();
        }
        if signals.commits.fetch_add(1, Ordering::AcqRel) % TURN_EVERY == TURN_EVERY - 1 {
            signals.turn.notify_waiters();
        }
    }
    signals.turn.notify_waiters();
}

/// Appends the batch and answers its requests: whether any event was new. (Only then is
/// this process's applier told: the one whose append stored an event applies it, as the
/// one whose commit stored it did when intake applied in the request.)
async fn commit(store: &Store, batch: Vec<Job>) -> bool {
    if batch.len() > 1 {
        let all: Vec<Incoming<'_>> = batch
            .iter()
            .map(|job| incoming(&job.ev, &job.raw, &job.headers, job.request_id.as_deref()))
            .collect();
        match together(store, &all).await {
            Ok(duplicates) => {
                let new = duplicates.contains(&false);
                for (job, d) in batch.into_iter().zip(duplicates) {
                    let _ = job.reply.send(Ok(d));
                }
                return new;
            }
            Err(e) => {
                tracing::warn!(error = %e, events = batch.len(), "batched commit failed; appending the events one by one");
            }
        }
    }
    let mut new = false;
    for job in batch {
        let one = incoming(&job.ev, &job.raw, &job.headers, job.request_id.as_deref());
        let r = append_one(store, one).await;
        new |= matches!(r, Ok(false));
        let _ = job.reply.send(r);
    }
    new
}

/// An event to append (`restock_default` is for applying, which is not done here).
fn incoming<'a>(
    ev: &'a ProviderEvent,
    raw: &'a [u8],
    headers: &'a str,
    request_id: Option<&'a str>,
) -> Incoming<'a> {
    Incoming {
        ev,
        raw,
        headers,
        restock_default: false,
        request_id,
    }
}

/// Appends one event in a transaction of its own: whether it was a duplicate.
async fn append_one(store: &Store, one: Incoming<'_>) -> Result<bool> {
    Ok(together(store, &[one]).await?.pop().unwrap_or(true))
}

/// Appends the events in one transaction: for each, whether it was a duplicate.
async fn together(store: &Store, incoming: &[Incoming<'_>]) -> Result<Vec<bool>> {
    let mut tx = store.begin_first().await?;
    let ids = append(&mut tx, incoming).await?;
    tx.commit().await?;
    Ok(ids.iter().map(Option::is_none).collect())
}
