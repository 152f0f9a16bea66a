//! The embedded queue: one in-process channel per step kind, read by apalis workers.
//!
//! Why not apalis-sqlite beside the store: its jobs table slows down as it grows, its
//! `setup()` turns fsync off on a pooled connection, and it would be a second durable copy
//! of what the step table already holds. In one `serve` process the step table plus the
//! sweeper give the same guarantees with none of those traps: wake-ups are cheap to lose,
//! because the sweeper re-sends every due step that has none waiting.
//!
//! The channels are multi-consumer: every worker (re)started by the monitor reads its
//! kind's channel directly, so a restarted worker picks up where the old one stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use apalis_core::task::Task;
use futures::StreamExt;
use jobs::{StepKind, Wake};

use super::WakeStream;

type Lane = (flume::Sender<Wake>, flume::Receiver<Wake>);

#[derive(Clone)]
pub struct Memory {
    lanes: Arc<HashMap<StepKind, Lane>>,
    /// The kinds this process's workers read; wake-ups of others are dropped.
    runs: Arc<HashSet<StepKind>>,
}

impl Memory {
    pub fn new(runs: &[StepKind]) -> Memory {
        let lanes = StepKind::ALL
            .into_iter()
            .map(|kind| (kind, flume::unbounded()))
            .collect();
        Memory {
            lanes: Arc::new(lanes),
            runs: Arc::new(runs.iter().copied().collect()),
        }
    }

    fn lane(&self, kind: StepKind) -> &Lane {
        // Every kind has a lane: `new` makes one for each of StepKind::ALL.
        &self.lanes[&kind]
    }

    pub fn send(&self, w: Wake) {
        if self.runs.contains(&w.kind) {
            // The channel closes only with the process; the sweeper re-sends at next start.
            let _ = self.lane(w.kind).0.send(w);
        }
    }

    /// Wake-ups sent and not yet taken by a worker.
    pub fn depth(&self, kind: StepKind) -> usize {
        self.lane(kind).1.len()
    }

    /// Drops every waiting wake-up; returns how many.
    pub fn purge(&self) -> usize {
        self.lanes.values().map(|(_, rx)| rx.drain().count()).sum()
    }

    /// The wake-ups of one kind, for one worker (re)start.
    pub fn stream(&self, kind: StepKind) -> WakeStream {
        Box::pin(self.lane(kind).1.clone().into_stream().map(Task::new))
    }
}
