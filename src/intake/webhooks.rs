//! `POST /webhooks/{provider}`: the provider verifies the webhook on the raw bytes and
//! normalizes it; the event is appended to the store (a duplicate is known here: its id was
//! stored before) and the provider gets 200 once that commit is durable. The event applier
//! (`applier`) applies it right after, outside the request. A bad signature is 400 and
//! stores nothing; a body over the limit is 413; a store that cannot commit is 503 so the
//! provider retries — never 200 for an event we did not keep.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, Param, limits};
use crate::Engine;
use crate::providers::{VerifyCost, WebhookError};

async fn webhook(
    State(e): State<Arc<Engine>>,
    Param(provider): Param<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let provider = match e.providers.get("provider", &provider) {
        Ok(p) => p,
        Err(err) => {
            return ApiError::new(StatusCode::NOT_FOUND, "unknown_provider", err.to_string())
                .into_response();
        }
    };
    let m = &e.metrics;
    let name = provider.name();
    let label = crate::metrics::ProviderLabel {
        provider: name.to_owned(),
    };
    m.webhooks_received.get_or_create(&label).inc();
    let rejected = |reason: &str| {
        m.webhooks_rejected
            .get_or_create(&crate::metrics::RejectedLabels {
                provider: name.to_owned(),
                reason: reason.to_owned(),
            })
            .inc()
    };
    // A signature that checks on its own bytes (an HMAC, or a key already cached) is always
    // checked: no budget, however spent and by whoever claims this address, can turn a
    // genuine webhook away. Only verification that fetches what the sender names (a PayPal
    // certificate) or asks the provider's API is gated by the sender's forged-webhook
    // budget, which every failed verification spends too.
    let who = limits::client(&e, &headers, peer.map(|c| c.0.0));
    let gate = match provider.verification_cost(&headers) {
        VerifyCost::Local => Ok(()),
        VerifyCost::Fetch => e.limits.forged.take(who),
        VerifyCost::Remote => e.limits.forged.check(who),
    };
    if let Err(wait) = gate {
        rejected("rate_limited");
        return limits::too_many(wait, "webhooks failing verification");
    }
    let answer = receive(&e, provider, headers, body).await;
    match &answer {
        Ok(Json(a)) if a["duplicate"] == true => m.webhooks_duplicate.get_or_create(&label).inc(),
        Ok(_) => m.webhooks_accepted.get_or_create(&label).inc(),
        Err(err) => {
            if err.code == "invalid_signature" {
                let _ = e.limits.forged.take(who);
            }
            rejected(err.code)
        }
    };
    answer.into_response()
}

/// A webhook for a configured provider: verified, normalized and appended.
async fn receive(
    e: &Engine,
    provider: &dyn crate::providers::Provider,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "webhook bodies are limited to {} bytes",
                    e.config.http.max_body_bytes
                ),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", r.body_text())
        }
    })?;
    let now = crate::clock::now_ms() / 1000;
    let event = match provider.webhook(&headers, &body, now).await {
        Ok(ev) => ev,
        // Signed, but not an event we can read: kept and answered 200 all the same (a
        // provider refused would retry for days, then disable the endpoint). The applier
        // cannot read it either and gives it the reason as its outcome; an admin replays it
        // once a fix is deployed.
        Err(WebhookError::Malformed(why)) => {
            tracing::error!(provider = provider.name(), error = %why, "a signed webhook cannot be read; kept, not applied");
            unreadable(provider.name(), &body)
        }
        Err(err) => {
            tracing::warn!(provider = provider.name(), error = %err, "webhook refused");
            return Err(ApiError::from(err));
        }
    };
    if let Some(id) = provider.transmission_id(&headers) {
        let taken = e
            .store
            .take_transmission(provider.name(), id, &crate::domain::body_sha256(&body))
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "could not take the transmission id");
                store_unavailable()
            })?;
        if taken == crate::store::events::Transmission::Reused {
            tracing::warn!(
                provider = provider.name(),
                transmission_id = id,
                "a signed transmission came again with another body"
            );
            return Err(ApiError::from(WebhookError::Signature(
                "this transmission id was already used with another body".into(),
            )));
        }
    }
    let (event_id, event_type) = (event.event_id.clone(), event.event_type.clone());
    let duplicate = e
        .events
        .append(
            event,
            body.to_vec(),
            crate::providers::kept_headers(&headers),
        )
        .await
        .map_err(|err| {
            tracing::error!(error = %err, %event_id, "could not store webhook");
            store_unavailable()
        })?;
    tracing::info!(
        provider = provider.name(), %event_id, kind = %event_type, duplicate, "webhook"
    );
    Ok(Json(json!({ "received": true, "duplicate": duplicate })))
}

/// A signed event that could not be read, as stored: known by its body's hash (a retry of
/// the same delivery is a duplicate), about nothing until it can be read.
fn unreadable(provider: &'static str, body: &[u8]) -> crate::providers::ProviderEvent {
    crate::providers::ProviderEvent {
        provider,
        event_id: format!("unreadable_{}", &crate::domain::body_sha256(body)[..32]),
        event_type: "unreadable".into(),
        provider_order_id: None,
        provider_payment_id: None,
        payment_ref: None,
        change: crate::providers::PaymentChange::Ignored,
    }
}

/// 503 for a webhook the store could not take: the provider delivers it again.
fn store_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the event could not be stored; retry later",
    )
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/webhooks/{provider}", post(webhook))
}
