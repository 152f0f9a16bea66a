//! Webhook events: every verified event is stored with its raw body, once. Recording an
//! event and applying what it means to the payment, the order, the stock and the
//! fulfilment pipeline happen in one transaction — either all of it is durable before the
//! provider hears 200, or none of it is and the provider retries.

use jobs::Wake;
use serde::Serialize;

use super::payments::PaymentRow;
use super::{Result, Store, Tx, payments, refunds};
use crate::domain::now_ms;
use crate::providers::{PaymentChange, ProviderEvent};

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

impl Store {
    #[tracing::instrument(skip(self, ev, raw), fields(provider = ev.provider, event_id = %ev.event_id, kind = %ev.event_type))]
    pub async fn record_event(
        &self,
        ev: &ProviderEvent,
        raw: &[u8],
        headers: &str,
        restock_default: bool,
    ) -> Result<Recorded> {
        let mut tx = self.begin().await?;
        let r = record_in(&mut tx, ev, raw, headers, restock_default).await?;
        if r.duplicate {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(r)
    }

    /// How many events are stored for a provider (used by tests and the admin overview).
    pub async fn count_events(&self, provider: &str) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events WHERE provider = $1")
                .bind(provider)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// Records one event and applies it, in the caller's transaction (which the caller commits
/// — or, for a duplicate, may simply roll back: nothing was written).
pub async fn record_in(
    tx: &mut Tx,
    ev: &ProviderEvent,
    raw: &[u8],
    headers: &str,
    restock_default: bool,
) -> Result<Recorded> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, event_type, raw_body, headers, outcome, received_at)
         VALUES ($1, $2, $3, $4, $5, 'received', $6)
         ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(ev.provider)
    .bind(&ev.event_id)
    .bind(&ev.event_type)
    .bind(raw.to_vec())
    .bind(headers)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(Recorded {
            duplicate: true,
            outcome: "duplicate".into(),
            wake: Vec::new(),
        });
    }
    let payment = payment_for(tx, ev).await?;
    let (outcome, wake) = apply_event(tx, ev, payment.as_ref(), restock_default).await?;
    sqlx::query(
        "UPDATE webhook_events SET outcome = $1, payment_id = $2 WHERE provider = $3 AND event_id = $4",
    )
    .bind(&outcome)
    .bind(payment.as_ref().map(|p| p.id.as_str()))
    .bind(ev.provider)
    .bind(&ev.event_id)
    .execute(&mut **tx)
    .await?;
    Ok(Recorded {
        duplicate: false,
        outcome,
        wake,
    })
}

/// The payment of ours an event is about, if any.
async fn payment_for(tx: &mut Tx, ev: &ProviderEvent) -> Result<Option<PaymentRow>> {
    match (&ev.provider_order_id, &ev.provider_payment_id) {
        (Some(id), _) => {
            payments::find_for_event(tx, ev.provider, id, ev.payment_ref.as_deref()).await
        }
        (None, Some(ppid)) => payments::by_provider_payment(tx, ev.provider, ppid).await,
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

/// A stored event, as replay needs it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    /// Left empty by lists.
    #[serde(skip)]
    #[sqlx(default)]
    pub raw_body: Vec<u8>,
    /// The request headers it came with, as a JSON object (what its signature needs).
    #[serde(skip)]
    #[sqlx(default)]
    pub headers: Option<String>,
    pub payment_id: Option<String>,
    pub outcome: String,
    pub received_at: i64,
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

/// The states an event can move: its payment, its order, and the order's steps.
async fn snapshot(tx: &mut Tx, payment_id: &str) -> Result<Vec<(String, String)>> {
    let mut v: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'payment ' || id, status FROM payments WHERE id = $1
         UNION ALL SELECT 'order ' || o.id, o.status FROM orders o
           JOIN payments p ON p.order_id = o.id WHERE p.id = $1
         UNION ALL SELECT 'step ' || s.kind || ' ' || s.id, s.status FROM steps s
           JOIN payments p ON p.order_id = s.order_id WHERE p.id = $1
         UNION ALL SELECT 'refund ' || r.id, r.status FROM refunds r WHERE r.payment_id = $1",
    )
    .bind(payment_id)
    .fetch_all(&mut **tx)
    .await?;
    v.sort();
    Ok(v)
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

impl Store {
    /// The latest events, newest first (optionally of one provider).
    pub async fn recent_events(
        &self,
        provider: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        Ok(sqlx::query_as::<_, StoredEvent>(
            "SELECT id, provider, event_id, event_type, payment_id, outcome, received_at
             FROM webhook_events WHERE ($1 = '' OR provider = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(provider.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_event(&self, id: i64) -> Result<Option<StoredEvent>> {
        Ok(sqlx::query_as::<_, StoredEvent>(
            "SELECT id, provider, event_id, event_type, raw_body, headers, payment_id, outcome,
                    received_at
             FROM webhook_events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Applies a stored (and re-verified) event again, through the same path as when it
    /// arrived, and reports every state it moved. A dry run rolls all of it back.
    pub async fn replay_event(
        &self,
        stored: &StoredEvent,
        ev: &ProviderEvent,
        dry_run: bool,
        restock_default: bool,
        actor: &str,
    ) -> Result<Replayed> {
        let mut tx = self.begin().await?;
        let payment = payment_for(&mut tx, ev).await?;
        let before = match &payment {
            Some(p) => snapshot(&mut tx, &p.id).await?,
            None => Vec::new(),
        };
        let (outcome, wake) = apply_event(&mut tx, ev, payment.as_ref(), restock_default).await?;
        // An event that named no payment may have placed one (a refund held for later).
        let after = match payment_for(&mut tx, ev).await? {
            Some(p) => snapshot(&mut tx, &p.id).await?,
            None => Vec::new(),
        };
        let transitions = diff(&before, &after);
        let changed = !transitions.is_empty() || !wake.is_empty();
        if dry_run {
            tx.rollback().await?;
        } else {
            super::dead_letters::audit(
                &mut tx,
                actor,
                "event.replay",
                &stored.id.to_string(),
                Some(&outcome),
            )
            .await?;
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
}
