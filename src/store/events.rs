//! Webhook events: every verified event is stored with its raw body, once. Recording an
//! event and applying what it means to the payment, the order, the stock and the
//! fulfilment pipeline happen in one transaction — either all of it is durable before the
//! provider hears 200, or none of it is and the provider retries.

use jobs::Wake;
use serde::Serialize;

use super::payments::PaymentRow;
use super::{Backend, Result, Store, StoreError, Tx, payments, refunds, value_rows};
use crate::clock::now_ms;
use crate::domain::event::{PaymentChange, ProviderEvent};

/// The header that marks a stored event as read back from the provider's API
/// (reconciliation's backfill, authentic by the API's own authentication) rather than
/// received as a signed webhook; the intake never stores it from a request.
pub const SOURCE_HEADER: &str = "x-fulfilld-source";

/// The headers a backfilled event is stored with.
pub const BACKFILL_HEADERS: &str = r#"{"x-fulfilld-source":"backfill"}"#;

/// What taking a provider's transmission id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmission {
    /// Seen for the first time.
    New,
    /// Seen before with this very body: a repeat of one message.
    Repeat,
    /// Seen before with another body: a signed message reused for something else.
    Reused,
}

/// How long a transmission id is remembered: far longer than any freshness tolerance
/// (`providers.paypal.webhook_tolerance_secs` is at most 12 hours).
pub const TRANSMISSION_KEPT_MS: i64 = 86_400_000;

impl Store {
    /// Takes `transmission_id` of `provider` for the body whose SHA-256 is `body_sha256`.
    pub async fn take_transmission(
        &self,
        provider: &str,
        transmission_id: &str,
        body_sha256: &str,
    ) -> Result<Transmission> {
        let _writer = self.write_guard().await;
        let r = sqlx::query(
            "INSERT INTO webhook_transmissions (provider, transmission_id, body_sha256, seen_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (provider, transmission_id) DO NOTHING",
        )
        .bind(provider)
        .bind(transmission_id)
        .bind(body_sha256)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(Transmission::New);
        }
        let seen: Option<String> = sqlx::query_scalar(
            "SELECT body_sha256 FROM webhook_transmissions WHERE provider = $1 AND transmission_id = $2",
        )
        .bind(provider)
        .bind(transmission_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match seen {
            Some(h) if h == body_sha256 => Transmission::Repeat,
            Some(_) => Transmission::Reused,
            // Removed between the two statements (housekeeping, a day on): as good as new.
            None => Transmission::New,
        })
    }

    /// Forgets transmission ids older than [`TRANSMISSION_KEPT_MS`]; returns how many.
    pub async fn transmissions_cleanup(&self) -> Result<u64> {
        let _writer = self.write_guard().await;
        let r = sqlx::query("DELETE FROM webhook_transmissions WHERE seen_at < $1")
            .bind(now_ms() - TRANSMISSION_KEPT_MS)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

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

/// One verified event to record (see [`record_batch`]).
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub ev: &'a ProviderEvent,
    pub raw: &'a [u8],
    pub headers: &'a str,
    pub restock_default: bool,
    /// The request that brought it (stored with it; the steps it causes carry it).
    pub request_id: Option<&'a str>,
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
    let ids = append(tx, batch).await?;
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
    let mut unpaired = payments::mark_paid_many(tx, &named).await?;
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
    let stored: Vec<(i64, &Applied)> = ids
        .iter()
        .zip(&applied)
        .filter_map(|(id, a)| Some(((*id)?, a.as_ref()?)))
        .collect();
    set_outcomes(tx, &stored).await?;
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

/// Stores the events, each `(provider, event id)` once, with outcome `received` (not
/// applied yet): the new ones' row ids, `None` for a duplicate (seen before, or earlier in
/// this batch). One statement however many there are: all the intake does before its 200.
pub async fn append(tx: &mut Tx, batch: &[Incoming<'_>]) -> Result<Vec<Option<i64>>> {
    let values = value_rows(2, batch.len(), 6, ", 'received', $1");
    let mut q = sqlx::query_as::<_, (i64, String, String)>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_events (provider, event_id, event_type, raw_body, headers, request_id, outcome, received_at)
         VALUES {values}
         ON CONFLICT (provider, event_id) DO NOTHING
         RETURNING id, provider, event_id"
    )))
    .persistent(false)
    .bind(now_ms());
    for inc in batch {
        q = q
            .bind(inc.ev.provider)
            .bind(&inc.ev.event_id)
            .bind(&inc.ev.event_type)
            .bind(inc.raw.to_vec())
            .bind(inc.headers)
            .bind(inc.request_id);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    let mut ids: Vec<Option<i64>> = batch.iter().map(|_| None).collect();
    for (id, provider, event_id) in rows {
        // The first event of the batch with that key is the one stored.
        if let Some(i) = batch
            .iter()
            .position(|inc| inc.ev.provider == provider && inc.ev.event_id == event_id)
        {
            ids[i] = Some(id);
        }
    }
    Ok(ids)
}

