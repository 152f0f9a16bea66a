//! Wake-ups through Redis, shared by every process: one list per step kind
//! (`{prefix}:wake:{kind}`) holding step ids. Producers `LPUSH`, each worker of a kind
//! `BRPOP`s its own list, so a slow kind (email) never starves a fast one (stock).
//!
//! Why plain lists and not apalis-redis 1.0: the queue here only carries "step N may be
//! due" — attempts, retry times, leases and dead letters live in the step table. apalis-redis
//! keeps a data hash, a meta hash and a done-set entry per job that nothing deletes without a
//! vacuum, cannot drain a backlog of more than ~8,000 due jobs (`unpack` in
//! `fetch_next.lua`), and fails whole ack batches on one late ack. A list costs one
//! `LPUSH`/`BRPOP` per wake-up, its length is `LLEN`, and losing it (a Redis restart
//! without persistence) loses nothing: the sweeper sees an empty list with due steps and
//! re-sends them. apalis still runs the workers (concurrency, catch-panic, graceful stop).
//!
//! Every connection is a `ConnectionManager`: it reconnects with backoff by itself, so a
//! Redis restart costs errors for its duration, not the process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use apalis_core::task::Task;
use jobs::{StepKind, Wake};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::{Lost, WakeStream};

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    window: usize,
    /// Each kind's list length as last seen (a push's reply, or the sweeper's `LLEN`).
    depth: Arc<HashMap<StepKind, AtomicUsize>>,
    pushes: mpsc::UnboundedSender<Wake>,
    lost: Arc<Lost>,
}

