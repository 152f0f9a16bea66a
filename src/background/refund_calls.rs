//! Asking the provider for a refund already recorded as `requested` (`store::refunds`): the
//! admin API and the `refund_payment` step do it at once, and [`resume`] does it again for
//! an admin's request the provider left unanswered, so a refund accepted by
//! `POST /api/payments/refund` is finished even if the caller never repeats it. Both use the refund's own idempotency key, so however many
//! times it is asked, the provider refunds once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::clock::now_ms;
use crate::domain::RefundStatus;
use crate::providers::RefundRequest;
use crate::store::StoreError;
use crate::store::payments::PaymentRow;
use crate::store::refunds::RefundRow;

/// What asking came to.
#[derive(Debug)]
pub enum Made {
    /// Succeeded and applied (the answer, or the provider's refund event, said so).
    Settled(RefundRow),
    /// Accepted, the money not moved yet (Stripe `pending`, PayPal `PENDING`, Razorpay
    /// `pending`): booked when the provider's event says it succeeded.
    Pending(RefundRow),
    /// The provider refused it: the refund is `failed`.
    Refused(RefundRow, String),
    /// The provider could not be reached: still `requested`.
    Unanswered(RefundRow, String),
}

pub async fn make(e: &Engine, row: &RefundRow, payment: &PaymentRow) -> Result<Made, StoreError> {
    let provider = e
        .providers
        .get("provider", &payment.provider)
        .map_err(|err| StoreError::Other(err.to_string()))?;
    let req = RefundRequest {
        refund_id: &row.id,
        payment_id: &payment.id,
        amount_minor: row.amount_minor,
        currency: &row.currency,
        idempotency_key: &format!("fulfilld-refund:{}", row.id),
    };
    match provider.refund(&payment.provider_ref(), &req).await {
        Ok(r) => {
            let (row, wake) = e.store.refund_answered(&row.id, &r.id, r.state()).await?;
            e.queue.wake(&wake);
            if row.status == RefundStatus::Failed {
                let why = format!("{} refused the refund ({})", payment.provider, r.status);
                return Ok(Made::Refused(row, why));
            }
            if row.status == RefundStatus::Pending {
                tracing::info!(order_id = %row.order_id, refund_id = %row.id, "refund pending at the provider");
                return Ok(Made::Pending(row));
            }
            tracing::info!(order_id = %row.order_id, refund_id = %row.id, amount_minor = row.amount_minor, "refunded");
            Ok(Made::Settled(row))
        }
        Err(err) => {
            let transient = err.is_transient();
            let row = e
                .store
                .refund_call_failed(&row.id, &err.to_string(), !transient)
                .await?;
            if row.status == RefundStatus::Succeeded {
                // The answer was lost, but the provider's refund event arrived and was
                // applied: the refund is made.
                return Ok(Made::Settled(row));
            }
            tracing::warn!(refund_id = %row.id, error = %err, transient, "refund call failed");
            if transient {
                Ok(Made::Unanswered(row, err.to_string()))
            } else {
                Ok(Made::Refused(row, err.to_string()))
            }
        }
    }
}

/// Every `interval`, asks the provider again about admin refunds left `requested` for
/// longer than `refunds.resume_after_ms`, and reads back refunds it left `pending` that long
/// with no event since.
pub async fn resume(e: Arc<Engine>, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let before = now_ms() - e.config.refunds.resume_after_ms as i64;
        let stalled = match e.store.stalled_refunds(before, 100).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "could not look for unanswered refunds");
                continue;
            }
        };
        settle_pending(&e, before).await;
        for (row, payment) in stalled {
            match make(&e, &row, &payment).await {
                Ok(Made::Settled(r)) => {
                    tracing::info!(refund_id = %r.id, "unanswered refund finished")
                }
                Ok(Made::Refused(r, why)) => {
                    tracing::warn!(refund_id = %r.id, %why, "unanswered refund refused")
                }
                Ok(Made::Unanswered(..) | Made::Pending(_)) => {}
                Err(err) => {
                    tracing::warn!(refund_id = %row.id, error = %err, "could not resume a refund")
                }
            }
        }
    }
}

/// Asks the provider about refunds it left `pending` since `before` (their event may have
/// been lost), and applies what it says.
async fn settle_pending(e: &Engine, before: i64) {
    let pending = match e.store.pending_refunds(before, 100).await {
        Ok(p) => p,
        Err(err) => {
            tracing::warn!(error = %err, "could not look for pending refunds");
            return;
        }
    };
    for (row, payment) in pending {
        let Ok(provider) = e.providers.get("provider", &payment.provider) else {
            continue;
        };
        let Some(prid) = row.provider_refund_id.as_deref() else {
            continue;
        };
        let state = match provider.refund_state(&payment.provider_ref(), prid).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(refund_id = %row.id, error = %err, "could not read a pending refund");
                continue;
            }
        };
        match e
            .store
            .pending_refund_read(&row, &payment, state, e.config.refunds.restock)
            .await
        {
            Ok((outcome, wake)) => {
                e.queue.wake(&wake);
                if state != crate::providers::RefundState::Pending {
                    tracing::info!(refund_id = %row.id, %outcome, "a pending refund was read back");
                }
            }
            Err(err) => {
                tracing::warn!(refund_id = %row.id, error = %err, "could not apply a pending refund")
            }
        }
    }
}
