//! Refunds: several per payment (partial refunds), from three sources — an admin's request
//! (`POST /api/payments/refund`), the engine (an order that sold out), or the provider (a
//! refund made on its dashboard, or a dispute reversal), which only an event tells us about.
//!
//! A refund row is `requested` before the provider is called (so a crash between the call
//! and its answer leaves a trace, and the same `Idempotency-Key` resumes it), then
//! `succeeded` or `failed`. A succeeded refund's effects are applied exactly once, in one
//! transaction, when `applied_at` is set (see [`apply_ready`]): a credit note and reversing
//! ledger rows if the order was invoiced; the order `partially_refunded` or `refunded`; and
//! on a full refund the entitlements revoked, the unfinished pipeline stopped (the buyer is
//! sent a refund notice instead of a receipt), and the stock returned if asked for.
//!
//! A refund event can overtake the capture event. Its row is stored at once and applied when
//! the payment is captured; a partial refund of an order still being fulfilled waits until
//! the order is fulfilled, so that its credit note refers to the invoice.

use jobs::issue_invoice::{inclusive_tax, number, sale_lines};
use jobs::{StepKind, Wake};
use serde::Serialize;

use super::{Result, Store, Tx, catalogue, orders, payments, steps};
use crate::clock::now_ms;
use crate::domain::event::{RefundNotice, RefundState};
use crate::domain::{OrderStatus, PaymentStatus, RefundStatus, new_id};
use crate::text::html_escape;

mod apply;
mod notices;

pub use apply::*;
pub use notices::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RefundRow {
    pub id: String,
    pub payment_id: String,
    pub order_id: String,
    pub provider: String,
    pub provider_refund_id: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: String,
    pub source: String,
    pub status: RefundStatus,
    pub restock: i64,
    pub last_error: Option<String>,
    pub applied_at: Option<i64>,
    pub created_at: i64,
}

const COLS: &str = "id, payment_id, order_id, provider, provider_refund_id, amount_minor, currency, \
                    reason, source, status, restock, last_error, applied_at, created_at";

/// Orders an admin may refund: fulfilled (wholly or partly refunded already), or stopped for
/// review with the money captured. Orders still being fulfilled are refused until done.
const REFUNDABLE: [OrderStatus; 3] = [
    OrderStatus::Fulfilled,
    OrderStatus::PartiallyRefunded,
    OrderStatus::NeedsReview,
];

/// An admin's refund request.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    pub order_id: &'a str,
    /// None: whatever is left to refund.
    pub amount_minor: Option<i64>,
    pub reason: &'a str,
    pub restock: bool,
    pub idempotency_key: Option<&'a str>,
    /// Who asks (kept in the audit log).
    pub actor: &'a str,
}

/// What [`Store::request_refund`] found.
#[derive(Debug)]
pub enum Requested {
    /// Call the provider for this refund (new, or left `requested` by an earlier attempt
    /// with the same idempotency key).
    Call(RefundRow, payments::PaymentRow),
    /// The same idempotency key already has an answer.
    Done(RefundRow),
    /// The idempotency key was used for a different request.
    KeyReused,
    OrderNotFound,
    NotRefundable {
        status: OrderStatus,
    },
    /// Nothing is left to refund.
    FullyRefunded,
    TooMuch {
        refundable: i64,
    },
}