impl Redis {
    /// Opens lazily: a Redis that is down at start makes errors (and a not-ready process),
    /// not a failed start.
    pub fn open(
        url: &str,
        prefix: &str,
        window: usize,
        lost: Arc<Lost>,
    ) -> Result<Redis, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = manager(&client, Duration::from_secs(2))?;
        let depth = StepKind::ALL
            .into_iter()
            .map(|k| (k, AtomicUsize::new(0)))
            .collect();
        let (pushes, rx) = mpsc::unbounded_channel();
        let r = Redis {
            client,
            conn,
            prefix: prefix.to_owned(),
            window,
            depth: Arc::new(depth),
            pushes,
            lost,
        };
        tokio::spawn(r.clone().pusher(rx));
        Ok(r)
    }

    fn key(&self, kind: StepKind) -> String {
        format!("{}:wake:{}", self.prefix, kind.as_str())
    }

    /// Queues a wake-up for the pusher (never blocks the caller; a request that just
    /// committed does not wait for Redis).
    pub fn send(&self, w: Wake) {
        // Closed only when the runtime is going down; the sweeper re-sends at next start.
        let _ = self.pushes.send(w);
    }

    /// Takes whatever wake-ups are waiting and pushes them in one pipeline, one `LPUSH` per
    /// kind. A kind whose list holds `window` or more gets none: those steps wait in the
    /// store until the list drains (the sweeper sends them then). On an error the batch is
    /// dropped the same way — the step rows are the queue.
    async fn pusher(self, mut rx: mpsc::UnboundedReceiver<Wake>) {
        let mut conn = self.conn.clone();
        let mut batch = Vec::new();
        let mut failing = false;
        while rx.recv_many(&mut batch, 4096).await > 0 {
            let mut by_kind: HashMap<StepKind, Vec<i64>> = HashMap::new();
            for w in batch.drain(..) {
                if self.depth[&w.kind].load(Ordering::Relaxed) < self.window {
                    by_kind.entry(w.kind).or_default().push(w.step_id);
                } else {
                    self.lost.mark(w.kind);
                }
            }
            if by_kind.is_empty() {
                continue;
            }
            let kinds: Vec<StepKind> = by_kind.keys().copied().collect();
            let mut pipe = redis::pipe();
            for k in &kinds {
                pipe.lpush(self.key(*k), &by_kind[k]);
            }
            match pipe.query_async::<Vec<usize>>(&mut conn).await {
                Ok(lengths) => {
                    for (k, len) in kinds.iter().zip(lengths) {
                        self.depth[k].store(len, Ordering::Relaxed);
                    }
                    if failing {
                        tracing::info!("redis queue reachable again");
                        failing = false;
                    }
                }
                Err(e) => {
                    for k in &kinds {
                        self.lost.mark(*k);
                    }
                    if !failing {
                        tracing::warn!(error = %e, "redis queue: push failed; the sweeper will re-send these steps");
                        failing = true;
                    }
                }
            }
        }
    }

    /// Each kind's list length, read now; also what the pusher goes by until its next reply.
    /// It also notices a Redis that lost its data (restarted without persistence, flushed):
    /// the `{prefix}:epoch` key, set when missing, is gone — every queue may have lost
    /// wake-ups then.
    pub async fn depths(&self) -> Result<Vec<(StepKind, usize)>, redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{}:epoch", self.prefix))
            .arg(crate::domain::now_ms())
            .arg("NX");
        for k in StepKind::ALL {
            pipe.llen(self.key(k));
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let (fresh, lens) = replies.split_first().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "empty pipeline reply"))
        })?;
        let lens = lens
            .iter()
            .map(redis::from_redis_value_ref::<usize>)
            .collect::<Result<Vec<usize>, _>>()?;
        if !matches!(fresh, redis::Value::Nil) {
            tracing::info!(
                "redis queue: no epoch key (first start, or Redis lost its data); re-sending every due step"
            );
            self.lost.mark_all();
        }
        let depths: Vec<(StepKind, usize)> = StepKind::ALL.into_iter().zip(lens).collect();
        for &(k, len) in &depths {
            self.depth[&k].store(len, Ordering::Relaxed);
        }
        Ok(depths)
    }

    pub async fn purge(&self) -> Result<usize, redis::RedisError> {
        let before: usize = self.depths().await?.iter().map(|(_, n)| n).sum();
        let keys: Vec<String> = StepKind::ALL.into_iter().map(|k| self.key(k)).collect();
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        for d in self.depth.values() {
            d.store(0, Ordering::Relaxed);
        }
        Ok(before)
    }

    pub async fn ping(&self) -> bool {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .is_ok()
    }

    /// The wake-ups of one kind, for one worker (re)start: `BRPOP` on a connection of its
    /// own (a blocking pop would hold up everything else multiplexed on a shared one).
    /// While Redis is unreachable it waits with backoff (0.1 s doubling to 5 s) and tries
    /// again; the stream never ends on its own.
    pub fn stream(&self, kind: StepKind) -> WakeStream {
        const BLOCK_SECS: f64 = 1.0;
        let key = self.key(kind);
        let client = self.client.clone();
        let conn: Option<ConnectionManager> = None;
        let state = (client, conn, key, Duration::ZERO);
        Box::pin(futures::stream::unfold(
            state,
            move |(client, mut conn, key, mut backoff)| async move {
                loop {
                    if !backoff.is_zero() {
                        tokio::time::sleep(backoff).await;
                    }
                    let c = match &mut conn {
                        Some(c) => c,
                        None => match manager(&client, Duration::from_secs(5)) {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                tracing::warn!(error = %e, "redis queue: cannot connect");
                                backoff = next_backoff(backoff);
                                continue;
                            }
                        },
                    };
                    let popped: Result<Option<(String, i64)>, _> = redis::cmd("BRPOP")
                        .arg(&key)
                        .arg(BLOCK_SECS)
                        .query_async(c)
                        .await;
                    match popped {
                        Ok(Some((_, step_id))) => {
                            let task = Task::new(Wake { step_id, kind });
                            return Some((task, (client, conn, key, Duration::ZERO)));
                        }
                        Ok(None) => backoff = Duration::ZERO,
                        Err(e) => {
                            if backoff.is_zero() {
                                tracing::warn!(error = %e, kind = kind.as_str(), "redis queue: pop failed; retrying with backoff");
                            }
                            backoff = next_backoff(backoff);
                        }
                    }
                }
            },
        ))
    }
}

fn next_backoff(d: Duration) -> Duration {
    (d * 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

fn manager(
    client: &redis::Client,
    response_timeout: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_max_delay(Duration::from_secs(5));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}
