//! Admin API for stored webhook events (bearer token): list them, and replay one by id.
//!
//! Replay verifies the stored raw body again with the headers it came with, as of the time
//! it was received (so a signature's age limit does not refuse an old event, but a body
//! altered since does), then applies it through the same path as when it arrived. That path
//! is idempotent: replaying an event that was applied changes nothing, and the answer says
//! so (`changed: false`). `{"dry_run": true}` does all of it in a transaction that is rolled
//! back, and lists the transitions and steps the replay would cause.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Actor;
use super::queues::{limit_param, optional_body, query};
use crate::Engine;
use crate::api::{ApiError, Param};
use crate::providers::headers_from_kept;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    provider: Option<String>,
    /// Only the events kept but not applied (unreadable, failing, signed but senseless).
    parked: Option<bool>,
    limit: Option<i64>,
}

async fn list(
    State(e): State<Arc<Engine>>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let limit = limit_param(p.limit)?;
    let events = e
        .store
        .recent_events(p.provider.as_deref(), p.parked.unwrap_or(false), limit)
        .await?;
    Ok(Json(json!({ "events": events })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    dry_run: bool,
}

async fn replay(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<i64>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: ReplayBody = optional_body(&body)?;
    let stored = e
        .store
        .get_event(id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let provider = e
        .providers
        .get("provider", &stored.provider)
        .map_err(|err| {
            ApiError::conflict(
                "provider_not_configured",
                format!("the event's provider is not enabled: {err}"),
            )
        })?;
    let original = headers_from_kept(stored.headers.as_deref().unwrap_or("{}"));
    let backfilled = original
        .get(crate::store::events::SOURCE_HEADER)
        .is_some_and(|v| v == "backfill");
    let event = if backfilled {
        // Read back from the provider's API by reconciliation, never signed: read as stored.
        provider
            .read_stored(&original, &stored.raw_body)
            .map_err(|m| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unreadable_event",
                    format!("the stored event does not read: {m}"),
                )
            })?
    } else {
        provider
            .webhook(&original, &stored.raw_body, stored.received_at / 1000)
            .await
            .map_err(|err| {
                let mut api = ApiError::from(err);
                if api.status == StatusCode::BAD_REQUEST {
                    api.status = StatusCode::UNPROCESSABLE_ENTITY;
                    api.message = format!("the stored event does not verify: {}", api.message);
                }
                api
            })?
    };
    let replayed = crate::core::events::replay(
        &e.store,
        &stored,
        &event,
        b.dry_run,
        e.config.refunds.restock,
        &who,
    )
    .await?;
    e.queue.wake(&replayed.wake);
    tracing::info!(actor = %who, event = id, dry_run = b.dry_run, changed = replayed.changed,
        outcome = %replayed.outcome, "admin replayed a webhook event");
    Ok(Json(json!({ "event": stored, "replay": replayed })))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/events", get(list))
        .route("/events/{id}/replay", post(replay))
}
