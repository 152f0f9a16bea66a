//! The embedded queue: an unbounded in-process channel read by apalis's `MemoryStorage`.
//!
//! Why not apalis-sqlite beside the store: its jobs table slows down as it grows, its
//! `setup()` turns fsync off on a pooled connection, and it would be a second durable copy
//! of what the step table already holds. In a single `serve` process the step table plus
//! the sweeper give the same guarantees with none of those traps: wake-ups are cheap to
//! lose, because the sweeper re-sends every due step after a restart.
//!
//! Every worker (re)started by the monitor reads the same shared receiver, so a restarted
//! worker picks up where the old one stopped.

use std::pin::Pin;
use std::sync::Arc;

use apalis_core::backend::memory::{MemorySink, MemoryStorage};
use apalis_core::task::Task;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::{SinkExt, Stream, StreamExt};
use jobs::Wake;

/// The producer side: cheap to clone, never blocks. It can also empty the queue.
#[derive(Clone)]
pub struct Queue {
    tx: UnboundedSender<Task<Wake>>,
    rx: Receiver,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue(memory)")
    }
}

/// The consumer side, shared by every worker of this process.
#[derive(Clone)]
pub struct Receiver {
    rx: Arc<futures::lock::Mutex<UnboundedReceiver<Task<Wake>>>>,
}

pub fn channel() -> (Queue, Receiver) {
    let (tx, rx) = unbounded();
    let rx = Receiver {
        rx: Arc::new(futures::lock::Mutex::new(rx)),
    };
    (Queue { tx, rx: rx.clone() }, rx)
}

impl Queue {
    /// Sends one wake-up per step id. A closed channel (shutting down) drops them: the
    /// sweeper re-sends due steps at the next start.
    pub fn wake(&self, step_ids: &[i64]) {
        for &step_id in step_ids {
            if self.tx.unbounded_send(Task::new(Wake { step_id })).is_err() {
                tracing::debug!(step_id, "queue closed; the sweeper will re-send this step");
            }
        }
    }

    /// Drops every wake-up waiting in the queue (an operator's "clear queue"); returns how
    /// many. Losing them is harmless — the caller marks the steps as not enqueued, and the
    /// sweeper's next pass sends them again.
    pub async fn purge(&self) -> usize {
        let mut rx = self.rx.rx.lock().await;
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

impl Receiver {
    /// A fresh apalis backend over the shared receiver, for one worker (re)start. Its own
    /// sink is a no-op: producers push through [`Queue`], and closing a worker must not
    /// close the channel the next worker reads.
    pub fn backend(&self) -> MemoryStorage<Wake> {
        let rx = self.rx.clone();
        let stream = futures::stream::unfold(rx, |rx| async move {
            let next = rx.lock().await.next().await;
            next.map(|task| (task, rx))
        });
        let stream: Pin<Box<dyn Stream<Item = Task<Wake>> + Send>> = Box::pin(stream);
        let drain = futures::sink::drain::<Task<Wake>>().sink_map_err(|never| match never {});
        let sink = MemorySink::new(Arc::new(futures::lock::Mutex::new(Box::new(drain))));
        MemoryStorage::new_with(sink, stream)
    }
}
