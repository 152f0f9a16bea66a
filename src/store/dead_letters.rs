//! Dead letters: steps that exhausted their retries, failed permanently, or kept killing
//! their worker. They wait here, with their last error and attempt history, for an admin
//! to retry them (the pipeline resumes where it stopped) or discard them with a reason.
//! Every such action is written to the audit log ([`super::audit`]): who, when, what, why.

use jobs::StepKind;
use serde::Serialize;

use super::audit::record as audit;
use super::{Result, Store, orders};
use crate::clock::now_ms;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadStep {
    pub id: i64,
    pub order_id: String,
    pub payment_id: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// When it went dead.
    pub dead_at: i64,
}

/// Which dead steps an action applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<StepKind>,
    /// Dead for at least this long.
    pub older_than_ms: Option<i64>,
    pub limit: i64,
}

/// One finished run of a step, for the order's timeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub step_id: i64,
    pub attempt: i64,
    pub worker: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub outcome: String,
    pub error: Option<String>,
    pub retry_at: Option<i64>,
}

/// What an admin retry did to one step.
#[derive(Debug, Clone, Serialize)]
pub struct Retried {
    pub step_id: i64,
    pub order_id: String,
    pub kind: String,
    /// The order left needs_review (nothing else of it is dead).
    pub order_resumed: bool,
}

impl Store {
    pub async fn dead_steps(&self, f: &Filter) -> Result<Vec<DeadStep>> {
        let before = now_ms() - f.older_than_ms.unwrap_or(0);
        Ok(sqlx::query_as::<_, DeadStep>(
            "SELECT id, order_id, payment_id, kind, attempts, last_error, updated_at AS dead_at
             FROM steps WHERE status = 'dead' AND ($1 = '' OR kind = $1) AND updated_at <= $2
             ORDER BY updated_at, id LIMIT $3",
        )
        .bind(f.kind.map_or("", |k| k.as_str()))
        .bind(before)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Puts a dead step back in line with a fresh retry budget, and its order back where it
    /// stood if nothing else of it is dead. `None`: no such dead step (already retried,
    /// discarded, or never dead).
    pub async fn retry_dead(
        &self,
        step_id: i64,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Option<Retried>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "UPDATE steps SET status = 'pending', attempt_base = attempts, lease_expiries = 0,
                              next_run_at = $1, enqueued_at = $1, updated_at = $1
             WHERE id = $2 AND status = 'dead' RETURNING order_id, kind",
        )
        .bind(now)
        .bind(step_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((order_id, kind)) = row else {
            return Ok(None);
        };
        let order_resumed = orders::resume_from_review(&mut tx, &order_id).await?;
        audit(&mut tx, actor, "step.retry", &step_id.to_string(), reason).await?;
        tx.commit().await?;
        Ok(Some(Retried {
            step_id,
            order_id,
            kind,
            order_resumed,
        }))
    }

    /// Gives up on a dead step for good. Its order stays where it is (needs_review, for a
    /// pipeline step): skipping a step such as the capture check must be a human's
    /// deliberate decision about the order, not a side effect of discarding.
    pub async fn discard_dead(&self, step_id: i64, actor: &str, reason: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "UPDATE steps SET status = 'discarded', outcome = $1, updated_at = $2
             WHERE id = $3 AND status = 'dead'",
        )
        .bind(format!("discarded by {actor}: {reason}"))
        .bind(now)
        .bind(step_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        audit(
            &mut tx,
            actor,
            "step.discard",
            &step_id.to_string(),
            Some(reason),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A step's attempt history, oldest first: the runs that failed or were cut off, then
    /// the one that succeeded (read from the step row itself).
    pub async fn step_attempts(&self, step_id: i64) -> Result<Vec<Attempt>> {
        let mut runs = sqlx::query_as::<_, Attempt>(
            "SELECT step_id, attempt, worker, started_at, ended_at, outcome, error, retry_at
             FROM step_attempts WHERE step_id = $1
             UNION ALL
             SELECT id, attempts, COALESCE(worker, ''), COALESCE(run_started_at, updated_at),
                    updated_at, 'done', NULL, NULL
             FROM steps WHERE id = $1 AND status = 'done' AND attempts > 0",
        )
        .bind(step_id)
        .fetch_all(&self.pool)
        .await?;
        runs.sort_by_key(|a| a.attempt);
        Ok(runs)
    }
}