/// An event the intake appended and nobody has applied yet.
#[derive(Debug, sqlx::FromRow)]
pub struct Unapplied {
    pub id: i64,
    pub provider: String,
    pub raw_body: Vec<u8>,
    pub headers: Option<String>,
    pub request_id: Option<String>,
}

/// The oldest events not applied yet, at most `limit`, held by the caller's transaction until
/// it ends. On Postgres, where several intakes apply at once, rows another transaction holds
/// are skipped rather than waited for; SQLite's write lock admits one applier anyway.
pub async fn take_unapplied(tx: &mut Tx, backend: Backend, limit: i64) -> Result<Vec<Unapplied>> {
    Ok(sqlx::query_as::<_, Unapplied>(sqlx::AssertSqlSafe(format!(
        "SELECT id, provider, raw_body, headers, request_id FROM webhook_events
         WHERE outcome = 'received' ORDER BY id LIMIT $1{}",
        skip_locked(backend)
    )))
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// Takes the one event `id` if it is still unapplied (and, on Postgres, not held by another
/// transaction): whether it was.
pub async fn take_unapplied_one(tx: &mut Tx, backend: Backend, id: i64) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM webhook_events WHERE id = $1 AND outcome = 'received'{}",
        skip_locked(backend)
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(found.is_some())
}

/// How a take holds the rows it read: on Postgres locked, skipping rows another transaction
/// holds; on SQLite the transaction's write lock holds everything already.
fn skip_locked(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    }
}

/// The events kept but not applied — unreadable, failing, or signed but senseless — as a
/// condition (the partial index `webhook_events_parked` has it word for word).
pub const PARKED: &str = "(outcome LIKE 'not applied:%' OR outcome LIKE 'parked for review:%')";

/// How many failed tries to apply an event park it.
pub const APPLY_TRIES: i64 = 5;

/// Counts a failed try to apply event `id` (in a transaction of its own, after the failed
/// one rolled back); at [`APPLY_TRIES`] the event is parked with `why` as its outcome.
/// Whether it was parked.
pub async fn apply_failed(tx: &mut Tx, id: i64, why: &str) -> Result<bool> {
    let failures: i64 = sqlx::query_scalar(
        "UPDATE webhook_events SET apply_failures = apply_failures + 1
         WHERE id = $1 AND outcome = 'received' RETURNING apply_failures",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .unwrap_or(0);
    if failures < APPLY_TRIES {
        return Ok(false);
    }
    set_unapplicable(tx, id, &format!("{failures} tries failed: {why}")).await?;
    Ok(true)
}

/// Gives a stored event that cannot be applied (its provider no longer configured, or it no
/// longer reads) that reason as its outcome, so it is shown, not retried forever.
pub async fn set_unapplicable(tx: &mut Tx, id: i64, why: &str) -> Result<()> {
    sqlx::query("UPDATE webhook_events SET outcome = $1 WHERE id = $2")
        .bind(format!("not applied: {why}"))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes each stored event's outcome and payment, in one statement.
async fn set_outcomes(tx: &mut Tx, stored: &[(i64, &Applied)]) -> Result<()> {
    if stored.is_empty() {
        return Ok(());
    }
    let values = value_rows(1, stored.len(), 3, "");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_events SET outcome = v.column2, payment_id = v.column3
         FROM (VALUES {values}) AS v WHERE webhook_events.id = v.column1"
    )))
    .persistent(false);
    for (id, a) in stored {
        q = q.bind(*id).bind(&a.outcome).bind(a.payment_id.as_deref());
    }
    q.execute(&mut **tx).await?;
    Ok(())
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
    /// The request that brought it.
    pub request_id: Option<String>,
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
    /// The latest events, newest first (optionally of one provider, or only those parked).
    pub async fn recent_events(
        &self,
        provider: Option<&str>,
        parked: bool,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let mut filters = super::Filters::default().given("provider = ?", provider);
        if parked {
            filters = filters.and(PARKED.to_owned());
        }
        let mut q = sqlx::query_as::<_, StoredEvent>(sqlx::AssertSqlSafe(format!(
            "SELECT id, provider, event_id, event_type, payment_id, outcome, received_at, request_id
             FROM webhook_events {} ORDER BY id DESC LIMIT {}",
            filters.sql(),
            limit.max(1)
        )));
        for v in &filters.binds {
            q = q.bind(*v);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// How many events are parked now.
    pub async fn parked_events(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM webhook_events WHERE {PARKED}"
        )))
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn get_event(&self, id: i64) -> Result<Option<StoredEvent>> {
        Ok(sqlx::query_as::<_, StoredEvent>(
            "SELECT id, provider, event_id, event_type, raw_body, headers, payment_id, outcome,
                    received_at, request_id
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
            super::audit::record(
                &mut tx,
                actor,
                "event.replay",
                &stored.id.to_string(),
                Some(&outcome),
            )
            .await?;
            // A parked event replayed (after a fix) is parked no more.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE webhook_events SET outcome = $1 WHERE id = $2 AND {PARKED}"
            )))
            .bind(&outcome)
            .bind(stored.id)
            .execute(&mut *tx)
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
