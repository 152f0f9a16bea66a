//! Fulfilment steps: the durable queue. A wake-up in a queue backend only says "look at
//! step N"; everything that matters — whether it is due, who holds it, how many attempts it
//! had, why it last failed — is here, so losing every wake-up loses nothing.
//!
//! Life of a step: `waiting` (an earlier step of its order is not done) → `pending` (due at
//! `next_run_at`) → `running` (claimed under a lease token) → `done` | `skipped` | `dead`.
//! A failed attempt goes back to `pending` with a later `next_run_at`. Only the holder of
//! the current lease token can finish or fail a step, so a worker that lost its lease (it
//! stalled and another took over) cannot mark anything.

use std::sync::{Arc, Mutex};

use jobs::{RetryPolicy, StepError, StepKind, Wake};
use serde::Serialize;
use sqlx::{FromRow, Row};

use super::{Backend, Result, Store, Tx, orders};
use crate::clock::now_ms;
use crate::domain::{OrderStatus, StepStatus, new_id};

mod advance;
mod leases;

pub use advance::*;
pub use leases::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub id: i64,
    pub order_id: String,
    pub payment_id: String,
    pub kind: String,
    pub position: i64,
    pub status: StepStatus,
    /// Runs so far, ever.
    pub attempts: i64,
    /// Runs before the current retry budget began (an admin retry or a re-arm).
    #[serde(skip)]
    pub attempt_base: i64,
    /// The process that ran (or runs) the latest attempt.
    pub worker: Option<String>,
    pub next_run_at: i64,
    pub last_error: Option<String>,
    pub outcome: Option<String>,
    /// The request that caused the step (see [`super::CAUSE`]).
    pub request_id: Option<String>,
}

const COLS: &str = "id, order_id, payment_id, kind, position, status, attempts, attempt_base, \
     worker, next_run_at, last_error, outcome, request_id";

/// A claimed step: only this token may finish or fail it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub step: StepRow,
    pub token: String,
    /// When this run claimed the step (the start of its attempt).
    pub started_at: i64,
    /// Where this run may go straight on to the order's next step (see [`Chain`]).
    pub chain: Option<Arc<Chain>>,
}

/// Chaining: a run that finishes its step may claim the order's next step in the same
/// commit — when that step is one of `into` (kinds that only touch the store, run by this
/// process) — and run it right after, without a wake-up, a queue hop and a claim commit of
/// its own. The claim is an ordinary lease: if this process dies, it expires and the sweeper
/// hands the step out again.
#[derive(Debug, Default)]
pub struct Chain {
    pub into: Vec<StepKind>,
    pub lease_ms: u64,
    pub worker: String,
    /// The next step, claimed in the commit that finished this one; taken once that commit
    /// succeeded.
    pub next: Mutex<Option<Lease>>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    RetryAt(i64),
    Dead,
    /// The lease was lost meanwhile; someone else owns the step now.
    LostLease,
}

/// Inserts a step; returns its id if it was new (order + kind + payment is unique, so a
/// duplicate event creates nothing).
pub async fn insert(
    tx: &mut Tx,
    order_id: &str,
    payment_id: &str,
    kind: StepKind,
    status: StepStatus,
) -> Result<Option<Wake>> {
    let now = now_ms();
    // A pending step is woken right after the commit; enqueued_at says so to the sweeper.
    let enqueued_at = (status == StepStatus::Pending).then_some(now);
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO steps (order_id, payment_id, kind, position, status, next_run_at, enqueued_at, created_at, updated_at, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6, $8)
         ON CONFLICT (order_id, kind, payment_id) DO NOTHING
         RETURNING id",
    )
    .bind(order_id)
    .bind(payment_id)
    .bind(kind.as_str())
    .bind(kind.position())
    .bind(status)
    .bind(now)
    .bind(enqueued_at)
    .bind(tx.cause.clone())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(id.map(|step_id| Wake { step_id, kind }))
}

