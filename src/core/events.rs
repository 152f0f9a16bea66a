//! What a stored webhook event does: read it as a payment change or a refund notice and
//! hand it to the payment's or the refund's state machine, in the transaction that stored
//! it — a whole batch of paid events in a fixed handful of statements — and replay a stored
//! one (re-verified by the caller), reporting every state it moved.

use jobs::Wake;
use serde::Serialize;

use crate::core::payments;
use crate::domain::event::{PaymentChange, ProviderEvent};
use crate::store::events::{self, Incoming, StoredEvent};
use crate::store::payments::{self as store_payments, PaymentRow};
use crate::store::{Result, Store, StoreError, Tx, audit, refunds};

/// What recording an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The event id was seen before: nothing happened.
    pub duplicate: bool,
    /// A short description stored with the event (`paid`, `no change: payment is paid`, …).
    pub outcome: String,
    /// Steps to wake after commit.
    pub wake: Vec<Wake>,
}

/// Records one verified event and applies it, in its own transaction (rolled back when it
/// was a duplicate: nothing was written).
#[tracing::instrument(skip(store, ev, raw), fields(provider = ev.provider, event_id = %ev.event_id, kind = %ev.event_type))]
pub async fn record(
    store: &Store,
    ev: &ProviderEvent,
    raw: &[u8],
    headers: &str,
    restock_default: bool,
) -> Result<Recorded> {
    let mut tx = store.begin().await?;
    let cause = tx.cause.clone();
    let one = Incoming {
        ev,
        raw,
        headers,
        restock_default,
        request_id: cause.as_deref(),
    };
    let r = record_batch(&mut tx, &[one])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Other("recording an event returned nothing".into()))?;
    if r.duplicate {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(r)
}

/// What recording one event did, before its outcome is written back.
struct Applied {
    outcome: String,
    payment_id: Option<String>,
    wake: Vec<Wake>,
}

/// Records events and applies them, in the caller's transaction (which the caller commits
/// — or, when every event was a duplicate, may simply roll back: nothing was written).
pub async fn record_batch(tx: &mut Tx, batch: &[Incoming<'_>]) -> Result<Vec<Recorded>> {
    let ids = events::append(tx, batch).await?;
    apply_stored(tx, batch, &ids).await
}

/// Applies stored events (`ids[i]` is `batch[i]`'s row; `None`: a duplicate, left alone)
/// and writes their outcomes, in the caller's transaction. A batch costs a fixed handful of
/// statements on the hot path (paid events of open payments): their payments and orders
/// move and their pipelines are created by one statement each. Every other event takes the
/// full path, one by one, after them — events that arrived together have no order among
/// themselves, so any serial order is a true one.
pub async fn apply_stored(
    tx: &mut Tx,
    batch: &[Incoming<'_>],
    ids: &[Option<i64>],
) -> Result<Vec<Recorded>> {
    let mut applied: Vec<Option<Applied>> = batch.iter().map(|_| None).collect();
    // Paid events that name their payment by the provider's order id: the first per payment.
    let mut fast: Vec<usize> = Vec::new();
    let mut named: Vec<(&str, &str, Option<&str>)> = Vec::new();
    for (i, inc) in batch.iter().enumerate() {
        let (
            Some(_),
            PaymentChange::Paid {
                provider_payment_id,
            },
            Some(poid),
        ) = (ids[i], &inc.ev.change, inc.ev.provider_order_id.as_deref())
        else {
            continue;
        };
        if !named
            .iter()
            .any(|(p, o, _)| *p == inc.ev.provider && *o == poid)
        {
            fast.push(i);
            named.push((inc.ev.provider, poid, provider_payment_id.as_deref()));
        }
    }
    // The payments that moved, each beside the event that moved it.
    let mut unpaired = store_payments::mark_paid_many(tx, &named).await?;
    let (mut moved, mut moved_at) = (Vec::new(), Vec::new());
    for (&i, (provider, poid, _)) in fast.iter().zip(&named) {
        if let Some(k) = unpaired
            .iter()
            .position(|p| p.provider == *provider && p.provider_order_id == *poid)
        {
            moved.push(unpaired.swap_remove(k));
            moved_at.push(i);
        }
    }
    let causes: Vec<Option<&str>> = moved_at.iter().map(|&i| batch[i].request_id).collect();
    let captured = payments::captured_many(tx, &moved, &causes).await?;
    for ((i, p), (outcome, wake)) in moved_at.into_iter().zip(moved).zip(captured) {
        applied[i] = Some(Applied {
            outcome,
            payment_id: Some(p.id),
            wake,
        });
    }
    for (i, inc) in batch.iter().enumerate() {
        if ids[i].is_none() || applied[i].is_some() {
            continue;
        }
        let payment = payment_for(tx, inc.ev).await?;
        // The steps this event arms carry its request's id, not the batch's.
        let batch_cause = std::mem::replace(&mut tx.cause, inc.request_id.map(str::to_owned));
        let applying = apply_event(tx, inc.ev, payment.as_ref(), inc.restock_default).await;
        tx.cause = batch_cause;
        let (outcome, wake) = applying?;
        applied[i] = Some(Applied {
            outcome,
            payment_id: payment.map(|p| p.id),
            wake,
        });
    }
    let stored: Vec<(i64, &str, Option<&str>)> = ids
        .iter()
        .zip(&applied)
        .filter_map(|(id, a)| {
            let a = a.as_ref()?;
            Some(((*id)?, a.outcome.as_str(), a.payment_id.as_deref()))
        })
        .collect();
    events::set_outcomes(tx, &stored).await?;
    Ok(applied
        .into_iter()
        .map(|a| match a {
            Some(a) => Recorded {
                duplicate: false,
                outcome: a.outcome,
                wake: a.wake,
            },
            None => Recorded {
                duplicate: true,
                outcome: "duplicate".into(),
                wake: Vec::new(),
            },
        })
        .collect())
}

/// The payment of ours an event is about, if any.
async fn payment_for(tx: &mut Tx, ev: &ProviderEvent) -> Result<Option<PaymentRow>> {
    match (&ev.provider_order_id, &ev.provider_payment_id) {
        (Some(id), _) => {
            store_payments::find_for_event(tx, ev.provider, id, ev.payment_ref.as_deref()).await
        }
        (None, Some(ppid)) => store_payments::by_provider_payment(tx, ev.provider, ppid).await,
        (None, None) => Ok(None),
    }
}

/// Applies what an event means, in the caller's transaction: the outcome to store with it,
/// and the steps to wake after commit. Idempotent: applying an event again finds every
/// state moved on already and changes nothing.
async fn apply_event(
    tx: &mut Tx,
    ev: &ProviderEvent,
    payment: Option<&PaymentRow>,
    restock_default: bool,
) -> Result<(String, Vec<Wake>)> {
    Ok(match (payment, &ev.change) {
        (_, PaymentChange::Ignored) => ("ignored: event type not handled".to_owned(), Vec::new()),
        (None, PaymentChange::Refunded(n)) if ev.provider_payment_id.is_some() => {
            let ppid = ev.provider_payment_id.as_deref().unwrap_or_default();
            let outcome = refunds::hold_unplaced(tx, ev.provider, ppid, n, restock_default).await?;
            (outcome, Vec::new())
        }
        (None, _) => ("ignored: no payment of ours matches".to_owned(), Vec::new()),
        (Some(p), PaymentChange::Refunded(n)) => {
            refunds::record_notice(tx, p, n, restock_default).await?
        }
        (Some(p), change) => payments::apply(tx, p, change).await?,
    })
}

/// A state that replaying an event moved (or would move).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub what: String,
    pub from: Option<String>,
    pub to: String,
}

/// What replaying an event did, or (dry run) would do.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub dry_run: bool,
    pub outcome: String,
    /// False: the event was applied already, and replaying it changed nothing.
    pub changed: bool,
    pub transitions: Vec<Transition>,
    #[serde(skip)]
    pub wake: Vec<Wake>,
}

