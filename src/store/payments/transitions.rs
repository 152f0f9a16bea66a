//! What a provider's word does to a payment: the payment an event is about, and its
//! moves (paid, failed, captured — one at a time or many in one batch — or an extra
//! payment for an order already paid).

use super::*;

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

/// Applies what the provider says about a payment — from a webhook or from the browser's
/// verify call, whichever comes first; the second finds nothing left to do. Returns a short
/// outcome and the steps to wake after commit.
pub async fn apply(
    tx: &mut Tx,
    p: &PaymentRow,
    change: &PaymentChange,
) -> Result<(String, Vec<Wake>)> {
    use PaymentStatus::{Created, Creating, Pending};
    let open = [Creating, Created, Pending];
    match change {
        PaymentChange::Paid {
            provider_payment_id,
        } => {
            // One statement on the hot path: the status and the provider's id together.
            let moved = sqlx::query(
                "UPDATE payments SET status = 'paid', updated_at = $1,
                        provider_payment_id = COALESCE($2, provider_payment_id)
                 WHERE id = $3 AND status IN ('creating', 'created', 'pending')",
            )
            .bind(crate::clock::now_ms())
            .bind(provider_payment_id.as_deref())
            .bind(&p.id)
            .execute(&mut **tx)
            .await?
            .rows_affected()
                == 1;
            if moved {
                return captured(tx, p).await;
            }
        }
        PaymentChange::AwaitingSettlement {
            provider_payment_id,
        } => {
            if transition(
                tx,
                &p.id,
                &[PaymentStatus::Creating, PaymentStatus::Created],
                PaymentStatus::Pending,
            )
            .await?
            {
                if let Some(ppid) = provider_payment_id {
                    set_provider_payment_id(tx, &p.id, ppid).await?;
                }
                let wake = refunds::catch_up(tx, &p.id, &p.order_id).await?;
                return Ok(("awaiting settlement".to_owned(), wake));
            }
        }
        PaymentChange::Failed | PaymentChange::Expired => {
            let to = if *change == PaymentChange::Failed {
                PaymentStatus::Failed
            } else {
                PaymentStatus::Expired
            };
            if transition(tx, &p.id, &open, to).await? {
                let wake = failed(tx, p).await?;
                return Ok((format!("payment {to}; stock released"), wake));
            }
        }
        PaymentChange::AttemptFailed => {
            let now: PaymentStatus =
                sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
                    .bind(&p.id)
                    .fetch_one(&mut **tx)
                    .await?;
            return Ok((
                format!("a payment attempt failed; the checkout stays payable (payment is {now})"),
                Vec::new(),
            ));
        }
        // Refund events are recorded by `refunds::record_notice`.
        PaymentChange::Ignored | PaymentChange::Refunded(_) => {}
    }
    // Nothing moved: another event or the verify call got here first, or the event says
    // the opposite of what we hold. Say which.
    let now: PaymentStatus = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
        .bind(&p.id)
        .fetch_one(&mut **tx)
        .await?;
    let held_paid = now.captured();
    // A capture the provider held as pending has settled, one way or the other: the
    // `confirm_capture` step waiting on it reads it now (PayPal's PAYMENT.CAPTURE.COMPLETED
    // or DENIED after a PENDING capture).
    if now == PaymentStatus::Paid
        && matches!(change, PaymentChange::Paid { .. } | PaymentChange::Failed)
        && let Some(w) = steps::hurry(tx, &p.order_id, &p.id, StepKind::ConfirmCapture).await?
    {
        return Ok((
            "the capture check waiting on it runs now".to_owned(),
            vec![w],
        ));
    }
    match change {
        PaymentChange::Paid { .. } if now.gone() => contradicted(tx, p, now, "a capture").await,
        PaymentChange::Failed if held_paid => contradicted(tx, p, now, "the payment failed").await,
        PaymentChange::Expired if held_paid => {
            contradicted(tx, p, now, "the payment expired").await
        }
        _ => Ok((format!("no change: payment is {now}"), Vec::new())),
    }
}

