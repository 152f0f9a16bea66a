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
use crate::domain::event::{RefundNotice, RefundState};
use crate::domain::{html_escape, new_id, now_ms};

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
    pub status: String,
    pub restock: i64,
    pub last_error: Option<String>,
    pub applied_at: Option<i64>,
    pub created_at: i64,
}

const COLS: &str = "id, payment_id, order_id, provider, provider_refund_id, amount_minor, currency, \
                    reason, source, status, restock, last_error, applied_at, created_at";

/// Orders an admin may refund: fulfilled (wholly or partly refunded already), or stopped for
/// review with the money captured. Orders still being fulfilled are refused until done.
const REFUNDABLE: [&str; 3] = ["fulfilled", "partially_refunded", "needs_review"];

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
        status: String,
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

/// The sum of the payment's refunds in these states.
/// A refund's status in our store for where it stands at the provider.
fn status_of(state: RefundState) -> &'static str {
    match state {
        RefundState::Succeeded => "succeeded",
        RefundState::Pending => "pending",
        RefundState::Failed => "failed",
    }
}

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
                if row.status != "requested" {
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
        if status == "refunded" {
            return Ok(Requested::FullyRefunded);
        }
        if !REFUNDABLE.contains(&status.as_str()) {
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

/// A refund event: finds or creates our row for it and applies it when it can. Returns the
/// outcome to store with the event and the steps to wake.
pub async fn record_notice(
    tx: &mut Tx,
    p: &payments::PaymentRow,
    n: &RefundNotice,
    restock_default: bool,
) -> Result<(String, Vec<Wake>)> {
    // Refund notices of one order are taken one at a time, by the order row's lock, as the
    // admin's refund requests are: two racing ones (two intake processes on Postgres) cannot
    // both pass the check that refunds add up to no more than was paid.
    orders::lock_in(tx, &p.order_id).await?;
    match upsert_notice(tx, p, n, restock_default).await? {
        Ok(refund_id) => apply_ready(tx, &refund_id).await,
        Err(outcome) => Ok((outcome, Vec::new())),
    }
}

/// Records what a refund event says on our row for it — ours (the provider echoed our id),
/// one it told us about before, or a new one. Ok(id): a succeeded refund, to apply when
/// ready; Err: nothing to apply, and why.
async fn upsert_notice(
    tx: &mut Tx,
    p: &payments::PaymentRow,
    n: &RefundNotice,
    restock_default: bool,
) -> Result<std::result::Result<String, String>> {
    let mut row = match &n.refund_ref {
        Some(ours) => {
            sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {COLS} FROM refunds WHERE id = $1 AND payment_id = $2"
            )))
            .bind(ours)
            .bind(&p.id)
            .fetch_optional(&mut **tx)
            .await?
        }
        None => None,
    };
    if row.is_none() {
        row = sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM refunds WHERE provider = $1 AND provider_refund_id = $2"
        )))
        .bind(&p.provider)
        .bind(&n.provider_refund_id)
        .fetch_optional(&mut **tx)
        .await?;
    }
    if n.state != RefundState::Failed
        && let Some(why) = senseless(tx, p, n, row.is_none()).await?
    {
        tracing::error!(payment_id = %p.id, provider_refund_id = %n.provider_refund_id, "a signed refund event was parked: {why}");
        return Ok(Err(format!("parked for review: {why}")));
    }
    let now = now_ms();
    match row {
        Some(r) if n.state == RefundState::Failed => {
            let moved = sqlx::query(
                "UPDATE refunds SET status = 'failed', provider_refund_id = $1, updated_at = $2
                 WHERE id = $3 AND status <> 'failed'",
            )
            .bind(&n.provider_refund_id)
            .bind(now)
            .bind(&r.id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if moved == 0 {
                // Told twice (Stripe sends `refund.updated` and `refund.failed` for one).
                return Ok(Err(format!("refund {} had already failed", r.id)));
            }
            // The merchant's systems hear of it whoever asked for the refund (Stripe's
            // `refund.failed`, Razorpay's `refund.failed`): the buyer was not paid back.
            let told = serde_json::json!({ "refund": {
                "id": r.id, "amount_minor": r.amount_minor, "currency": r.currency,
                "reason": r.reason, "applied": r.applied_at.is_some(),
            }});
            super::merchant::emit(tx, "order.refund_failed", &[(&p.order_id, told)]).await?;
            if r.applied_at.is_some() || r.source == "engine" {
                // The money did not go back after all, but the credit note is issued; or a
                // refund the engine owed the buyer (a sold-out order) did not happen: a
                // person must decide (refund again, or reverse the credit note).
                orders::transition(
                    tx,
                    &p.order_id,
                    &[
                        "paid",
                        "fulfilled",
                        "partially_refunded",
                        "refunded",
                        "refund_pending",
                    ],
                    "needs_review",
                )
                .await?;
                return Ok(Err(format!(
                    "refund {} failed ({}); order needs review",
                    r.id,
                    if r.applied_at.is_some() {
                        "after it was applied"
                    } else {
                        "the buyer is still owed it"
                    }
                )));
            }
            tracing::error!(order_id = %p.order_id, refund_id = %r.id, "the provider failed a refund the admin asked for");
            Ok(Err(format!(
                "refund {} failed at the provider; nothing was booked",
                r.id
            )))
        }
        None if n.state == RefundState::Failed => {
            Ok(Err("ignored: a refund we never recorded failed".into()))
        }
        // Accepted, the money not moved yet: recorded, booked when it succeeds.
        Some(r) if n.state == RefundState::Pending => {
            sqlx::query(
                "UPDATE refunds SET status = 'pending', provider_refund_id = $1, updated_at = $2
                 WHERE id = $3 AND status IN ('requested', 'pending')",
            )
            .bind(&n.provider_refund_id)
            .bind(now)
            .bind(&r.id)
            .execute(&mut **tx)
            .await?;
            Ok(Err(format!(
                "refund {} pending at the provider: booked when it succeeds",
                r.id
            )))
        }
        Some(r) => {
            sqlx::query(
                "UPDATE refunds SET status = 'succeeded', provider_refund_id = $1, updated_at = $2
                 WHERE id = $3 AND status IN ('requested', 'pending', 'succeeded')",
            )
            .bind(&n.provider_refund_id)
            .bind(now)
            .bind(&r.id)
            .execute(&mut **tx)
            .await?;
            Ok(Ok(r.id))
        }
        None if n.state == RefundState::Pending => Ok(Err(
            "not booked: a refund made at the provider is pending; its settlement will say".into(),
        )),
        None => {
            let id = new_id("rfd");
            sqlx::query(
                "INSERT INTO refunds (id, payment_id, order_id, provider, provider_refund_id, amount_minor,
                                      currency, reason, source, status, restock, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'made at the provider', 'provider', 'succeeded', $8, $9, $9)",
            )
            .bind(&id)
            .bind(&p.id)
            .bind(&p.order_id)
            .bind(&p.provider)
            .bind(&n.provider_refund_id)
            .bind(n.amount_minor)
            .bind(&p.currency)
            .bind(i64::from(restock_default))
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(Ok(id))
        }
    }
}