async fn by_id(tx: &mut Tx, id: &str) -> Result<Option<RefundRow>> {
    Ok(sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM refunds WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// A refund's status in our store for where it stands at the provider.
fn status_of(state: RefundState) -> RefundStatus {
    match state {
        RefundState::Succeeded => RefundStatus::Succeeded,
        RefundState::Pending => RefundStatus::Pending,
        RefundState::Failed => RefundStatus::Failed,
    }
}

/// The sum of the payment's refunds (those applied, or all but failed ones).
async fn total(tx: &mut Tx, payment_id: &str, applied_only: bool) -> Result<i64> {
    let sql = if applied_only {
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM refunds WHERE payment_id = $1 AND applied_at IS NOT NULL"
    } else {
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM refunds WHERE payment_id = $1 AND status IN ('requested', 'pending', 'succeeded')"
    };
    let sum: i64 = sqlx::query_scalar(sql)
        .bind(payment_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(sum)
}

impl Store {
    /// Validates an admin's refund and records it as `requested`, in one transaction; the
    /// caller then asks the provider. Concurrent requests for one order are serialized by
    /// the order row's lock, so two of them cannot both refund the last of the money.
    pub async fn request_refund(&self, r: &NewRefund<'_>) -> Result<Requested> {
        let fingerprint = format!(
            "{}|{:?}|{}|{}",
            r.order_id, r.amount_minor, r.reason, r.restock
        );
        let mut tx = self.begin().await?;
        let locked = orders::lock_in(&mut tx, r.order_id)
            .await?
            .map(|o| o.status);
        if let Some(key) = r.idempotency_key {
            let seen: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT id, request_fingerprint FROM refunds WHERE idempotency_key = $1",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((id, fp)) = seen {
                if fp.as_deref() != Some(fingerprint.as_str()) {
                    return Ok(Requested::KeyReused);
                }
                let row = get(&mut tx, &id).await?;
                if row.status != RefundStatus::Requested {
                    return Ok(Requested::Done(row));
                }
                let p = payments::by_id(&mut *tx, &row.payment_id)
                    .await?
                    .ok_or_else(|| super::StoreError::Other("payment vanished".into()))?;
                tx.commit().await?;
                return Ok(Requested::Call(row, p));
            }
        }
        let Some(status) = locked else {
            return Ok(Requested::OrderNotFound);
        };
        if status == OrderStatus::Refunded {
            return Ok(Requested::FullyRefunded);
        }
        if !REFUNDABLE.contains(&status) {
            return Ok(Requested::NotRefundable { status });
        }
        let p = payments::captured_for_order(&mut tx, r.order_id).await?;
        let Some(p) = p else {
            return Ok(Requested::NotRefundable { status });
        };
        let refundable = p.amount_minor - total(&mut tx, &p.id, false).await?;
        if refundable <= 0 {
            return Ok(Requested::FullyRefunded);
        }
        let amount = r.amount_minor.unwrap_or(refundable);
        if amount > refundable {
            return Ok(Requested::TooMuch { refundable });
        }
        let id = new_id("rfd");
        let now = now_ms();
        sqlx::query(
            "INSERT INTO refunds (id, payment_id, order_id, provider, amount_minor, currency, reason,
                                  source, status, restock, idempotency_key, request_fingerprint,
                                  created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'admin', 'requested', $8, $9, $10, $11, $11)",
        )
        .bind(&id)
        .bind(&p.id)
        .bind(r.order_id)
        .bind(&p.provider)
        .bind(amount)
        .bind(&p.currency)
        .bind(r.reason)
        .bind(i64::from(r.restock))
        .bind(r.idempotency_key)
        .bind(&fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = get(&mut tx, &id).await?;
        let what = format!("{} {} ({}): {}", amount, p.currency, id, r.reason);
        super::audit::record(&mut tx, r.actor, "order.refund", r.order_id, Some(&what)).await?;
        tx.commit().await?;
        Ok(Requested::Call(row, p))
    }

    /// Records the engine's own refund of a whole payment (the order sold out, or a second
    /// capture) as `requested`, before the provider is called, under a fixed id: a retried
    /// step finds it (as it is now), and the provider's refund event (which may arrive
    /// before the call returns) finds it by the id the provider echoes.
    pub async fn request_engine_refund(
        &self,
        p: &payments::PaymentRow,
        refund_id: &str,
        reason: &str,
    ) -> Result<RefundRow> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO refunds (id, payment_id, order_id, provider, amount_minor, currency, reason,
                                  source, status, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'engine', 'requested', $8, $8)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(refund_id)
        .bind(&p.id)
        .bind(&p.order_id)
        .bind(&p.provider)
        .bind(p.amount_minor)
        .bind(&p.currency)
        .bind(reason)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let row = get(&mut tx, refund_id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The provider answered a refund call: record its id and status and, if it succeeded,
    /// apply it; a `pending` one waits for the provider's event to say how it ended. (Its
    /// event may have done all that already; then nothing changes here.) Returns the refund
    /// and the steps to wake.
    pub async fn refund_answered(
        &self,
        refund_id: &str,
        provider_refund_id: &str,
        state: RefundState,
    ) -> Result<(RefundRow, Vec<Wake>)> {
        let mut tx = self.begin().await?;
        // The order row first, as a refund notice takes it (`record_notice`): the two lock in
        // one order, so an answer and its own event racing cannot deadlock.
        let order_id: Option<String> =
            sqlx::query_scalar("SELECT order_id FROM refunds WHERE id = $1")
                .bind(refund_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(order_id) = order_id {
            orders::lock_in(&mut tx, &order_id).await?;
        }
        let status = status_of(state);
        sqlx::query(
            "UPDATE refunds SET provider_refund_id = $1, status = $2, updated_at = $3
             WHERE id = $4 AND (status = 'requested' OR (status = 'pending' AND $2 <> 'pending'))",
        )
        .bind(provider_refund_id)
        .bind(status)
        .bind(now_ms())
        .bind(refund_id)
        .execute(&mut *tx)
        .await?;
        let (_, wake) = apply_ready(&mut tx, refund_id).await?;
        let row = get(&mut tx, refund_id).await?;
        tx.commit().await?;
        Ok((row, wake))
    }

    /// The provider call failed. A permanent failure ends the refund; a transient one
    /// leaves it `requested`, to be resumed with the same idempotency key.
    pub async fn refund_call_failed(
        &self,
        refund_id: &str,
        error: &str,
        permanent: bool,
    ) -> Result<RefundRow> {
        let mut tx = self.begin().await?;
        // The error is kept even when the refund's event settled it meanwhile: it says the
        // provider's answer was lost.
        sqlx::query(
            "UPDATE refunds SET last_error = $1, updated_at = $2,
                    status = CASE WHEN $3 = 1 AND status = 'requested' THEN 'failed' ELSE status END
             WHERE id = $4",
        )
        .bind(error)
        .bind(now_ms())
        .bind(i64::from(permanent))
        .bind(refund_id)
        .execute(&mut *tx)
        .await?;
        let row = get(&mut tx, refund_id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Refunds the provider accepted as pending and has said nothing more of since
    /// `before_ms` (its event may be lost), with their payments, oldest first.
    pub async fn pending_refunds(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<(RefundRow, payments::PaymentRow)>> {
        let rows = sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM refunds WHERE status = 'pending' AND provider_refund_id IS NOT NULL
             AND updated_at < $1 ORDER BY updated_at LIMIT $2"
        )))
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(p) = payments::by_id(&self.pool, &r.payment_id).await? {
                out.push((r, p));
            }
        }
        Ok(out)
    }

    /// What the provider's API says of a pending refund, applied as its event would be
    /// (booked when it succeeded, failed otherwise); one still pending is looked at again
    /// after the next interval. Returns the outcome and the steps to wake.
    pub async fn pending_refund_read(
        &self,
        r: &RefundRow,
        p: &payments::PaymentRow,
        state: RefundState,
        restock_default: bool,
    ) -> Result<(String, Vec<Wake>)> {
        let mut tx = self.begin().await?;
        let out = if state == RefundState::Pending {
            sqlx::query("UPDATE refunds SET updated_at = $1 WHERE id = $2 AND status = 'pending'")
                .bind(now_ms())
                .bind(&r.id)
                .execute(&mut *tx)
                .await?;
            (format!("refund {} still pending", r.id), Vec::new())
        } else {
            let notice = RefundNotice {
                provider_refund_id: r.provider_refund_id.clone().unwrap_or_default(),
                amount_minor: r.amount_minor,
                currency: Some(r.currency.clone()),
                refund_ref: Some(r.id.clone()),
                state,
            };
            record_notice(&mut tx, p, &notice, restock_default).await?
        };
        tx.commit().await?;
        Ok(out)
    }

    /// Admin refunds still `requested` whose last attempt is older than `before_ms` (the
    /// provider did not answer), with their payments, oldest first.
    pub async fn stalled_refunds(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<(RefundRow, payments::PaymentRow)>> {
        let rows = sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM refunds WHERE status = 'requested' AND source = 'admin'
             AND updated_at < $1 ORDER BY updated_at LIMIT $2"
        )))
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(p) = payments::by_id(&self.pool, &r.payment_id).await? {
                out.push((r, p));
            }
        }
        Ok(out)
    }

    /// The order's refunds, oldest first, with their credit note numbers.
    pub async fn order_refunds(&self, order_id: &str) -> Result<Vec<(RefundRow, Option<String>)>> {
        let rows = sqlx::query_as::<_, RefundView>(sqlx::AssertSqlSafe(format!(
            "{} WHERE r.order_id = $1 ORDER BY r.created_at, r.id",
            view_select()
        )))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|v| (v.refund, v.credit_note_number))
            .collect())
    }

    /// One refund with its credit note number.
    pub async fn refund_with_credit_note(
        &self,
        refund_id: &str,
    ) -> Result<(RefundRow, Option<String>)> {
        let v = sqlx::query_as::<_, RefundView>(sqlx::AssertSqlSafe(format!(
            "{} WHERE r.id = $1",
            view_select()
        )))
        .bind(refund_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((v.refund, v.credit_note_number))
    }
}

/// A refund with its credit note number, read in one query.
#[derive(sqlx::FromRow)]
struct RefundView {
    #[sqlx(flatten)]
    refund: RefundRow,
    credit_note_number: Option<String>,
}

fn view_select() -> String {
    let cols: Vec<String> = COLS.split(',').map(|c| format!("r.{}", c.trim())).collect();
    format!(
        "SELECT {}, c.credit_note_number FROM refunds r LEFT JOIN credit_notes c ON c.refund_id = r.id",
        cols.join(", ")
    )
}

/// A refund row that must exist (this transaction wrote or found it).
async fn get(tx: &mut Tx, id: &str) -> Result<RefundRow> {
    by_id(tx, id)
        .await?
        .ok_or_else(|| super::StoreError::Other(format!("refund {id} vanished")))
}
