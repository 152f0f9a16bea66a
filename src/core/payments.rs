//! A payment's state machine: what the provider's word (a webhook, the verify call, a
//! re-read) does to a payment and its order — paid, awaiting settlement, failed or expired,
//! contradicted (re-read from the provider), or an extra capture for an order paid already
//! (refunded). It decides; `store` reads and writes the rows, in the caller's transaction.

use jobs::{StepKind, Wake};

use crate::domain::event::PaymentChange;
use crate::domain::{OrderStatus, PaymentStatus, StepStatus};
use crate::store::payments::{self, PaymentRow};
use crate::store::{Result, Store, StoreError, Tx, merchant, orders, refunds, steps};

/// Applies a change learned from the provider's API (the browser's verify call, a re-read)
/// to the payment, in its own transaction — the same transition a webhook would make.
pub async fn apply_change(
    store: &Store,
    payment_id: &str,
    change: &PaymentChange,
) -> Result<(String, Vec<Wake>)> {
    let mut tx = store.begin().await?;
    let p = payments::by_id(&mut *tx, payment_id)
        .await?
        .ok_or_else(|| StoreError::Other(format!("payment {payment_id} vanished")))?;
    let applied = apply(&mut tx, &p, change).await?;
    tx.commit().await?;
    Ok(applied)
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
            if payments::mark_paid(tx, &p.id, provider_payment_id.as_deref()).await? {
                return captured(tx, p).await;
            }
        }
        PaymentChange::AwaitingSettlement {
            provider_payment_id,
        } => {
            if payments::transition(
                tx,
                &p.id,
                &[PaymentStatus::Creating, PaymentStatus::Created],
                PaymentStatus::Pending,
            )
            .await?
            {
                if let Some(ppid) = provider_payment_id {
                    payments::set_provider_payment_id(tx, &p.id, ppid).await?;
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
            if payments::transition(tx, &p.id, &open, to).await? {
                let wake = failed(tx, p).await?;
                return Ok((format!("payment {to}; stock released"), wake));
            }
        }
        PaymentChange::AttemptFailed => {
            let now = payments::status_of(tx, &p.id).await?;
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
    let now = payments::status_of(tx, &p.id).await?;
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

/// A payment ended without money (failed, declined, expired): the stock it held goes back,
/// the order can be paid again, and the buyer is told. Returns the steps to wake.
pub async fn failed(tx: &mut Tx, p: &PaymentRow) -> Result<Vec<Wake>> {
    payments::release_reservations(tx, &p.order_id).await?;
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
async fn contradicted(
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
    let order_ids: Vec<&str> = ps.iter().map(|p| p.order_id.as_str()).collect();
    let mut orders = orders::mark_paid_many(tx, &order_ids).await?;
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
    let moved_ids: Vec<&str> = moved.iter().map(|p| p.id.as_str()).collect();
    let waiting = refunds::payments_with_waiting(tx, &moved_ids).await?;
    let pairs: Vec<(&str, &str, Option<&str>)> = moved
        .iter()
        .zip(&moved_causes)
        .map(|(p, c)| (p.order_id.as_str(), p.id.as_str(), *c))
        .collect();
    let mut pipelines = steps::create_pipelines(tx, &pairs).await?.into_iter();
    let paid: Vec<&str> = moved.iter().map(|p| p.order_id.as_str()).collect();
    merchant::emit_with(tx, "order.paid", &paid, |i| {
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
async fn extra_payment(tx: &mut Tx, p: &PaymentRow) -> Result<(String, Vec<Wake>)> {
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
