//! Moving a pipeline on: recording an attempt, skipping steps, stopping an order for
//! review, and arming the next step of each order whose step finished.

use super::*;

/// A step that went dead stops its order for a human: it cannot finish on its own.
pub(super) async fn stop_for_review(tx: &mut Tx, order_id: &str) -> Result<bool> {
    orders::transition(
        tx,
        order_id,
        &[OrderStatus::Paid, OrderStatus::RefundPending],
        OrderStatus::NeedsReview,
    )
    .await
}

/// One run of a step, as its attempt history records it.
pub(super) struct Ran<'a> {
    pub(super) step_id: i64,
    pub(super) worker: &'a str,
    pub(super) attempt: i64,
    pub(super) started_at: i64,
    pub(super) ended_at: i64,
}

/// Appends one run to the step's attempt history.
pub(super) async fn record_attempt(
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
        crate::store::placeholders(2, distinct.len())
    );
    let mut q = sqlx::query_as::<_, (String, i64, StepStatus, String)>(sqlx::AssertSqlSafe(sql))
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
            Some((_, id, StepStatus::Waiting, kind)) => {
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
        for lease in lease_many(tx, &ids, StepStatus::Waiting, now, c.lease_ms, &c.worker).await? {
            if let Some((_, i)) = claim.iter().find(|(id, _)| *id == lease.step.id) {
                out[*i].1 = Some(lease);
            }
        }
    }
    if !pend.is_empty() {
        let sql = format!(
            "UPDATE steps SET status = 'pending', next_run_at = $1, enqueued_at = $1, updated_at = $1
             WHERE status = 'waiting' AND id IN ({}) RETURNING id, kind",
            crate::store::placeholders(2, pend.len())
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
            crate::store::placeholders(2, fulfil.len())
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
        crate::store::merchant::emit_with(tx, "order.fulfilled", &ids, |_| serde_json::Value::Null)
            .await?;
        let wakes = Box::pin(crate::store::refunds::apply_waiting_many(tx, &ids)).await?;
        for ((_, i), wake) in fulfilled.into_iter().zip(wakes) {
            out[i].0.extend(wake);
        }
    }
    Ok(out)
}