/// Why a signed refund notice cannot be booked as it stands, if it cannot: an amount that
/// is not positive, another currency than the payment's, or (for a refund new to us)
/// refunds adding up to more than the payment. A provider that signs such a thing is
/// wrong or compromised; a person decides, and the events behind it go on.
async fn senseless(
    tx: &mut Tx,
    p: &payments::PaymentRow,
    n: &RefundNotice,
    new: bool,
) -> Result<Option<String>> {
    if let Some(why) = not_positive(n) {
        return Ok(Some(why));
    }
    if let Some(c) = &n.currency
        && !c.eq_ignore_ascii_case(&p.currency)
    {
        return Ok(Some(format!(
            "currency {c} is not the payment's {}",
            p.currency
        )));
    }
    if new {
        let total = total(tx, &p.id, false)
            .await?
            .saturating_add(n.amount_minor);
        if total > p.amount_minor {
            return Ok(Some(format!(
                "refunds would add up to {total} of a payment of {}",
                p.amount_minor
            )));
        }
    }
    Ok(None)
}

/// Why a notice's amount cannot be booked, if it cannot: zero or less.
fn not_positive(n: &RefundNotice) -> Option<String> {
    (n.amount_minor <= 0).then(|| format!("amount {} is not positive", n.amount_minor))
}

