//! `notify_merchant`: sends the deliveries `store::merchant` queued — each message to each
//! subscribed endpoint — signed per the Standard Webhooks specification:
//!
//! - `webhook-id`: the message's id, the same at every attempt and endpoint (receivers
//!   deduplicate by it);
//! - `webhook-timestamp`: Unix seconds when this attempt was sent;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` with the
//!   endpoint's secret (the bytes after `whsec_`, base64-decoded), one per secret in force,
//!   space-separated — two while a rotated-out secret's grace lasts.
//!
//! A 2xx answer within `merchant_webhooks.timeout` delivers; anything else (another status,
//! a redirect — never followed —, a refused or timed-out connection) is retried after the
//! next wait of `merchant_webhooks.retry_schedule`, and after its last the delivery is dead,
//! for an admin to retry. An endpoint whose attempts have all failed for
//! `merchant_webhooks.disable_after` is disabled.
//!
//! Targets are guarded against server-side request forgery: only http and https; with
//! `merchant_webhooks.allowed_hosts` set, only those hosts; and unless
//! `merchant_webhooks.allow_private`, no loopback, private, link-local or other non-public
//! address — neither named in the URL nor resolved from its host (the connection goes to an
//! address that was checked, so a name that resolves differently later gains nothing).
//!
//! Runs in every process that runs workers. It is told after each commit that queued
//! deliveries and looks every second for what other processes queued and for retries due.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::clock::now_ms;
use crate::config::MerchantWebhooks;
use crate::outbound::{Guarded, guard};
use crate::store::merchant::{After, Claimed, Policy, Sent};

/// The most of an answer kept in the delivery log.
const KEEP_BYTES: usize = 1024;

/// Sends due deliveries until `stop`.
pub async fn run(engine: Arc<Engine>, stop: CancellationToken) {
    let c = &engine.config.merchant_webhooks;
    let client = match client(c) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the merchant webhook client; no merchant webhooks are sent");
            return;
        }
    };
    let policy = Policy {
        schedule_ms: c.retry_schedule.ms().to_vec(),
        disable_after_ms: c.disable_after.ms(),
    };
    let lease_ms = (c.timeout.ms() + 30_000) as i64;
    let slots = Arc::new(Semaphore::new(c.concurrency));
    let wake = engine.store.merchant_wake.clone();
    loop {
        if slots.available_permits() == 0 {
            // Every slot is sending: look again as soon as one is free.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = slots.acquire() => continue,
            }
        }
        // A read first: the claim is a write (on SQLite it takes the writer lock), made
        // only when something is due.
        let now = now_ms();
        let due = engine.store.next_delivery_due().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not look for merchant webhooks to send");
            None
        });
        let mut due_in = due.map_or(Duration::from_secs(1), |at| {
            Duration::from_millis((at - now).clamp(0, 1_000) as u64)
        });
        if due.is_some_and(|at| at <= now) {
            let free = slots.available_permits();
            match engine.store.claim_deliveries(free, now + lease_ms).await {
                Ok(claimed) if !claimed.is_empty() => {
                    for c in claimed {
                        let Ok(slot) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let (engine, client, policy) =
                            (engine.clone(), client.clone(), policy.clone());
                        tokio::spawn(async move {
                            deliver(&engine, &client, &policy, c).await;
                            drop(slot);
                        });
                    }
                    continue;
                }
                // Another process took them first.
                Ok(_) => due_in = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim merchant webhooks to send");
                    due_in = Duration::from_secs(1);
                }
            }
        }
        // Until told, the next one is due, or a second has passed (what other processes
        // queued), whichever is first.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(due_in) => {}
        }
    }
}

/// One attempt at one delivery, recorded; its lines in a span naming it.
async fn deliver(e: &Engine, client: &reqwest::Client, policy: &Policy, c: Claimed) {
    use tracing::Instrument;
    let d = &c.delivery;
    let span = tracing::error_span!("delivery", delivery_id = d.id, message_id = %d.message_id, endpoint_id = %d.endpoint_id);
    attempt(e, client, policy, &c).instrument(span).await
}

