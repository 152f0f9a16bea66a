//! Admin API for webhooks to the merchant's systems (bearer token): endpoints — each a URL,
//! the event types it takes (or `*`), its signing secret (shown when made and at `…/secret`)
//! and whether it is enabled — and the log of deliveries, each with every attempt's status,
//! latency and the start of the answer, and a retry for a dead one. Every change is audited.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Actor;
use super::queues::{Action, limit_param, next_before, optional_body, query, reason, status_param};
use crate::Engine;
use crate::api::{ApiError, Param};
use crate::domain::{Invalid, parse_duration_ms};
use crate::outbound::guard;
use crate::store::merchant::{
    DELIVERY_STATUSES, DeliveryFilter, Endpoint, EndpointChange, stored_types,
};

/// An endpoint as the API shows it (never its secrets).
fn endpoint_json(ep: &Endpoint) -> Value {
    let mut v = serde_json::to_value(ep).unwrap_or(Value::Null);
    v["event_types"] = json!(ep.types());
    v["enabled"] = json!(ep.is_enabled());
    v
}

/// A URL the engine may send to (see `outbound::guard`), as a 422 otherwise.
fn checked_url(e: &Engine, url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    if url.len() > 2_000 {
        return Err(Invalid::new("url", "must be at most 2000 characters").into());
    }
    guard(&e.config.merchant_webhooks.reach(), url).map_err(|why| Invalid::new("url", why))?;
    Ok(url.to_owned())
}

/// The event types, as stored ([`stored_types`]), as a 422 otherwise.
fn checked_types(types: &[String]) -> Result<String, ApiError> {
    stored_types(types).map_err(|why| Invalid::new("event_types", why).into())
}

