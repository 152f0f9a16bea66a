//! Webhook events: every verified event is stored with its raw body, once. Recording an
//! event and applying what it means to the payment, the order, the stock and the
//! fulfilment pipeline happen in one transaction — either all of it is durable before the
//! provider hears 200, or none of it is and the provider retries.

use super::{Result, Store, payments, refunds};
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
    pub wake: Vec<i64>,
}

impl Store {
    #[tracing::instrument(skip(self, ev, raw), fields(provider = ev.provider, event_id = %ev.event_id, kind = %ev.event_type))]
    pub async fn record_event(
        &self,
        ev: &ProviderEvent,
        raw: &[u8],
        restock_default: bool,
    ) -> Result<Recorded> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_events (provider, event_id, event_type, raw_body, outcome, received_at)
             VALUES ($1, $2, $3, $4, 'received', $5)
             ON CONFLICT (provider, event_id) DO NOTHING",
        )
        .bind(ev.provider)
        .bind(&ev.event_id)
        .bind(&ev.event_type)
        .bind(raw.to_vec())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            tx.rollback().await?;
            return Ok(Recorded {
                duplicate: true,
                outcome: "duplicate".into(),
                wake: Vec::new(),
            });
        }
        let payment = match (&ev.provider_order_id, &ev.provider_payment_id) {
            (Some(id), _) => {
                payments::find_for_event(&mut tx, ev.provider, id, ev.payment_ref.as_deref())
                    .await?
            }
            (None, Some(ppid)) => payments::by_provider_payment(&mut tx, ev.provider, ppid).await?,
            (None, None) => None,
        };
        let (outcome, wake) = match (&payment, &ev.change) {
            (_, PaymentChange::Ignored) => {
                ("ignored: event type not handled".to_owned(), Vec::new())
            }
            (None, PaymentChange::Refunded(n)) if ev.provider_payment_id.is_some() => {
                let ppid = ev.provider_payment_id.as_deref().unwrap_or_default();
                let outcome =
                    refunds::hold_unplaced(&mut tx, ev.provider, ppid, n, restock_default).await?;
                (outcome, Vec::new())
            }
            (None, _) => ("ignored: no payment of ours matches".to_owned(), Vec::new()),
            (Some(p), PaymentChange::Refunded(n)) => {
                refunds::record_notice(&mut tx, p, n, restock_default).await?
            }
            (Some(p), change) => payments::apply(&mut tx, p, change).await?,
        };
        sqlx::query(
            "UPDATE webhook_events SET outcome = $1, payment_id = $2 WHERE provider = $3 AND event_id = $4",
        )
        .bind(&outcome)
        .bind(payment.as_ref().map(|p| p.id.as_str()))
        .bind(ev.provider)
        .bind(&ev.event_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Recorded {
            duplicate: false,
            outcome,
            wake,
        })
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
