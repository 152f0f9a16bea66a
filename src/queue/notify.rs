//! `queue.url = postgres://…`: Postgres `LISTEN`/`NOTIFY` as the wake-up transport, for a
//! deployment that runs Postgres and nothing else.
//!
//! A notification carries no step, only "steps of kind K are due": producers send one per
//! kind after their commit (`pg_notify('{prefix}_wake', kind)`, coalesced per batch), and
//! every process whose workers run K answers it with an immediate sweeper pass for K. That
//! pass takes the due steps no sweeper has taken since their wake-up with one conditional
//! `UPDATE … RETURNING` (`Store::take_fresh`), so each step goes to one process, and feeds
//! this process's in-process lane. The step table stays the only queue: a (re)connecting
//! listener makes the next pass send every due step, and a notification lost otherwise
//! costs at most `queue.sweep_interval_ms`: every periodic pass takes the untaken steps too.
//!
//! Why not apalis-postgres: it keeps its own jobs table beside our step table (a second
//! durable copy of every wake-up, and one more table to vacuum), where a signal is all the
//! step table needs.
//!
//! Postgres sends a notification only at commit and to every listener, so this suits up to
//! a few thousand wake-ups a second; past that, Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jobs::{StepKind, Wake};
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc};

use super::Lost;
use super::memory::Memory;

#[derive(Clone)]
pub struct PgNotify {
    /// This process's lanes, fed by the sweeper's passes.
    pub lanes: Memory,
    kinds: mpsc::UnboundedSender<StepKind>,
    listening: Arc<AtomicBool>,
}

impl PgNotify {
    /// Starts the notifier and the listener; neither waits for Postgres to be up.
    pub fn open(url: &str, prefix: &str, lost: Arc<Lost>, nudge: Arc<Notify>) -> PgNotify {
        let channel = format!("{prefix}_wake");
        let (kinds, rx) = mpsc::unbounded_channel();
        let listening = Arc::new(AtomicBool::new(false));
        tokio::spawn(notifier(url.to_owned(), channel.clone(), rx));
        tokio::spawn(listener(
            url.to_owned(),
            channel,
            lost,
            nudge,
            listening.clone(),
        ));
        PgNotify {
            lanes: Memory::new(&StepKind::ALL),
            kinds,
            listening,
        }
    }

    pub fn send(&self, w: Wake) {
        // Closed only when the notifier ended with the runtime.
        let _ = self.kinds.send(w.kind);
    }

    /// Whether the listener holds a connection now.
    pub fn ping(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }
}

/// Sends one notification per kind for whatever wake-ups are waiting: a burst of thousands
/// costs a handful of statements.
async fn notifier(url: String, channel: String, mut rx: mpsc::UnboundedReceiver<StepKind>) {
    let pool = match PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&url)
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "queue.url: cannot use this Postgres URL for wake-ups");
            return;
        }
    };
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        let mut due = vec![first];
        while let Ok(k) = rx.try_recv() {
            if !due.contains(&k) {
                due.push(k);
            }
        }
        for kind in due {
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(kind.as_str())
                .execute(&pool)
                .await;
            // A notification not sent costs latency only: the sweepers' periodic passes
            // find the step.
            match sent {
                Ok(_) if failing => {
                    tracing::info!("wake-up notifications sent again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot send wake-up notifications; the sweeper will find the steps");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}

/// Listens for notifications, reconnecting with backoff; each one marks its kind for the
/// sweeper's next pass and starts that pass.
async fn listener(
    url: String,
    channel: String,
    lost: Arc<Lost>,
    nudge: Arc<Notify>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut l = match connect(&url, &channel).await {
            Ok(l) => l,
            Err(e) => {
                if listening.swap(false, Ordering::Relaxed) || backoff.as_millis() == 100 {
                    tracing::warn!(error = %e, "cannot listen for wake-ups; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        listening.store(true, Ordering::Relaxed);
        // Notifications sent while nobody listened are gone: look at everything due.
        lost.mark_all();
        nudge.notify_one();
        loop {
            match l.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(kind) = StepKind::parse(n.payload()) {
                        lost.mark_fresh(kind);
                        nudge.notify_one();
                    }
                }
                // The connection dropped; the listener reconnects on the next call.
                Ok(None) => {
                    lost.mark_all();
                    nudge.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the wake-up listener; reconnecting");
                    listening.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

async fn connect(url: &str, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(channel).await?;
    Ok(l)
}
