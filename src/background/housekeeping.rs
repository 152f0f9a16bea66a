//! Housekeeping, every `queue.housekeeping_interval_ms`:
//! - open payments no webhook has moved for `payments.stale_after_ms` are looked up at their
//!   provider and the answer applied like a webhook's (paid → fulfilled; failed or expired →
//!   stock released, buyer told). Test-mode providers send no webhooks; buyers close tabs.
//! - stock held for unpaid orders past its reservation expiry is released;
//! - idempotency keys past `api.idempotency_ttl_secs` are removed, and sign-in links that
//!   ended more than a day ago, and webhook transmission ids seen more than a day ago.
//!
//! Every part is safe to run in several processes at once: each payment is handed to one
//! pass at a time by its `next_check_at`, and the rest are conditional updates.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Engine;

/// Payments looked up per pass; the rest wait for the next one.
const BATCH: i64 = 200;

pub async fn run(e: Arc<Engine>, shutdown: CancellationToken) {
    let interval = Duration::from_millis(e.config.queue.housekeeping_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        pass(&e).await;
    }
}

pub async fn pass(e: &Engine) {
    stale_payments(e).await;
    let ending: Vec<&str> = e
        .providers
        .enabled()
        .filter(|p| !p.checkout_expires())
        .map(|p| p.name())
        .collect();
    match e.store.expire_reservations(BATCH, &ending).await {
        Ok(released) if !released.is_empty() => {
            tracing::info!(
                orders = released.len(),
                "released expired stock reservations"
            )
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not release expired reservations"),
    }
    let ttl_ms = e.config.api.idempotency_ttl_secs.saturating_mul(1000) as i64;
    if let Err(err) = e.store.idempotency_cleanup(ttl_ms).await {
        tracing::warn!(error = %err, "could not remove expired idempotency keys");
    }
    if let Err(err) = e.store.sign_in_cleanup().await {
        tracing::warn!(error = %err, "could not remove ended sign-in links");
    }
    if let Err(err) = e.store.transmissions_cleanup().await {
        tracing::warn!(error = %err, "could not forget old webhook transmission ids");
    }
}

async fn stale_payments(e: &Engine) {
    let stale_after = e.config.payments.stale_after_ms as i64;
    let due = match e.store.take_stale_payments(stale_after, BATCH).await {
        Ok(d) => d,
        Err(err) => {
            tracing::warn!(error = %err, "could not look for stale payments");
            return;
        }
    };
    for p in due {
        let Ok(provider) = e.providers.get("provider", &p.provider) else {
            tracing::warn!(payment_id = %p.id, provider = %p.provider, "stale payment of a provider no longer configured");
            continue;
        };
        let state = match provider.payment_state(&p.provider_ref()).await {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(payment_id = %p.id, error = %err, "stale payment: provider lookup failed; asking again later");
                continue;
            }
        };
        match crate::core::payments::apply_change(&e.store, &p.id, &state.change).await {
            Ok((outcome, wake)) => {
                tracing::info!(payment_id = %p.id, order_id = %p.order_id, %outcome, "stale payment looked up at its provider");
                e.queue.wake(&wake);
            }
            Err(err) => {
                tracing::warn!(payment_id = %p.id, error = %err, "stale payment: could not apply")
            }
        }
    }
}