/// The Paid hot path of a whole batch of events in one statement: each open payment named by
/// `(provider, provider order id, provider payment id)` moves to paid. Returns the payments
/// that moved; the caller gives every other event the full path ([`apply`]).
pub async fn mark_paid_many(
    tx: &mut Tx,
    named: &[(&str, &str, Option<&str>)],
) -> Result<Vec<PaymentRow>> {
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let values = crate::store::value_rows(2, named.len(), 3, "");
    let mut q = sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "UPDATE payments SET status = 'paid', updated_at = $1,
                provider_payment_id = COALESCE(v.column3, payments.provider_payment_id)
         FROM (VALUES {values}) AS v
         WHERE payments.provider = v.column1 AND payments.provider_order_id = v.column2
           AND payments.status IN ('creating', 'created', 'pending')
         RETURNING {COLS}"
    )))
    .persistent(false)
    .bind(now_ms());
    for (provider, poid, ppid) in named {
        q = q.bind(*provider).bind(*poid).bind(*ppid);
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

/// A payment ended without money (failed, declined, expired): the stock it held goes back,
/// the order can be paid again, and the buyer is told. Returns the steps to wake.
pub async fn failed(tx: &mut Tx, p: &PaymentRow) -> Result<Vec<Wake>> {
    release_reservations(tx, &p.order_id).await?;
    orders::transition(
        tx,
        &p.order_id,
        &[OrderStatus::PendingPayment, OrderStatus::Paid],
        OrderStatus::PaymentFailed,
    )
    .await?;
    let wake = steps::arm(tx, &p.order_id, &p.id, StepKind::NotifyPaymentFailed).await?;
    Ok(wake.into_iter().collect())
}

/// An event says the opposite of what we hold: record that, and let the provider's API
/// decide (`reconcile_payment`). The payload alone never moves a payment backwards.
pub(super) async fn contradicted(
    tx: &mut Tx,
    p: &PaymentRow,
    now: PaymentStatus,
    what: &str,
) -> Result<(String, Vec<Wake>)> {
    let wake = steps::arm(tx, &p.order_id, &p.id, StepKind::ReconcilePayment).await?;
    tracing::warn!(payment_id = %p.id, held = %now, event = what, "event contradicts the payment; re-reading it");
    Ok((
        format!("contradicts: {what}, but the payment is {now}; re-reading it from the provider"),
        wake.into_iter().collect(),
    ))
}

/// A payment was captured: its order moves to paid and gets its fulfilment pipeline — or,
/// when the order was paid already by another payment, this one is refunded. Returns the
/// outcome and the steps to wake.
pub async fn captured(tx: &mut Tx, p: &PaymentRow) -> Result<(String, Vec<Wake>)> {
    let cause = tx.cause.clone();
    let mut one = captured_many(tx, std::slice::from_ref(p), &[cause.as_deref()]).await?;
    Ok(one.pop().unwrap_or_default())
}

/// [`captured`] for many payments of different orders at once: a fixed handful of
/// statements however many there are (the intake's group commit hands over whole batches).
/// `causes[i]` is the request id that captured `ps[i]`: its pipeline carries it.
pub async fn captured_many(
    tx: &mut Tx,
    ps: &[PaymentRow],
    causes: &[Option<&str>],
) -> Result<Vec<(String, Vec<Wake>)>> {
    if ps.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET status = 'paid', updated_at = $1
         WHERE status IN ('pending_payment', 'payment_failed', 'created') AND id IN ({})
         RETURNING id",
        crate::store::placeholders(2, ps.len())
    )))
    .persistent(false)
    .bind(crate::clock::now_ms());
    for p in ps {
        q = q.bind(&p.order_id);
    }
    let mut orders: Vec<String> = q.fetch_all(&mut **tx).await?;
    // Each order that moved is paid by the first of its payments here; any other is extra.
    let pays: Vec<bool> = ps
        .iter()
        .map(|p| match orders.iter().position(|o| *o == p.order_id) {
            Some(i) => {
                orders.swap_remove(i);
                true
            }
            None => false,
        })
        .collect();
    let (moved, moved_causes): (Vec<&PaymentRow>, Vec<Option<&str>>) = ps
        .iter()
        .zip(&pays)
        .enumerate()
        .filter(|(_, (_, m))| **m)
        .map(|(i, (p, _))| (p, causes.get(i).copied().flatten()))
        .unzip();
    // Refunds that waited for these captures (an event that overtook them): nearly never.
    let mut waiting: Vec<String> = Vec::new();
    if !moved.is_empty() {
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM payments WHERE id IN ({}) AND {} > 0",
            crate::store::placeholders(1, moved.len()),
            refunds::waiting_sql("payments.id", "payments.order_id")
        )))
        .persistent(false);
        for p in &moved {
            q = q.bind(&p.id);
        }
        waiting = q.fetch_all(&mut **tx).await?;
    }
    let pairs: Vec<(&str, &str, Option<&str>)> = moved
        .iter()
        .zip(&moved_causes)
        .map(|(p, c)| (p.order_id.as_str(), p.id.as_str(), *c))
        .collect();
    let mut pipelines = steps::create_pipelines(tx, &pairs).await?.into_iter();
    let paid: Vec<&str> = moved.iter().map(|p| p.order_id.as_str()).collect();
    crate::store::merchant::emit_with(tx, "order.paid", &paid, |i| {
        let p = moved[i];
        serde_json::json!({ "payment": {
            "id": p.id, "provider": p.provider, "amount_minor": p.amount_minor, "currency": p.currency,
        }})
    })
    .await?;
    let mut out = Vec::with_capacity(ps.len());
    for (i, (p, &pays)) in ps.iter().zip(&pays).enumerate() {
        if !pays {
            let cause = causes.get(i).copied().flatten().map(str::to_owned);
            let batch_cause = std::mem::replace(&mut tx.cause, cause);
            let refunding = extra_payment(tx, p).await;
            tx.cause = batch_cause;
            out.push(refunding?);
            continue;
        }
        let mut wake = pipelines.next().unwrap_or_default();
        if waiting.contains(&p.id) {
            wake.extend(refunds::place_and_apply(tx, &p.id, &p.order_id).await?);
        }
        out.push(("paid".to_owned(), wake));
    }
    Ok(out)
}

/// A second capture for an order paid already: it is refunded.
pub(super) async fn extra_payment(tx: &mut Tx, p: &PaymentRow) -> Result<(String, Vec<Wake>)> {
    let id = steps::insert(
        tx,
        &p.order_id,
        &p.id,
        StepKind::RefundExtraPayment,
        StepStatus::Pending,
    )
    .await?;
    tracing::warn!(payment_id = %p.id, order_id = %p.order_id, "a second payment was captured for an order already paid; refunding it");
    let outcome = if id.is_some() {
        "extra payment: the order was paid already; refunding this one"
    } else {
        "extra payment: being refunded already"
    };
    Ok((outcome.to_owned(), id.into_iter().collect()))
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
/// are placed by [`refunds::catch_up`], which callers run after.
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
