//! A payment's rows as its state machine (`core::payments`) moves them: the payment an
//! event is about, its status moves (one, or many paid in one statement) and the provider's
//! id for it.

use super::*;
use crate::store::moves_from;

/// Where a payment may still be paid from.
const OPEN: [PaymentStatus; 3] = [
    PaymentStatus::Creating,
    PaymentStatus::Created,
    PaymentStatus::Pending,
];

/// The payment an event is about: by the provider's id for it, or — when the event overtook
/// the commit that recorded that id (a buyer paying within milliseconds of checkout
/// creation) — by our own id echoed back in the event, if it names one of this provider's
/// payments still being created. Then the provider's id is recorded here.
pub async fn find_for_event(
    tx: &mut Tx,
    provider: &str,
    provider_order_id: &str,
    payment_ref: Option<&str>,
) -> Result<Option<PaymentRow>> {
    let found = by_provider_order(&mut **tx, provider, provider_order_id).await?;
    if found.is_some() {
        return Ok(found);
    }
    let Some(our_id) = payment_ref else {
        return Ok(None);
    };
    Ok(sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE payments SET provider_order_id = $1, updated_at = $2
         WHERE id = $3 AND provider = $4 AND status = 'creating'
         RETURNING {COLS}"
    )))
    .bind(provider_order_id)
    .bind(now_ms())
    .bind(our_id)
    .bind(provider)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Moves an open payment to paid and records the provider's id for it (when given), in one
/// statement: the hot path. Returns whether it moved.
pub async fn mark_paid(tx: &mut Tx, id: &str, provider_payment_id: Option<&str>) -> Result<bool> {
    let open = moves_from(&OPEN, PaymentStatus::Paid, &format!("payment {id}"))?;
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE payments SET status = 'paid', updated_at = $1,
                provider_payment_id = COALESCE($2, provider_payment_id)
         WHERE id = $3 AND status IN ({open})"
    )))
    .bind(now_ms())
    .bind(provider_payment_id)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// The payment's status as of now, in `tx`.
pub async fn status_of(tx: &mut Tx, id: &str) -> Result<PaymentStatus> {
    Ok(
        sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

/// The Paid hot path of a whole batch of events in one statement: each open payment named by
/// `(provider, provider order id, provider payment id)` moves to paid. Returns the payments
/// that moved; the caller gives every other event the full path (`core::payments::apply`).
pub async fn mark_paid_many(
    tx: &mut Tx,
    named: &[(&str, &str, Option<&str>)],
) -> Result<Vec<PaymentRow>> {
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let values = crate::store::value_rows(2, named.len(), 3, "");
    let open = moves_from(&OPEN, PaymentStatus::Paid, "payments")?;
    let mut q = sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE payments SET status = 'paid', updated_at = $1,
                provider_payment_id = COALESCE(v.column3, payments.provider_payment_id)
         FROM (VALUES {values}) AS v
         WHERE payments.provider = v.column1 AND payments.provider_order_id = v.column2
           AND payments.status IN ({open})
         RETURNING {COLS}"
    )))
    .persistent(false)
    .bind(now_ms());
    for (provider, poid, ppid) in named {
        q = q.bind(*provider).bind(*poid).bind(*ppid);
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

/// Moves the payment to `to` if it is in one of `from`; returns whether it moved.
pub async fn transition(
    tx: &mut Tx,
    id: &str,
    from: &[PaymentStatus],
    to: PaymentStatus,
) -> Result<bool> {
    crate::store::transition(tx, "payments", id, from, to).await
}

/// Records the provider's id for the payment. Refund events that came before it was known
/// are placed by `refunds::catch_up`, which callers run after.
pub async fn set_provider_payment_id(
    tx: &mut Tx,
    id: &str,
    provider_payment_id: &str,
) -> Result<()> {
    sqlx::query("UPDATE payments SET provider_payment_id = $1 WHERE id = $2")
        .bind(provider_payment_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