fn description(d: &Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.len() > 500 => {
            Err(Invalid::new("description", "must be at most 500 characters").into())
        }
        Some(d) => Ok(Some(d.trim().to_owned())),
        None => Ok(None),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    event_types: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

/// `POST /api/admin/webhook-endpoints`: 201 the endpoint, with its `secret` (this once).
async fn create(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    body: Result<Json<NewEndpoint>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let url = checked_url(&e, &b.url)?;
    let types = checked_types(&b.event_types)?;
    let description = description(&b.description)?.unwrap_or_default();
    let (ep, secret) = e
        .store
        .create_endpoint(&url, &description, &types, &who)
        .await?;
    tracing::info!(actor = %who, endpoint_id = %ep.id, "admin added a merchant endpoint");
    let mut v = endpoint_json(&ep);
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

async fn list(State(e): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let endpoints: Vec<Value> = e
        .store
        .endpoints()
        .await?
        .iter()
        .map(endpoint_json)
        .collect();
    Ok(Json(json!({ "endpoints": endpoints })))
}

async fn show(
    State(e): State<Arc<Engine>>,
    Param(id): Param<String>,
) -> Result<Json<Value>, ApiError> {
    let ep = e
        .store
        .endpoint(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    Ok(Json(endpoint_json(&ep)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    enabled: Option<bool>,
}

/// `PATCH /api/admin/webhook-endpoints/{id}`: change what is given; `"enabled": true`
/// enables an endpoint again (disabled by an admin or for failing) with its failures
/// forgotten.
async fn change(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c: Change = optional_body(&body)?;
    let change = EndpointChange {
        url: c.url.as_deref().map(|u| checked_url(&e, u)).transpose()?,
        event_types: c.event_types.as_deref().map(checked_types).transpose()?,
        description: description(&c.description)?,
        enabled: c.enabled,
    };
    let ep = e
        .store
        .change_endpoint(&id, &change, &who)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    tracing::info!(actor = %who, endpoint_id = %id, enabled = ep.is_enabled(), "admin changed a merchant endpoint");
    Ok(Json(endpoint_json(&ep)))
}

/// `GET /api/admin/webhook-endpoints/{id}/secret`: the secrets that sign now.
async fn secret(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<String>,
) -> Result<Json<Value>, ApiError> {
    let s = e
        .store
        .endpoint_secrets(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    // Recorded before the secret is answered: no read of it goes unaudited.
    e.store
        .audit_action(&who, "endpoint.read_secret", &id, None)
        .await?;
    let previous = s.previous(crate::clock::now_ms());
    Ok(Json(json!({
        "secret": s.secret,
        "previous_secret": previous.map(|(p, _)| p),
        "previous_secret_until": previous.map(|(_, until)| until),
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the secret it replaces still signs (default 24h).
    grace: Option<String>,
}

/// `POST /api/admin/webhook-endpoints/{id}/rotate-secret {"grace"?}`: a new secret; the old
/// one signs too until the grace ends, so receivers can switch without losing a message.
async fn rotate(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let r: Rotate = optional_body(&body)?;
    let grace = parse_duration_ms("grace", r.grace.as_deref().unwrap_or("24h"))?;
    if grace > 30 * 86_400_000 {
        return Err(Invalid::new("grace", "must be at most 30d").into());
    }
    let secret = e
        .store
        .rotate_secret(&id, grace as i64, &who)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    tracing::info!(actor = %who, endpoint_id = %id, "admin rotated a merchant endpoint's secret");
    Ok(Json(json!({
        "secret": secret,
        "previous_secret_until": crate::clock::now_ms() + grace as i64,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryParams {
    endpoint_id: Option<String>,
    status: Option<String>,
    order_id: Option<String>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/admin/webhook-deliveries`: newest first; `next_before_id` when there may be
/// more.
async fn deliveries(
    State(e): State<Arc<Engine>>,
    params: Result<Query<DeliveryParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    status_param(p.status.as_deref(), "delivery", &DELIVERY_STATUSES)?;
    let limit = limit_param(p.limit)?;
    let filter = DeliveryFilter {
        endpoint_id: p.endpoint_id,
        status: p.status,
        order_id: p.order_id,
        before_id: p.before_id,
        limit,
    };
    let list = e.store.deliveries(&filter).await?;
    let next = next_before(&list, limit, |d| d.id);
    Ok(Json(json!({ "deliveries": list, "next_before_id": next })))
}

/// `GET /api/admin/webhook-deliveries/{id}`: the delivery, its payload and its attempts.
async fn delivery(
    State(e): State<Arc<Engine>>,
    Param(id): Param<i64>,
) -> Result<Json<Value>, ApiError> {
    let (d, attempts) = e
        .store
        .delivery(id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let mut v = serde_json::to_value(&d).unwrap_or(Value::Null);
    v["payload"] = serde_json::from_str(&d.payload).unwrap_or(Value::Null);
    v["attempt_log"] = json!(attempts);
    Ok(Json(v))
}

/// `POST /api/admin/webhook-deliveries/{id}/retry {"reason"?}`: a dead delivery is sent again
/// now, with the whole schedule ahead of it.
async fn retry(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<i64>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Action = optional_body(&body)?;
    let why = reason(&a.reason, false)?;
    if !e.store.retry_delivery(id, &who, why.as_deref()).await? {
        return Err(match e.store.delivery(id).await? {
            None => ApiError::not_found("delivery"),
            Some((d, _)) => ApiError::conflict(
                "not_dead",
                format!(
                    "delivery {id} is {}: only a dead one can be retried",
                    d.status
                ),
            ),
        });
    }
    tracing::info!(actor = %who, delivery_id = id, "admin retried a merchant webhook");
    Ok(Json(json!({ "retried": id })))
}

pub fn router() -> Router<Arc<Engine>> {
    use axum::routing::patch;
    // One method per call: the OpenAPI test reads the routes from these lines.
    Router::new()
        .route("/webhook-endpoints", post(create))
        .route("/webhook-endpoints", get(list))
        .route("/webhook-endpoints/{id}", get(show))
        .route("/webhook-endpoints/{id}", patch(change))
        .route("/webhook-endpoints/{id}/secret", get(secret))
        .route("/webhook-endpoints/{id}/rotate-secret", post(rotate))
        .route("/webhook-deliveries", get(deliveries))
        .route("/webhook-deliveries/{id}", get(delivery))
        .route("/webhook-deliveries/{id}/retry", post(retry))
}
