//! Webhook events' rows: every verified event is stored with its raw body, once, then its
//! outcome; transmission ids; parked events. What an event does is `core::events`, in the
//! same transaction as its row — either all of it is durable before the provider hears
//! 200, or none of it is and the provider retries.

use serde::Serialize;

use super::{Backend, Result, Store, Tx, value_rows};
use crate::clock::now_ms;
use crate::domain::event::ProviderEvent;

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

impl Store {
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

/// A parked event replayed (after a fix) is parked no more: it gets `outcome`.
pub async fn unpark(tx: &mut Tx, id: i64, outcome: &str) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_events SET outcome = $1 WHERE id = $2 AND {PARKED}"
    )))
    .bind(outcome)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes each stored event's `(row id, outcome, payment)`, in one statement.
pub async fn set_outcomes(tx: &mut Tx, stored: &[(i64, &str, Option<&str>)]) -> Result<()> {
    if stored.is_empty() {
        return Ok(());
    }
    let values = value_rows(1, stored.len(), 3, "");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_events SET outcome = v.column2, payment_id = v.column3
         FROM (VALUES {values}) AS v WHERE webhook_events.id = v.column1"
    )))
    .persistent(false);
    for (id, outcome, payment) in stored {
        q = q.bind(*id).bind(*outcome).bind(*payment);
    }
    q.execute(&mut **tx).await?;
    Ok(())
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

/// The states an event can move: its payment, its order, the order's steps and refunds, as
/// `(what, status)` sorted.
pub async fn snapshot(tx: &mut Tx, payment_id: &str) -> Result<Vec<(String, String)>> {
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
}
