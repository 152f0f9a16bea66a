//! Wake-ups. The store's step table is the durable queue; a queue backend only carries
//! "step N may be due" to a worker quickly. Producers commit step rows first and wake after
//! the commit; the sweeper covers every wake-up that was lost (a crash between commit and
//! wake, a restart that emptied an in-process queue or Redis, a retry whose backoff ended).
//!
//! There is one queue per step kind. Wake-ups of new work always go out (an entry costs a
//! few bytes, and a step held back would wait for a sweeper to find it among everything
//! due); what sweepers send — a backlog found in the store, re-sends — stops at a window
//! (`queue.window`), and the rest waits in the step table until the queue drains. A backlog
//! of any size that the sweepers find (workers down for an hour and restarted, a Redis that
//! lost its data) never sits in the queue.
//!
//! # Layout
//! - `memory`: the embedded default — in-process channels feeding this process's workers.
//! - `redis`: one Redis list per kind, shared by every intake and worker process.
//! - `notify`: Postgres `LISTEN`/`NOTIFY` telling each process's sweeper what became due.
//! - `sweeper`: re-enqueues due steps and releases expired leases.

pub mod memory;
pub mod notify;
pub mod redis;
pub mod sweeper;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use apalis_core::backend::memory::{MemorySink, MemoryStorage};
use apalis_core::task::Task;
use futures::{SinkExt, Stream};
use jobs::{StepKind, Wake};
use tokio::sync::Notify;

use crate::config;

/// Wake-ups of one kind as a worker reads them.
pub type WakeStream = Pin<Box<dyn Stream<Item = Task<Wake>> + Send>>;

#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(String);

/// The producer and consumer sides of the configured queue; cheap to clone, `wake` never
/// blocks.
#[derive(Clone)]
pub struct Queue {
    transport: Transport,
    window: usize,
    lost: Arc<Lost>,
    polls_store: bool,
    /// Asks the sweeper for a pass now (a Postgres notification said steps are due).
    nudge: Arc<Notify>,
}

/// Per step kind: whether wake-ups may have been lost — a push that failed (in this process,
/// or in another that said so through Redis), a Redis that came back empty, or a process
/// start (what the queue holds is unknown). The sweeper then sends every due step of that kind, not only
/// those whose wake-up is older than `queue.requeue_after_ms`.
///
/// And whether new wake-ups wait in the store for a sweeper to take them (`fresh`: a
/// Postgres notification said so).
#[derive(Debug)]
pub struct Lost {
    lost: HashMap<StepKind, AtomicBool>,
    fresh: HashMap<StepKind, AtomicBool>,
}

impl Lost {
    fn new() -> Lost {
        let flags = |v: bool| {
            StepKind::ALL
                .into_iter()
                .map(|k| (k, AtomicBool::new(v)))
                .collect()
        };
        Lost {
            lost: flags(true),
            fresh: flags(false),
        }
    }

    pub fn mark(&self, kind: StepKind) {
        self.lost[&kind].store(true, Ordering::Relaxed);
    }

    pub fn mark_all(&self) {
        for f in self.lost.values() {
            f.store(true, Ordering::Relaxed);
        }
    }

    pub fn mark_fresh(&self, kind: StepKind) {
        self.fresh[&kind].store(true, Ordering::Relaxed);
    }

    fn take(&self, kind: StepKind) -> bool {
        self.lost[&kind].swap(false, Ordering::Relaxed)
    }

    fn take_fresh(&self, kind: StepKind) -> bool {
        self.fresh[&kind].swap(false, Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum Transport {
    Memory(memory::Memory),
    Redis(Box<redis::Redis>),
    Postgres(Box<notify::PgNotify>),
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.transport {
            Transport::Memory(_) => "Queue(memory)",
            Transport::Redis(_) => "Queue(redis)",
            Transport::Postgres(_) => "Queue(postgres)",
        })
    }
}

impl Queue {
    /// The queue `queue.url` names: empty for the embedded in-process queue, `redis://…`
    /// (or `rediss://…`) for Redis, `postgres://…` for Postgres notifications (see
    /// [`notify`]). Does not wait for Redis or Postgres to be up.
    ///
    /// `polls_store`: this process's workers consume an in-process queue that wake-ups from
    /// other processes cannot reach (`fulfilld work` without `queue.url`), so its sweeper must
    /// find new due steps in the store: whenever a kind's queue is empty, it sends every due
    /// step of that kind.
    ///
    /// `runs`: the step kinds this process's workers run (none for `intake`). An in-process
    /// queue drops the wake-ups of other kinds: nothing here would read them, and the
    /// sweeper of the process that runs them finds them in the store.
    pub fn open(
        config: &config::Queue,
        polls_store: bool,
        runs: &[StepKind],
    ) -> Result<Queue, QueueError> {
        let lost = Arc::new(Lost::new());
        let nudge = Arc::new(Notify::new());
        let transport = if config.url.is_empty() {
            Transport::Memory(memory::Memory::new(runs))
        } else if config.url.starts_with("postgres://") || config.url.starts_with("postgresql://") {
            Transport::Postgres(Box::new(notify::PgNotify::open(
                &config.url,
                &config.prefix,
                lost.clone(),
                nudge.clone(),
            )))
        } else {
            let r = redis::Redis::open(&config.url, &config.prefix, lost.clone())
                .map_err(|e| QueueError(format!("queue.url: {e}")))?;
            Transport::Redis(Box::new(r))
        };
        Ok(Queue {
            transport,
            window: config.window,
            lost,
            polls_store: polls_store && config.url.is_empty(),
            nudge,
        })
    }

