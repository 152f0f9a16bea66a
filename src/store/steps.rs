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
use crate::domain::{new_id, now_ms};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub id: i64,
    pub order_id: String,
    pub payment_id: String,
    pub kind: String,
    pub position: i64,
    pub status: String,
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
    status: &str,
) -> Result<Option<Wake>> {
    let now = now_ms();
    // A pending step is woken right after the commit; enqueued_at says so to the sweeper.
    let enqueued_at = (status == "pending").then_some(now);
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
                ("pending", "$1")
            } else {
                ("waiting", "NULL")
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
        sqlx::query_as::<_, (i64, String, String, String, String)>(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(now_ms());
    for (o, p, c) in pairs {
        q = q.bind(*o).bind(*p).bind(*c);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    let mut out = vec![Vec::new(); pairs.len()];
    for (id, order, payment, kind, status) in rows {
        if status != "pending" {
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

/// Schedules a step that may be needed more than once for a payment: re-reading it after
/// an event contradicted it, telling the buyer it failed or was refunded. One that already
/// ran is armed again; one still to run keeps its place (it reads the state of things when
/// it runs); one running now may have read the state already, so it runs once more after it
/// finishes (`rearm`). Returns the id to wake, if any.
pub async fn arm(
    tx: &mut Tx,
    order_id: &str,
    payment_id: &str,
    kind: StepKind,
) -> Result<Option<Wake>> {
    let now = now_ms();
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO steps (order_id, payment_id, kind, position, status, next_run_at, enqueued_at, created_at, updated_at, request_id)
         VALUES ($1, $2, $3, $4, 'pending', $5, $5, $5, $5, $6)
         ON CONFLICT (order_id, kind, payment_id) DO UPDATE SET status = 'pending', attempt_base = steps.attempts, lease_expiries = 0,
             next_run_at = $5, enqueued_at = $5, outcome = NULL, last_error = NULL, updated_at = $5,
             request_id = COALESCE($6, steps.request_id)
         WHERE steps.status IN ('done', 'dead', 'skipped')
         RETURNING id",
    )
    .bind(order_id)
    .bind(payment_id)
    .bind(kind.as_str())
    .bind(kind.position())
    .bind(now)
    .bind(tx.cause.clone())
    .fetch_optional(&mut **tx)
    .await?;
    if id.is_none() {
        sqlx::query(
            "UPDATE steps SET rearm = 1
             WHERE order_id = $1 AND kind = $2 AND payment_id = $3 AND status = 'running'",
        )
        .bind(order_id)
        .bind(kind.as_str())
        .bind(payment_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(id.map(|step_id| Wake { step_id, kind }))
}

/// Makes a step of the payment that is waiting on the provider ([`StepError::Waiting`]) due
/// now, when an event says what it waits for has happened. Returns the id to wake, if one
/// was waiting.
pub async fn hurry(
    tx: &mut Tx,
    order_id: &str,
    payment_id: &str,
    kind: StepKind,
) -> Result<Option<Wake>> {
    let now = now_ms();
    let id: Option<i64> = sqlx::query_scalar(
        "UPDATE steps SET next_run_at = $1, enqueued_at = $1, updated_at = $1
         WHERE order_id = $2 AND kind = $3 AND payment_id = $4 AND status = 'pending'
           AND last_error LIKE 'waiting:%'
         RETURNING id",
    )
    .bind(now)
    .bind(order_id)
    .bind(kind.as_str())
    .bind(payment_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(id.map(|step_id| Wake { step_id, kind }))
}

/// Marks the leased step done with `outcome`. False if the lease was lost: the caller must
/// roll back the effects it wrote in the same transaction.
pub async fn finish(tx: &mut Tx, lease: &Lease, outcome: &str) -> Result<bool> {
    Ok(!finish_many(tx, &[(lease, outcome)]).await?.is_empty())
}

/// [`finish`] for many leased steps in one statement; returns the ids of those finished
/// (a step missing from it had lost its lease).
pub async fn finish_many(tx: &mut Tx, done: &[(&Lease, &str)]) -> Result<Vec<i64>> {
    if done.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        // Armed again while it ran: due again at once, with a fresh budget (the sweeper
        // sends it). SET reads the row as it was, so `rearm` here is the old flag.
        "UPDATE steps SET status = CASE WHEN rearm = 1 THEN 'pending' ELSE 'done' END,
                          attempt_base = CASE WHEN rearm = 1 THEN attempts ELSE attempt_base END,
                          rearm = 0, next_run_at = $1, enqueued_at = NULL,
                          outcome = v.column3, last_error = NULL, lease_token = NULL,
                          lease_until = NULL, updated_at = $1
         FROM (VALUES {}) AS v
         WHERE steps.id = v.column1 AND steps.lease_token = v.column2 AND steps.status = 'running'
         RETURNING steps.id",
        super::value_rows(2, done.len(), 3, "")
    );
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .persistent(done.len() == 1)
        .bind(now_ms());
    for (lease, outcome) in done {
        q = q.bind(lease.step.id).bind(&lease.token).bind(*outcome);
    }
    // The successful run is the step row itself (worker, run_started_at, updated_at): no
    // history row on the hot path. `step_attempts` holds the runs that failed or were cut off.
    Ok(q.fetch_all(&mut **tx).await?)
}

/// [`Store::claim`] of many steps inside a transaction (a batch of writes), in one statement:
/// the leases of those claimed.
pub async fn claim_many(
    tx: &mut Tx,
    step_ids: &[i64],
    lease_ms: u64,
    worker: &str,
) -> Result<Vec<Lease>> {
    lease_many(tx, step_ids, "pending", now_ms(), lease_ms, worker).await
}

/// Leases each step that is in `from` (and due, for `pending`): a new lease token, one
/// more attempt. One statement for them all.
async fn lease_many(
    conn: &mut sqlx::AnyConnection,
    step_ids: &[i64],
    from: &str,
    now: i64,
    lease_ms: u64,
    worker: &str,
) -> Result<Vec<Lease>> {
    if step_ids.is_empty() {
        return Ok(Vec::new());
    }
    let cols = COLS
        .split(", ")
        .map(|c| format!("steps.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE steps SET status = 'running', attempts = attempts + 1, lease_token = v.column2,
                          lease_until = $1, enqueued_at = NULL, updated_at = $2,
                          run_started_at = $2, worker = $3
         FROM (VALUES {}) AS v
         WHERE steps.id = v.column1 AND steps.status = $4 AND steps.next_run_at <= $2
         RETURNING {cols}, steps.lease_token",
        super::value_rows(5, step_ids.len(), 2, "")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(step_ids.len() == 1)
        .bind(now + lease_ms as i64)
        .bind(now)
        .bind(worker)
        .bind(from);
    for id in step_ids {
        q = q.bind(*id).bind(new_id("lease"));
    }
    let rows = q.fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            Ok(Lease {
                step: StepRow::from_row(r)?,
                token: r.try_get("lease_token")?,
                started_at: now,
                chain: None,
            })
        })
        .collect()
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

/// A step that went dead stops its order for a human: it cannot finish on its own.
async fn stop_for_review(tx: &mut Tx, order_id: &str) -> Result<bool> {
    orders::transition(tx, order_id, &["paid", "refund_pending"], "needs_review").await
}

/// One run of a step, as its attempt history records it.
struct Ran<'a> {
    step_id: i64,
    worker: &'a str,
    attempt: i64,
    started_at: i64,
    ended_at: i64,
}

/// Appends one run to the step's attempt history.
async fn record_attempt(
    tx: &mut Tx,
    run: Ran<'_>,
    outcome: &str,
    error: Option<&str>,
    retry_at: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO step_attempts (step_id, attempt, worker, started_at, ended_at, outcome, error, retry_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (step_id, attempt) DO NOTHING",
    )
    .bind(run.step_id)
    .bind(run.attempt)
    .bind(run.worker)
    .bind(run.started_at)
    .bind(run.ended_at)
    .bind(outcome)
    .bind(error)
    .bind(retry_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks the order's not-yet-started steps of these kinds as skipped.
pub async fn skip(tx: &mut Tx, order_id: &str, kinds: &[StepKind], why: &str) -> Result<()> {
    for k in kinds {
        sqlx::query(
            "UPDATE steps SET status = 'skipped', outcome = $1, updated_at = $2
             WHERE order_id = $3 AND kind = $4 AND status IN ('waiting', 'pending')",
        )
        .bind(why)
        .bind(now_ms())
        .bind(order_id)
        .bind(k.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Moves the pipeline on after a step finished: the first pipeline step not yet done or
/// skipped becomes due if it was waiting (steps outside the pipeline never hold it up). When
/// nothing is left and the order is paid, the order is fulfilled. Returns the ids to wake
/// after commit.
pub async fn advance(tx: &mut Tx, order_id: &str) -> Result<Vec<Wake>> {
    Ok(advance_many(tx, &[(order_id, None)])
        .await?
        .swap_remove(0)
        .0)
}

/// [`advance`] for many orders at once, a handful of statements for them all; per entry, the
/// ids to wake and, where the entry has a [`Chain`] that goes into the next step's kind, that
/// step claimed at once (one update from waiting to running) instead of woken. An order named
/// twice moves on once: its wake-ups go to its first entry, its claim to its first entry with
/// a chain. Every chain of one call is the same process's (the claims use the first one's
/// lease time and worker name).
pub async fn advance_many(
    tx: &mut Tx,
    orders: &[(&str, Option<&Chain>)],
) -> Result<Vec<(Vec<Wake>, Option<Lease>)>> {
    let mut out: Vec<(Vec<Wake>, Option<Lease>)> =
        orders.iter().map(|_| Default::default()).collect();
    // Per distinct order: the entry that gets its wake-ups, and the one that may chain.
    let mut distinct: Vec<(&str, usize, Option<usize>)> = Vec::new();
    for (i, (order, chain)) in orders.iter().enumerate() {
        match distinct.iter_mut().find(|d| d.0 == *order) {
            Some(d) => {
                if d.2.is_none() && chain.is_some() {
                    d.2 = Some(i);
                }
            }
            None => distinct.push((order, i, chain.map(|_| i))),
        }
    }
    if distinct.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT order_id, id, status, kind FROM steps
         WHERE order_id IN ({}) AND status NOT IN ('done', 'skipped') AND position < $1
         ORDER BY order_id, position",
        super::placeholders(2, distinct.len())
    );
    let mut q = sqlx::query_as::<_, (String, i64, String, String)>(sqlx::AssertSqlSafe(sql))
        .persistent(distinct.len() == 1)
        .bind(StepKind::OUTSIDE_PIPELINE);
    for d in &distinct {
        q = q.bind(d.0);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    // Per next step: its id and the entry it goes to.
    let (mut claim, mut pend, mut fulfil) = (Vec::new(), Vec::new(), Vec::new());
    for (order, first, chainer) in &distinct {
        // The rows come in order of position within each order: the first is the next step.
        match rows.iter().find(|r| r.0 == *order) {
            Some((_, id, status, kind)) if status == "waiting" => {
                let chain = chainer.and_then(|i| orders[i].1.map(|c| (i, c)));
                match chain
                    .filter(|(_, c)| StepKind::parse(kind).is_some_and(|k| c.into.contains(&k)))
                {
                    Some((i, _)) => claim.push((*id, i)),
                    None => pend.push((*id, *first)),
                }
            }
            Some(_) => {}
            None => fulfil.push((*order, *first)),
        }
    }
    let now = now_ms();
    if let Some(c) = orders
        .iter()
        .find_map(|o| o.1)
        .filter(|_| !claim.is_empty())
    {
        let ids: Vec<i64> = claim.iter().map(|c| c.0).collect();
        for lease in lease_many(tx, &ids, "waiting", now, c.lease_ms, &c.worker).await? {
            if let Some((_, i)) = claim.iter().find(|(id, _)| *id == lease.step.id) {
                out[*i].1 = Some(lease);
            }
        }
    }
    if !pend.is_empty() {
        let sql = format!(
            "UPDATE steps SET status = 'pending', next_run_at = $1, enqueued_at = $1, updated_at = $1
             WHERE status = 'waiting' AND id IN ({}) RETURNING id, kind",
            super::placeholders(2, pend.len())
        );
        let mut q = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql))
            .persistent(pend.len() == 1)
            .bind(now);
        for (id, _) in &pend {
            q = q.bind(*id);
        }
        for (id, kind) in q.fetch_all(&mut **tx).await? {
            if let (Some((_, i)), Some(wake)) =
                (pend.iter().find(|p| p.0 == id), wake_of(id, &kind))
            {
                out[*i].0.push(wake);
            }
        }
    }
    if !fulfil.is_empty() {
        let sql = format!(
            "UPDATE orders SET status = 'fulfilled', updated_at = $1
             WHERE status = 'paid' AND id IN ({})
             RETURNING id, (SELECT MAX(s.created_at) FROM steps s
                            WHERE s.order_id = orders.id AND s.kind = 'confirm_capture')",
            super::placeholders(2, fulfil.len())
        );
        let mut q = sqlx::query_as::<_, (String, Option<i64>)>(sqlx::AssertSqlSafe(sql))
            .persistent(fulfil.len() == 1)
            .bind(now);
        for (order, _) in &fulfil {
            q = q.bind(*order);
        }
        let fulfilled = q.fetch_all(&mut **tx).await?;
        // For /metrics: the time from the pipeline's start (the confirmed payment).
        for began in fulfilled.iter().filter_map(|f| f.1) {
            tx.fulfils(began);
        }
        let fulfilled: Vec<(&str, usize)> = fulfil
            .into_iter()
            .filter(|(o, _)| fulfilled.iter().any(|f| f.0 == *o))
            .collect();
        // Partial refunds that arrived during fulfilment refer to the invoice now issued.
        // (Boxed: applying a refund can advance a pipeline in turn.)
        let ids: Vec<&str> = fulfilled.iter().map(|f| f.0).collect();
        super::merchant::emit_with(tx, "order.fulfilled", &ids, |_| serde_json::Value::Null)
            .await?;
        let wakes = Box::pin(super::refunds::apply_waiting_many(tx, &ids)).await?;
        for ((_, i), wake) in fulfilled.into_iter().zip(wakes) {
            out[i].0.extend(wake);
        }
    }
    Ok(out)
}

impl Store {
    /// Claims a due pending step for this worker. `None` when it is not due, already
    /// running elsewhere, or finished — every duplicate wake-up ends here, harmlessly.
    /// `worker` names this process (see `Engine::worker`), so the attempt history says which
    /// process ran each attempt.
    pub async fn claim(&self, step_id: i64, lease_ms: u64, worker: &str) -> Result<Option<Lease>> {
        let _writer = self.write_guard().await;
        let mut conn = self.pool.acquire().await?;
        let leases =
            lease_many(&mut conn, &[step_id], "pending", now_ms(), lease_ms, worker).await?;
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
            ("dead", now)
        } else if waiting {
            ("pending", now + jobs::WAITING_RETRY_MS)
        } else {
            let delay = policy.delay_ms(attempts, &mut rand::rng());
            ("pending", now + delay as i64)
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
            .bind(if poison { "dead" } else { "pending" })
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
    /// every one again (after the queue lost or dropped its wake-ups).
    pub async fn forget_enqueued(&self) -> Result<u64> {
        let _writer = self.write_guard().await;
        let r = sqlx::query(
            "UPDATE steps SET enqueued_at = NULL WHERE status = 'pending' AND enqueued_at IS NOT NULL",
        )
        .execute(&self.pool)
        .await?;
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