async fn attempt(e: &Engine, client: &reqwest::Client, policy: &Policy, c: &Claimed) {
    let d = &c.delivery;
    let endpoint = match e.store.endpoint(&d.endpoint_id).await {
        Ok(Some(ep)) => ep,
        Ok(None) => return drop_delivery(e, c, "endpoint removed").await,
        Err(err) => {
            // The lease expires and the delivery is claimed again.
            tracing::warn!(error = %err, "could not read the merchant endpoint");
            return;
        }
    };
    if !endpoint.is_enabled() {
        return drop_delivery(e, c, "endpoint disabled").await;
    }
    let secrets = match e.store.endpoint_secrets(&d.endpoint_id).await {
        Ok(Some(s)) => s,
        _ => return,
    };
    let started = now_ms();
    let sent = match guard(&e.config.merchant_webhooks.reach(), &endpoint.url) {
        Err(why) => Sent {
            started_at: started,
            latency_ms: 0,
            status_code: None,
            response: why,
        },
        Ok(()) => {
            let timestamp = started / 1000;
            let signature = sign(
                &secrets.signing(started),
                &d.message_id,
                timestamp,
                &d.payload,
            );
            let request = client
                .post(&endpoint.url)
                .header("content-type", "application/json")
                .header("webhook-id", &d.message_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(d.payload.clone());
            send(request, started).await
        }
    };
    let after = e.store.finish_delivery(c, &sent, policy).await;
    let outcome = match &after {
        Ok(After::Delivered) => Some("delivered"),
        Ok(After::RetryAt(_)) => Some("retry"),
        Ok(After::Dead) => Some("dead"),
        Ok(After::EndpointDisabled) => Some("disabled"),
        _ => None,
    };
    if let Some(outcome) = outcome {
        let labels = crate::metrics::AttemptLabels {
            event: d.event_type.clone(),
            outcome,
        };
        let took = sent.latency_ms.max(0) as f64 / 1000.0;
        e.metrics
            .merchant_attempts
            .get_or_create(&labels)
            .observe(took);
    }
    match after {
        Ok(After::Delivered) => {
            tracing::info!(event = %d.event_type, latency_ms = sent.latency_ms, "merchant webhook delivered")
        }
        Ok(After::RetryAt(at)) => {
            // The sender's next look is at the earliest retry due.
            e.store.merchant_wake.notify_one();
            tracing::warn!(event = %d.event_type, status = ?sent.status_code, response = %sent.response, retry_at_ms = at, "merchant webhook failed; will retry")
        }
        Ok(After::Dead | After::EndpointDisabled) => {
            tracing::error!(event = %d.event_type, status = ?sent.status_code, response = %sent.response, "merchant webhook dead")
        }
        Ok(After::LostLease) => tracing::warn!("lease lost while sending a merchant webhook"),
        Err(err) => {
            tracing::warn!(error = %err, "could not record a merchant webhook attempt; it is sent again")
        }
    }
}

async fn drop_delivery(e: &Engine, c: &Claimed, why: &str) {
    if let Err(err) = e.store.drop_delivery(c, why).await {
        tracing::warn!(error = %err, "could not record a merchant webhook as dropped");
    }
}

/// Sends and reads the start of the answer (within the client's timeout).
async fn send(request: reqwest::RequestBuilder, started: i64) -> Sent {
    let clock = std::time::Instant::now();
    let answer = request.send().await;
    let (status_code, response) = match answer {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let mut kept = Vec::new();
            while kept.len() < KEEP_BYTES {
                match r.chunk().await {
                    Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            kept.truncate(KEEP_BYTES);
            (Some(status), String::from_utf8_lossy(&kept).into_owned())
        }
        Err(err) => (None, describe(&err)),
    };
    Sent {
        started_at: started,
        latency_ms: clock.elapsed().as_millis() as i64,
        status_code,
        response,
    }
}

/// Why a request got no answer, in a few words (with the resolver's refusal, if that was it).
fn describe(err: &reqwest::Error) -> String {
    let mut why = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.to_string().contains("non-public") {
            why = format!("refused: {s}");
        }
        source = s.source();
    }
    why
}

/// The `webhook-signature` header's value: `v1,<signature>` per secret, space-separated.
pub fn sign(secrets: &[&str], message_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|secret| {
            let key = B64
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .unwrap_or_default();
            // HMAC takes a key of any length.
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
            mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The client: no redirects, no proxy, the attempt's time limit, and a resolver that drops
/// non-public addresses unless they are allowed.
fn client(c: &MerchantWebhooks) -> reqwest::Result<reqwest::Client> {
    let timeout = Duration::from_millis(c.timeout.ms());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the target itself, past the guard.
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("fulfilld-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(Guarded {
            allow_private: c.allow_private,
        }))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_specification_does() {
        // The Standard Webhooks specification's own example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let got = sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = sign(
            &[secret, secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert_eq!(two, format!("{got} {got}"));
    }
}