/// Creates the fulfilment pipeline of each `(order, payment, cause)`: the first step
/// pending, the rest waiting, each carrying the request id that caused it — all of them in
/// one statement. Returns, per pair, the ids to wake (none if
/// its pipeline already existed). The steps of an earlier payment that failed at capture
/// stay, done or skipped, as history.
pub async fn create_pipelines(
    tx: &mut Tx,
    pairs: &[(&str, &str, Option<&str>)],
) -> Result<Vec<Vec<Wake>>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    // $1 is the time; each pair binds its order, payment and cause; kinds, positions and
    // statuses are our own constants. The text varies with the batch size, so it is not
    // cached.
    let mut sql = String::from(
        "INSERT INTO steps (order_id, payment_id, kind, position, status, next_run_at, enqueued_at, created_at, updated_at, request_id) VALUES ",
    );
    for i in 0..pairs.len() {
        let (o, p, c) = (2 + 3 * i, 3 + 3 * i, 4 + 3 * i);
        for (k, kind) in StepKind::FULFILMENT.into_iter().enumerate() {
            let (status, enqueued) = if k == 0 {
                (StepStatus::Pending, "$1")
            } else {
                (StepStatus::Waiting, "NULL")
            };
            if i + k > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${o}, ${p}, '{}', {}, '{status}', $1, {enqueued}, $1, $1, ${c})",
                kind.as_str(),
                kind.position()
            ));
        }
    }
    sql.push_str(
        " ON CONFLICT (order_id, kind, payment_id) DO NOTHING RETURNING id, order_id, payment_id, kind, status",
    );
    let mut q =
        sqlx::query_as::<_, (i64, String, String, String, StepStatus)>(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(now_ms());
    for (o, p, c) in pairs {
        q = q.bind(*o).bind(*p).bind(*c);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    let mut out = vec![Vec::new(); pairs.len()];
    for (id, order, payment, kind, status) in rows {
        if status != StepStatus::Pending {
            continue;
        }
        let (Some(i), Some(kind)) = (
            pairs
                .iter()
                .position(|(o, p, _)| *o == order && *p == payment),
            StepKind::parse(&kind),
        ) else {
            continue;
        };
        out[i].push(Wake { step_id: id, kind });
    }
    Ok(out)
}

/// The wake-up for a step row. A kind this build does not know (a row written by a newer
/// version) has no queue here; the sweeper of a process that knows it will send it.
pub fn wake_of(step_id: i64, kind: &str) -> Option<Wake> {
    let kind = StepKind::parse(kind);
    if kind.is_none() {
        tracing::warn!(step_id, "step of an unknown kind left for a newer version");
    }
    kind.map(|kind| Wake { step_id, kind })
}

impl Store {
    /// Claims a due pending step for this worker. `None` when it is not due, already
    /// running elsewhere, or finished — every duplicate wake-up ends here, harmlessly.
    /// `worker` names this process (see `Engine::worker`), so the attempt history says which
    /// process ran each attempt.
    pub async fn claim(&self, step_id: i64, lease_ms: u64, worker: &str) -> Result<Option<Lease>> {
        let _writer = self.write_guard().await;
        let mut conn = self.pool.acquire().await?;
        let leases = lease_many(
            &mut conn,
            &[step_id],
            StepStatus::Pending,
            now_ms(),
            lease_ms,
            worker,
        )
        .await?;
        Ok(leases.into_iter().next())
    }

    /// Records a failed attempt: rescheduled with backoff if transient and attempts remain,
    /// dead otherwise (and the order then needs review: it cannot finish on its own).
    pub async fn fail(
        &self,
        lease: &Lease,
        err: &StepError,
        policy: RetryPolicy,
    ) -> Result<Failed> {
        let attempts =
            u32::try_from(lease.step.attempts - lease.step.attempt_base).unwrap_or(u32::MAX);
        let waiting = matches!(err, StepError::Waiting(_));
        let dead = err.is_permanent() || (!waiting && policy.exhausted(attempts));
        let message = err.to_string();
        let mut tx = self.begin().await?;
        // After begin (which may wait for the writer): the attempt ends now, and its retry
        // is due `delay` after that.
        let now = now_ms();
        let (status, next) = if dead {
            (StepStatus::Dead, now)
        } else if waiting {
            (StepStatus::Pending, now + jobs::WAITING_RETRY_MS)
        } else {
            let delay = policy.delay_ms(attempts, &mut rand::rng());
            (StepStatus::Pending, now + delay as i64)
        };
        // A wait is not an attempt: the base moves with the count.
        let r = sqlx::query(
            "UPDATE steps SET status = $1, next_run_at = $2, last_error = $3, lease_token = NULL,
                              lease_until = NULL, enqueued_at = NULL, updated_at = $4,
                              attempt_base = attempt_base + $7
             WHERE id = $5 AND lease_token = $6 AND status = 'running'",
        )
        .bind(status)
        .bind(next)
        .bind(&message)
        .bind(now)
        .bind(lease.step.id)
        .bind(&lease.token)
        .bind(i64::from(waiting))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(Failed::LostLease);
        }
        record_attempt(
            &mut tx,
            Ran {
                step_id: lease.step.id,
                worker: lease.step.worker.as_deref().unwrap_or(""),
                attempt: lease.step.attempts,
                started_at: lease.started_at,
                ended_at: now,
            },
            if dead {
                "dead"
            } else if waiting {
                "waiting"
            } else {
                "retry"
            },
            Some(&message),
            (!dead).then_some(next),
        )
        .await?;
        if dead {
            let step = serde_json::json!({ "step": {
                "id": lease.step.id, "kind": lease.step.kind, "attempts": lease.step.attempts,
                "error": message,
            }});
            super::merchant::emit(&mut tx, "step.dead", &[(&lease.step.order_id, step)]).await?;
            stop_for_review(&mut tx, &lease.step.order_id).await?;
        }
        tx.commit().await?;
        Ok(if dead {
            Failed::Dead
        } else {
            Failed::RetryAt(next)
        })
    }

    /// Up to `limit` steps of `kind` due now whose wake-up is missing or was sent before
    /// `requeue_before`, marked as sent now. One statement, so sweepers of several
    /// processes racing for the same steps mostly split them (a step sent twice only costs
    /// a claim that finds nothing).
    pub async fn take_due(
        &self,
        kind: StepKind,
        requeue_before: i64,
        limit: usize,
    ) -> Result<Vec<Wake>> {
        self.take(
            kind,
            limit,
            "enqueued_at = $1, taken_at = $1",
            "(enqueued_at IS NULL OR enqueued_at <= $4)",
            Some(requeue_before),
        )
        .await
    }

    /// Up to `limit` due steps of `kind` whose latest wake-up no sweeper has taken yet
    /// (with `queue.url = postgres://` a wake-up is only a notification): each goes to the
    /// one process whose update wins.
    pub async fn take_fresh(&self, kind: StepKind, limit: usize) -> Result<Vec<Wake>> {
        self.take(
            kind,
            limit,
            "taken_at = $1",
            "enqueued_at IS NOT NULL AND (taken_at IS NULL OR taken_at < enqueued_at)",
            None,
        )
        .await
    }

    /// Sets `set` on up to `limit` pending, due steps of `kind` that match `filter`, in one
    /// statement; `$1` is now, `$4` `requeue_before`.
    async fn take(
        &self,
        kind: StepKind,
        limit: usize,
        set: &str,
        filter: &str,
        requeue_before: Option<i64>,
    ) -> Result<Vec<Wake>> {
        let now = now_ms();
        // On Postgres the chosen rows are locked as they are chosen, and those another
        // transaction holds are left out: a row a worker's batch is claiming right now needs
        // no wake-up, and waiting for that batch's commit while holding the rows already
        // taken is how a take and a batch deadlock (each a second stalled, until Postgres
        // breaks the cycle). What is left out and still due is taken by the next pass.
        let lock = match self.backend {
            Backend::Postgres => "FOR NO KEY UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let _writer = self.write_guard().await;
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "UPDATE steps SET {set}
             WHERE id IN (SELECT id FROM steps
                          WHERE kind = $2 AND status = 'pending' AND next_run_at <= $1 AND {filter}
                          ORDER BY next_run_at LIMIT $3 {lock})
               AND status = 'pending' AND {filter}
             RETURNING id"
        )))
        .bind(now)
        .bind(kind.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(before) = requeue_before {
            q = q.bind(before);
        }
        Ok(q.fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|step_id| Wake { step_id, kind })
            .collect())
    }

    /// A worker that died or stalled past its lease gives its step back, and the cut-off
    /// run is recorded as an attempt. A step whose lease expired `max_expiries` times is a
    /// poison job (its run keeps killing or hanging its worker): it goes dead instead, and
    /// its order needs review. Safe with several sweepers at once: each release is
    /// conditional on the lease token it read.
    pub async fn release_expired_leases(&self, max_expiries: i64) -> Result<u64> {
        let now = now_ms();
        type Expired = (i64, String, i64, Option<i64>, Option<String>, String, i64);
        let expired: Vec<Expired> = sqlx::query_as(
            "SELECT id, order_id, attempts, run_started_at, worker, lease_token, lease_expiries
             FROM steps WHERE status = 'running' AND lease_until < $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut released = 0;
        for (id, order_id, attempts, started_at, worker, token, expiries) in expired {
            let expiries = expiries + 1;
            let poison = expiries >= max_expiries;
            let message = if poison {
                format!(
                    "poison job: its worker stopped or stalled mid-step {expiries} times (lease expired); not run again"
                )
            } else {
                "lease expired: the worker stopped or stalled mid-step".to_owned()
            };
            let mut tx = self.begin().await?;
            let r = sqlx::query(
                "UPDATE steps SET status = $1, lease_token = NULL, lease_until = NULL,
                                  enqueued_at = NULL, next_run_at = $2, last_error = $3,
                                  lease_expiries = $4, updated_at = $2
                 WHERE id = $5 AND lease_token = $6 AND status = 'running'",
            )
            .bind(if poison {
                StepStatus::Dead
            } else {
                StepStatus::Pending
            })
            .bind(now)
            .bind(&message)
            .bind(expiries)
            .bind(id)
            .bind(&token)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                continue;
            }
            let outcome = if poison { "dead" } else { "lease_expired" };
            let run = Ran {
                step_id: id,
                worker: worker.as_deref().unwrap_or(""),
                attempt: attempts,
                started_at: started_at.unwrap_or(now),
                ended_at: now,
            };
            record_attempt(&mut tx, run, outcome, Some(&message), None).await?;
            if poison {
                stop_for_review(&mut tx, &order_id).await?;
            }
            tx.commit().await?;
            released += 1;
        }
        Ok(released)
    }

    /// Forgets that any due step's wake-up is in flight, so the sweeper's next pass sends
    /// every one again (after the queue lost or dropped its wake-ups); `actor`'s purge is
    /// audited in the same transaction.
    pub async fn forget_enqueued(&self, actor: &str, reason: Option<&str>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "UPDATE steps SET enqueued_at = NULL WHERE status = 'pending' AND enqueued_at IS NOT NULL",
        )
        .execute(&mut *tx)
        .await?;
        crate::store::audit::record(&mut tx, actor, "queue.purge", "queue", reason).await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    pub async fn order_steps(&self, order_id: &str) -> Result<Vec<StepRow>> {
        Ok(sqlx::query_as::<_, StepRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM steps WHERE order_id = $1 ORDER BY position"
        )))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
