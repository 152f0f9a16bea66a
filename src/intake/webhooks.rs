//! `POST /webhooks/stripe`: verify the signature on the raw bytes, normalize, store and
//! apply in one transaction, wake the pipeline, answer 200. A bad signature is 400 and
//! stores nothing; a body over the limit is 413; a store that cannot commit is 503 so the
//! provider retries — never 200 for an event we did not keep.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiError;
use crate::Engine;
use crate::providers::stripe;

async fn stripe_webhook(
    State(e): State<Arc<Engine>>,
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
    let cfg = &e.config.providers.stripe;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = crate::domain::now_ms() / 1000;
    stripe::verify(
        header,
        &body,
        &cfg.webhook_secrets,
        cfg.webhook_tolerance_secs,
        now,
    )
    .map_err(|err| {
        tracing::warn!(error = %err, "stripe webhook refused");
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            err.to_string(),
        )
    })?;
    let event = stripe::normalize(&body)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", m))?;
    let recorded = e.store.record_event(&event, &body).await.map_err(|err| {
        tracing::error!(error = %err, event_id = %event.event_id, "could not store webhook");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event could not be stored; retry later",
        )
    })?;
    e.queue.wake(&recorded.wake);
    tracing::info!(event_id = %event.event_id, kind = %event.event_type, outcome = %recorded.outcome, "stripe webhook");
    Ok(Json(
        json!({ "received": true, "duplicate": recorded.duplicate, "outcome": recorded.outcome }),
    ))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/webhooks/stripe", post(stripe_webhook))
}