fn diff(before: &[(String, String)], after: &[(String, String)]) -> Vec<Transition> {
    after
        .iter()
        .filter_map(|(what, to)| {
            let from = before
                .iter()
                .find(|(w, _)| w == what)
                .map(|(_, s)| s.clone());
            (from.as_ref() != Some(to)).then(|| Transition {
                what: what.clone(),
                from,
                to: to.clone(),
            })
        })
        .collect()
}

/// Applies a stored (and re-verified) event again, through the same path as when it
/// arrived, and reports every state it moved. A dry run rolls all of it back.
pub async fn replay(
    store: &Store,
    stored: &StoredEvent,
    ev: &ProviderEvent,
    dry_run: bool,
    restock_default: bool,
    actor: &str,
) -> Result<Replayed> {
    let mut tx = store.begin().await?;
    let payment = payment_for(&mut tx, ev).await?;
    let before = match &payment {
        Some(p) => events::snapshot(&mut tx, &p.id).await?,
        None => Vec::new(),
    };
    let (outcome, wake) = apply_event(&mut tx, ev, payment.as_ref(), restock_default).await?;
    // An event that named no payment may have placed one (a refund held for later).
    let after = match payment_for(&mut tx, ev).await? {
        Some(p) => events::snapshot(&mut tx, &p.id).await?,
        None => Vec::new(),
    };
    let transitions = diff(&before, &after);
    let changed = !transitions.is_empty() || !wake.is_empty();
    if dry_run {
        tx.rollback().await?;
    } else {
        audit::record(
            &mut tx,
            actor,
            "event.replay",
            &stored.id.to_string(),
            Some(&outcome),
        )
        .await?;
        events::unpark(&mut tx, stored.id, &outcome).await?;
        tx.commit().await?;
    }
    Ok(Replayed {
        dry_run,
        outcome,
        changed,
        transitions,
        wake: if dry_run { Vec::new() } else { wake },
    })
}