/// A refund event for a provider payment id no payment of ours carries yet (it overtook the
/// capture event): kept until that id is recorded (see [`adopt_unplaced`]).
pub async fn hold_unplaced(
    tx: &mut Tx,
    provider: &str,
    provider_payment_id: &str,
    n: &RefundNotice,
    restock_default: bool,
) -> Result<String> {
    match n.state {
        RefundState::Failed => return Ok("ignored: a refund we never recorded failed".into()),
        RefundState::Pending => {
            return Ok("not booked: the refund is pending; its settlement will say".into());
        }
        RefundState::Succeeded => {}
    }
    if let Some(why) = not_positive(n) {
        tracing::error!(provider, provider_refund_id = %n.provider_refund_id, "a signed refund event was parked: {why}");
        return Ok(format!("parked for review: {why}"));
    }
    sqlx::query(
        "INSERT INTO unplaced_refunds (provider, provider_refund_id, provider_payment_id, amount_minor,
                                       refund_ref, restock, received_at, currency)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (provider, provider_refund_id) DO NOTHING",
    )
    .bind(provider)
    .bind(&n.provider_refund_id)
    .bind(provider_payment_id)
    .bind(n.amount_minor)
    .bind(&n.refund_ref)
    .bind(i64::from(restock_default))
    .bind(now_ms())
    .bind(&n.currency)
    .execute(&mut **tx)
    .await?;
    Ok(format!(
        "refund of {provider_payment_id}, not known yet: kept until its capture arrives"
    ))
}

/// How many refunds wait for payment `$P` of order `$O` to be known or captured: refund
/// events kept before its provider id was known, and refunds not yet applied. SQL to embed,
/// with the two placeholders named by the caller.
pub fn waiting_sql(p: &str, o: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM unplaced_refunds u JOIN payments p
            ON p.provider = u.provider AND p.provider_payment_id = u.provider_payment_id
          WHERE p.id = {p})
       + (SELECT COUNT(*) FROM refunds
          WHERE order_id = {o} AND status = 'succeeded' AND applied_at IS NULL)"
    )
}

/// After a payment's provider id was recorded or it was captured: places the refund events
/// that came before (see [`hold_unplaced`]) and applies the refunds that waited for the
/// capture. One cheap query when there are none, which is nearly always.
pub async fn catch_up(tx: &mut Tx, payment_id: &str, order_id: &str) -> Result<Vec<Wake>> {
    let pending: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {}",
        waiting_sql("$1", "$2")
    )))
    .bind(payment_id)
    .bind(order_id)
    .fetch_one(&mut **tx)
    .await?;
    if pending == 0 {
        return Ok(Vec::new());
    }
    place_and_apply(tx, payment_id, order_id).await
}

/// The work of [`catch_up`] once refunds are known to wait.
pub async fn place_and_apply(tx: &mut Tx, payment_id: &str, order_id: &str) -> Result<Vec<Wake>> {
    if let Some(p) = payments::by_id(&mut **tx, payment_id).await? {
        adopt_unplaced(tx, &p).await?;
    }
    apply_waiting(tx, order_id).await
}

