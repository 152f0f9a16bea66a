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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
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
    pushes: mpsc::UnboundedSender<Wake>,
    lost: Arc<Lost>,
}

impl Redis {
    /// Opens lazily: a Redis that is down at start makes errors (and a not-ready process),
    /// not a failed start.
    pub fn open(url: &str, prefix: &str, lost: Arc<Lost>) -> Result<Redis, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = manager(&client, Duration::from_secs(2))?;
        let (pushes, rx) = mpsc::unbounded_channel();
        let r = Redis {
            client,
            conn,
            prefix: prefix.to_owned(),
            pushes,
            lost,
        };
        tokio::spawn(r.clone().pusher(rx));
        Ok(r)
    }

    fn key(&self, kind: StepKind) -> String {
        format!("{}:wake:{}", self.prefix, kind.as_str())
    }

    fn lost_key(&self, kind: StepKind) -> String {
        format!("{}:lost:{}", self.prefix, kind.as_str())
    }

    /// Queues a wake-up for the pusher (never blocks the caller; a request that just
    /// committed does not wait for Redis).
    pub fn send(&self, w: Wake) {
        // Closed only when the runtime is going down; the sweeper re-sends at next start.
        let _ = self.pushes.send(w);
    }

    /// Takes whatever wake-ups are waiting and pushes them in one pipeline, one `LPUSH` per
    /// kind. Wake-ups of new work always go out, whatever a list holds: an entry costs Redis
    /// a few bytes, and a step held back would wait for a sweeper to find it among everything
    /// due (`queue.window` bounds what sweepers add, see [`super::sweeper`]). When a push
    /// fails the batch is dropped — the step rows are the queue — and the kinds it named owe
    /// a lost flag (`{prefix}:lost:{kind}`): the next pipeline that gets through sets them,
    /// tried each second meanwhile, and the next sweeper of that kind in any process (this
    /// one may run none: an intake) then sends every due step of it.
    async fn pusher(self, mut rx: mpsc::UnboundedReceiver<Wake>) {
        let mut conn = self.conn.clone();
        let mut batch = Vec::new();
        let mut owed: HashSet<StepKind> = HashSet::new();
        loop {
            let retry = async {
                if owed.is_empty() {
                    std::future::pending::<()>().await
                }
                tokio::time::sleep(Duration::from_secs(1)).await
            };
            tokio::select! {
                n = rx.recv_many(&mut batch, 4096) => if n == 0 { return },
                _ = retry => {}
            }
            let mut by_kind: HashMap<StepKind, Vec<i64>> = HashMap::new();
            for w in batch.drain(..) {
                by_kind.entry(w.kind).or_default().push(w.step_id);
            }
            let mut pipe = redis::pipe();
            for (k, ids) in &by_kind {
                pipe.lpush(self.key(*k), ids).ignore();
            }
            for k in &owed {
                pipe.set(self.lost_key(*k), 1).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    if !owed.is_empty() {
                        tracing::info!("redis queue reachable again");
                        owed.clear();
                    }
                }
                Err(e) => {
                    if owed.is_empty() {
                        tracing::warn!(error = %e, "redis queue: push failed; the sweeper will re-send these steps");
                    }
                    for k in by_kind.into_keys() {
                        self.lost.mark(k);
                        owed.insert(k);
                    }
                }
            }
        }
    }

    /// Takes the lost flags of `kinds` that pushers set in Redis (see [`Redis::pusher`]) into
    /// this process's own, for its sweeper, which runs those kinds.
    pub async fn collect_lost(&self, kinds: &[StepKind]) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        for k in kinds {
            pipe.cmd("GETDEL").arg(self.lost_key(*k));
        }
        let flags: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        for (k, flag) in kinds.iter().zip(flags) {
            if flag.is_some() {
                self.lost.mark(*k);
            }
        }
        Ok(())
    }

    /// Each kind's list length, read now.
    /// It also notices a Redis that lost its data (restarted without persistence, flushed):
    /// the `{prefix}:epoch` key, set when missing, is gone — every queue may have lost
    /// wake-ups then.
    pub async fn depths(&self) -> Result<Vec<(StepKind, usize)>, redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(format!("{}:epoch", self.prefix))
            .arg(crate::clock::now_ms())
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
        Ok(StepKind::ALL.into_iter().zip(lens).collect())
    }

    pub async fn purge(&self) -> Result<usize, redis::RedisError> {
        let before: usize = self.depths().await?.iter().map(|(_, n)| n).sum();
        let keys: Vec<String> = StepKind::ALL.into_iter().map(|k| self.key(k)).collect();
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
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
