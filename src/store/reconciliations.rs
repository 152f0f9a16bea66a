//! Reconciliation runs and their reports (what a run found is decided in
//! `background::reconciliation`; this keeps the record).

use serde::Serialize;

use super::{Result, Store, orders};
use crate::clock::now_ms;
use crate::domain::OrderStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub trigger: String,
    pub since_s: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// The report, as JSON text.
    pub report: Option<String>,
}

impl Store {
    /// Starts a run. A scheduled run names its `slot`: when another process took that slot
    /// already, `None` (it runs it).
    pub async fn reconciliation_start(
        &self,
        slot: Option<i64>,
        trigger: &str,
        since_s: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO reconciliations (slot, trigger, since_s, started_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (slot) DO NOTHING RETURNING id",
        )
        .bind(slot)
        .bind(trigger)
        .bind(since_s)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn reconciliation_finish(&self, id: i64, report: &str) -> Result<()> {
        let _writer = self.write_guard().await;
        sqlx::query("UPDATE reconciliations SET finished_at = $1, report = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(report)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn reconciliations(&self, limit: i64) -> Result<Vec<RunRow>> {
        Ok(sqlx::query_as::<_, RunRow>(
            "SELECT id, trigger, since_s, started_at, finished_at, report FROM reconciliations
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stops an order for a human: whatever it was doing (short of a refund settled), it now
    /// needs review. Returns whether it moved.
    pub async fn flag_for_review(&self, order_id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = orders::transition(
            &mut tx,
            order_id,
            &[
                OrderStatus::Created,
                OrderStatus::PendingPayment,
                OrderStatus::PaymentFailed,
                OrderStatus::Paid,
                OrderStatus::Fulfilled,
                OrderStatus::PartiallyRefunded,
            ],
            OrderStatus::NeedsReview,
        )
        .await?;
        tx.commit().await?;
        Ok(moved)
    }
}