/// Turns the kept refund events of a payment whose provider id was just recorded into
/// refund rows. They are applied by [`apply_waiting`] once the payment is captured.
async fn adopt_unplaced(tx: &mut Tx, p: &payments::PaymentRow) -> Result<()> {
    let Some(ppid) = &p.provider_payment_id else {
        return Ok(());
    };
    /// A refund event kept before its payment was known.
    #[derive(sqlx::FromRow)]
    struct Kept {
        provider_refund_id: String,
        amount_minor: i64,
        refund_ref: Option<String>,
        restock: i64,
        currency: Option<String>,
    }
    let kept: Vec<Kept> = sqlx::query_as(
        "SELECT provider_refund_id, amount_minor, refund_ref, restock, currency FROM unplaced_refunds
         WHERE provider = $1 AND provider_payment_id = $2 ORDER BY received_at",
    )
    .bind(&p.provider)
    .bind(ppid)
    .fetch_all(&mut **tx)
    .await?;
    for k in kept {
        let n = RefundNotice {
            provider_refund_id: k.provider_refund_id,
            amount_minor: k.amount_minor,
            currency: k.currency,
            refund_ref: k.refund_ref,
            state: RefundState::Succeeded,
        };
        let _ = upsert_notice(tx, p, &n, k.restock == 1).await?;
        sqlx::query("DELETE FROM unplaced_refunds WHERE provider = $1 AND provider_refund_id = $2")
            .bind(&p.provider)
            .bind(&n.provider_refund_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Applies every succeeded refund of the order's payments that waited (for the capture, or
/// for the fulfilment to finish). Returns the steps to wake.
pub async fn apply_waiting(tx: &mut Tx, order_id: &str) -> Result<Vec<Wake>> {
    Ok(apply_waiting_many(tx, &[order_id]).await?.concat())
}

/// [`apply_waiting`] for many orders, with one query to find what waits; per order, the
/// steps to wake.
pub async fn apply_waiting_many(tx: &mut Tx, order_ids: &[&str]) -> Result<Vec<Vec<Wake>>> {
    let mut wake = vec![Vec::new(); order_ids.len()];
    if order_ids.is_empty() {
        return Ok(wake);
    }
    let sql = format!(
        "SELECT order_id, id FROM refunds
         WHERE order_id IN ({}) AND status = 'succeeded' AND applied_at IS NULL
         ORDER BY created_at, id",
        super::placeholders(1, order_ids.len())
    );
    let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
        .persistent(order_ids.len() == 1);
    for o in order_ids {
        q = q.bind(*o);
    }
    for (order, id) in q.fetch_all(&mut **tx).await? {
        if let Some(i) = order_ids.iter().position(|o| *o == order) {
            wake[i].extend(apply_ready(tx, &id).await?.1);
        }
    }
    Ok(wake)
}

/// Applies a succeeded refund's effects, once, if the time has come: the payment is
/// captured, and either the order is done being fulfilled or this refund returns all of the
/// money. Otherwise it waits (see [`apply_waiting`]).
pub async fn apply_ready(tx: &mut Tx, refund_id: &str) -> Result<(String, Vec<Wake>)> {
    let Some(r) = by_id(tx, refund_id).await? else {
        return Ok(("no such refund".into(), Vec::new()));
    };
    if r.status != "succeeded" || r.applied_at.is_some() {
        return Ok((format!("refund {} is {}", r.id, r.status), Vec::new()));
    }
    let p = payments::by_id(&mut **tx, &r.payment_id)
        .await?
        .ok_or_else(|| super::StoreError::Other("payment vanished".into()))?;
    if !matches!(p.status.as_str(), "paid" | "refunded") {
        return Ok((
            format!(
                "refund {} recorded; applied once the payment is captured",
                r.id
            ),
            Vec::new(),
        ));
    }
    // A payment other than the one the order was fulfilled with (a second capture): its
    // refund gives that money back and touches nothing of the order's.
    let fulfilled_with: Option<String> = sqlx::query_scalar(
        "SELECT s.payment_id FROM steps s JOIN payments p ON p.id = s.payment_id
         WHERE s.order_id = $1 AND s.kind = $2 AND p.status IN ('paid', 'refunded')
         ORDER BY s.id LIMIT 1",
    )
    .bind(&r.order_id)
    .bind(StepKind::ConfirmCapture.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if fulfilled_with.as_deref().is_some_and(|f| f != r.payment_id) {
        sqlx::query("UPDATE refunds SET applied_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&r.id)
            .execute(&mut **tx)
            .await?;
        if total(tx, &p.id, true).await? >= p.amount_minor {
            payments::transition(tx, &p.id, &["paid"], "refunded").await?;
        }
        let wake = steps::arm(tx, &r.order_id, &p.id, StepKind::NotifyRefund).await?;
        return Ok((
            format!("refund {} of an extra payment applied", r.id),
            wake.into_iter().collect(),
        ));
    }
    let order = orders::get_in(tx, &r.order_id)
        .await?
        .ok_or_else(|| super::StoreError::Other("order vanished".into()))?;
    let refunded_after = total(tx, &p.id, true).await? + r.amount_minor;
    let full = refunded_after >= p.amount_minor;
    let in_flight = order.status == "paid";
    if in_flight && !full {
        return Ok((
            format!(
                "refund {} recorded; applied once the order is fulfilled",
                r.id
            ),
            Vec::new(),
        ));
    }
    let now = now_ms();
    sqlx::query(
        "UPDATE refunds SET applied_at = $1, updated_at = $1 WHERE id = $2 AND applied_at IS NULL",
    )
    .bind(now)
    .bind(&r.id)
    .execute(&mut **tx)
    .await?;
    let credit_note = issue_credit_note(tx, &r).await?;
    let mut wake = Vec::new();
    if full {
        payments::transition(tx, &p.id, &["paid"], "refunded").await?;
        let from = [
            "paid",
            "fulfilled",
            "partially_refunded",
            "needs_review",
            "refund_pending",
        ];
        orders::transition(tx, &r.order_id, &from, "refunded").await?;
        sqlx::query(
            "UPDATE entitlements SET revoked_at = $1 WHERE order_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&r.order_id)
        .execute(&mut **tx)
        .await?;
        if in_flight {
            // Refunded while being fulfilled: stop, give the held stock back, and let the
            // buyer's email be the refund notice.
            let stop = [
                StepKind::ConfirmCapture,
                StepKind::DeductStock,
                StepKind::IssueInvoice,
                StepKind::GrantEntitlement,
            ];
            steps::skip(tx, &r.order_id, &stop, "order refunded").await?;
            payments::release_reservations(tx, &r.order_id).await?;
            wake = steps::advance(tx, &r.order_id).await?;
        }
        let restock: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(restock), 0) FROM refunds WHERE payment_id = $1 AND applied_at IS NOT NULL",
        )
        .bind(&p.id)
        .fetch_one(&mut **tx)
        .await?;
        if restock == 1 {
            return_stock(tx, &r.order_id).await?;
        }
    } else {
        orders::transition(
            tx,
            &r.order_id,
            &["fulfilled", "needs_review"],
            "partially_refunded",
        )
        .await?;
    }
    if !in_flight && order.status != "refund_pending" {
        // The buyer had a receipt: tell them of this refund (a refund of an order not yet
        // fulfilled is told by its refund notice instead).
        let armed = steps::arm(tx, &r.order_id, &p.id, StepKind::NotifyRefund).await?;
        wake.extend(armed);
    }
    // After the order's status moved: the payload shows where it stands now.
    let refund = serde_json::json!({ "refund": {
        "id": r.id, "amount_minor": r.amount_minor, "currency": r.currency, "reason": r.reason,
        "full": full, "credit_note_number": credit_note,
    }});
    super::merchant::emit(tx, "order.refunded", &[(&r.order_id, refund)]).await?;
    let what = if full {
        "refunded in full"
    } else {
        "partially refunded"
    };
    let outcome = match credit_note {
        Some(cn) => format!("{what}: refund {} applied, credit note {cn}", r.id),
        None => format!("{what}: refund {} applied", r.id),
    };
    Ok((outcome, wake))
}

/// Puts the stock an order consumed back on hand, once.
async fn return_stock(tx: &mut Tx, order_id: &str) -> Result<()> {
    let consumed: Vec<(String, i64)> = sqlx::query_as(
        // In SKU order, as every writer of SKU rows locks them (see `begin_checkout`).
        "SELECT sku, qty FROM stock_reservations WHERE order_id = $1 AND status = 'consumed'
         ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?;
    for (sku, qty) in consumed {
        catalogue::restock(tx, &sku, qty).await?;
    }
    sqlx::query(
        "UPDATE stock_reservations SET status = 'returned', updated_at = $1 WHERE order_id = $2 AND status = 'consumed'",
    )
    .bind(now_ms())
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A credit note for an invoiced order's refund: the next number of the invoice series'
/// credit-note series (`INV` → `INV-CN-000001`), the refund's share of the tax, and ledger
/// rows that mirror the sale's. None when the order has no invoice (it sold out first).
async fn issue_credit_note(tx: &mut Tx, r: &RefundRow) -> Result<Option<String>> {
    let invoice: Option<(String, String, String, i64, String, String)> = sqlx::query_as(
        "SELECT id, series, invoice_number, tax_rate_bps, tax_name, currency FROM invoices WHERE order_id = $1",
    )
    .bind(&r.order_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((invoice_id, series, invoice_number, rate_bps, tax_name, currency)) = invoice else {
        return Ok(None);
    };
    let tax = inclusive_tax(r.amount_minor, u32::try_from(rate_bps).unwrap_or(0));
    let cn_id = new_id("cn");
    let now = now_ms();
    for line in sale_lines(r.amount_minor, tax) {
        // The sale's lines with debit and credit swapped.
        sqlx::query(
            "INSERT INTO ledger_entries (order_id, reference, account, debit_minor, credit_minor, currency, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.order_id)
        .bind(&cn_id)
        .bind(line.account)
        .bind(line.credit_minor)
        .bind(line.debit_minor)
        .bind(&currency)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let cn_series = format!("{series}-CN");
    let n: i64 = sqlx::query_scalar(
        "INSERT INTO invoice_counters (series, last_number) VALUES ($1, 1)
         ON CONFLICT (series) DO UPDATE SET last_number = invoice_counters.last_number + 1
         RETURNING last_number",
    )
    .bind(&cn_series)
    .fetch_one(&mut **tx)
    .await?;
    let cn_number = number(&cn_series, n);
    let c = crate::domain::Currency::parse("currency", &currency)
        .map_err(|e| super::StoreError::Other(e.to_string()))?;
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Credit note {n}</title></head><body>\
         <h1>Credit note {n}</h1><p>Refers to invoice {inv}<br>Order {o}<br>Reason: {why}</p>\
         <p>Refunded: {total}<br>of which {tax_name} {rate}%: {tax}</p></body></html>",
        n = html_escape(&cn_number),
        inv = html_escape(&invoice_number),
        o = html_escape(&r.order_id),
        why = html_escape(&r.reason),
        total = c.format(r.amount_minor),
        tax_name = html_escape(&tax_name),
        rate = rate_bps as f64 / 100.0,
        tax = c.format(tax),
    );
    sqlx::query(
        "INSERT INTO credit_notes (id, series, number, credit_note_number, order_id, refund_id, invoice_id,
                                   currency, total_minor, tax_minor, html, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&cn_id)
    .bind(&cn_series)
    .bind(n)
    .bind(&cn_number)
    .bind(&r.order_id)
    .bind(&r.id)
    .bind(&invoice_id)
    .bind(&currency)
    .bind(r.amount_minor)
    .bind(tax)
    .bind(html)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(Some(cn_number))
}
