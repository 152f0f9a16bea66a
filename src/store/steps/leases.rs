//! Leasing steps to workers: arming a step for its next attempt, hurrying it, claiming due
//! steps under a lease, and finishing them.

use super::*;

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
        crate::store::value_rows(2, done.len(), 3, "")
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
    lease_many(
        tx,
        step_ids,
        StepStatus::Pending,
        now_ms(),
        lease_ms,
        worker,
    )
    .await
}

/// Leases each step that is in `from` (and due, for `pending`): a new lease token, one
/// more attempt. One statement for them all.
pub(super) async fn lease_many(
    conn: &mut sqlx::AnyConnection,
    step_ids: &[i64],
    from: StepStatus,
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
        crate::store::value_rows(5, step_ids.len(), 2, "")
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
