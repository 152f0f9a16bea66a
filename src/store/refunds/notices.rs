//! What a provider says about a refund: booked on our row for it (ours echoed, one told
//! before, or new), refused when it makes no sense, or kept until the payment it names is
//! known.

use super::*;

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
pub(super) async fn upsert_notice(
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
            crate::store::merchant::emit(tx, "order.refund_failed", &[(&p.order_id, told)]).await?;
            if r.applied_at.is_some() || r.source == "engine" {
                // The money did not go back after all, but the credit note is issued; or a
                // refund the engine owed the buyer (a sold-out order) did not happen: a
                // person must decide (refund again, or reverse the credit note).
                orders::transition(
                    tx,
                    &p.order_id,
                    &[
                        OrderStatus::Paid,
                        OrderStatus::Fulfilled,
                        OrderStatus::PartiallyRefunded,
                        OrderStatus::Refunded,
                        OrderStatus::RefundPending,
                    ],
                    OrderStatus::NeedsReview,
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
pub(super) async fn senseless(
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
pub(super) fn not_positive(n: &RefundNotice) -> Option<String> {
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

/// Which of these payments have refunds waiting for them (see [`waiting_sql`]): nearly
/// never any.
pub async fn payments_with_waiting(tx: &mut Tx, payment_ids: &[&str]) -> Result<Vec<String>> {
    if payment_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM payments WHERE id IN ({}) AND {} > 0",
        crate::store::placeholders(1, payment_ids.len()),
        waiting_sql("payments.id", "payments.order_id")
    )))
    .persistent(false);
    for id in payment_ids {
        q = q.bind(*id);
    }
    Ok(q.fetch_all(&mut **tx).await?)
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
pub(super) async fn adopt_unplaced(tx: &mut Tx, p: &payments::PaymentRow) -> Result<()> {
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