    /// Resolves when a pass of the sweeper is wanted before its next tick.
    pub async fn nudged(&self) {
        self.nudge.notified().await
    }

    /// Whether the sweeper should send every due step of `kind`, whose queue holds `depth`:
    /// wake-ups may have been lost since the last call (see [`Lost`]), or this process polls
    /// the store (see [`Queue::open`]) and its queue is empty.
    pub fn take_lost(&self, kind: StepKind, depth: usize) -> bool {
        self.lost.take(kind) || (self.polls_store && depth == 0)
    }

    pub fn mark_lost(&self, kind: StepKind) {
        self.lost.mark(kind)
    }

    /// Whether new wake-ups of `kind` wait in the store for a sweeper (see [`Lost`]).
    pub fn take_fresh(&self, kind: StepKind) -> bool {
        self.lost.take_fresh(kind)
    }

    /// Whether wake-ups are notifications that leave the steps in the store for a sweeper
    /// to take (`queue.url = postgres://…`).
    pub fn notifies(&self) -> bool {
        matches!(self.transport, Transport::Postgres(_))
    }

    pub fn mark_fresh(&self, kind: StepKind) {
        self.lost.mark_fresh(kind)
    }

    /// Sends one wake-up per step, each on its kind's queue. A lost wake-up costs latency,
    /// never a step.
    pub fn wake(&self, wakes: &[Wake]) {
        for &w in wakes {
            match &self.transport {
                Transport::Memory(m) => m.send(w),
                Transport::Redis(r) => r.send(w),
                Transport::Postgres(p) => p.send(w),
            }
        }
    }

    /// Hands the steps a sweeper took from the store to the workers: like [`Queue::wake`],
    /// except that with Postgres notifications they go to this process's own lanes (the
    /// sweeper's take already chose this process).
    pub fn deliver(&self, wakes: &[Wake]) {
        match &self.transport {
            Transport::Postgres(p) => wakes.iter().for_each(|&w| p.lanes.send(w)),
            _ => self.wake(wakes),
        }
    }

    /// Takes into this process's [`Lost`] flags the wake-ups of `kinds` (those its sweeper
    /// runs) that another process could not send: with Redis, pushes that failed in an
    /// intake. Other transports keep their flags in the process that sweeps.
    pub async fn collect_lost(&self, kinds: &[StepKind]) -> Result<(), QueueError> {
        match &self.transport {
            Transport::Redis(r) => r
                .collect_lost(kinds)
                .await
                .map_err(|e| QueueError(e.to_string())),
            Transport::Memory(_) | Transport::Postgres(_) => Ok(()),
        }
    }

    /// How many wake-ups wait on each kind's queue.
    pub async fn depths(&self) -> Result<Vec<(StepKind, usize)>, QueueError> {
        match &self.transport {
            Transport::Memory(m) => Ok(StepKind::ALL.map(|k| (k, m.depth(k))).to_vec()),
            Transport::Redis(r) => r.depths().await.map_err(|e| QueueError(e.to_string())),
            Transport::Postgres(p) => Ok(StepKind::ALL.map(|k| (k, p.lanes.depth(k))).to_vec()),
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Drops every wake-up waiting in the queue (an operator's "clear queue"); returns how
    /// many. Losing them is harmless — the caller marks the steps as not enqueued, and the
    /// sweeper's next pass sends them again.
    pub async fn purge(&self) -> Result<usize, QueueError> {
        match &self.transport {
            Transport::Memory(m) => Ok(m.purge()),
            Transport::Redis(r) => r.purge().await.map_err(|e| QueueError(e.to_string())),
            Transport::Postgres(p) => Ok(p.lanes.purge()),
        }
    }

    /// True when the queue can be used now (always, in process).
    pub async fn ping(&self) -> bool {
        match &self.transport {
            Transport::Memory(_) => true,
            Transport::Redis(r) => r.ping().await,
            Transport::Postgres(p) => p.ping(),
        }
    }

    /// A fresh apalis backend reading one kind's wake-ups, for one worker (re)start. Its
    /// own sink is a no-op: producers push through [`Queue::wake`], and closing a worker
    /// must not close the queue the next worker reads.
    pub fn backend(&self, kind: StepKind) -> MemoryStorage<Wake> {
        let stream = match &self.transport {
            Transport::Memory(m) => m.stream(kind),
            Transport::Redis(r) => r.stream(kind),
            Transport::Postgres(p) => p.lanes.stream(kind),
        };
        let drain = futures::sink::drain::<Task<Wake>>().sink_map_err(|never| match never {});
        let sink = MemorySink::new(Arc::new(futures::lock::Mutex::new(Box::new(drain))));
        MemoryStorage::new_with(sink, stream)
    }
}
