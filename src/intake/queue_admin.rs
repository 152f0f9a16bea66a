//! Admin API for the queue and its dead letters (bearer token): list dead steps (by kind and
//! age), retry one or every one matching a filter — the pipeline resumes where it stopped —
//! or discard one with a reason; read a step's attempt history; empty the queue's wake-ups
//! (the sweeper sends every due step again). Every action is audited with its actor
//! (`X-Fulfilld-Actor`, else "admin"), time and reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use jobs::{StepKind, Wake};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ApiError;
use super::admin::authorize;
use crate::Engine;
use crate::domain::Invalid;
use crate::store::dead_letters::Filter;
use crate::store::steps;

/// Dead steps acted on at once, at most.
const MAX_BATCH: i64 = 1_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterParams {
    kind: Option<String>,
    /// Dead for at least this many seconds.
    older_than_secs: Option<i64>,
    limit: Option<i64>,
    /// For actions: why (kept in the audit log).
    reason: Option<String>,
}

impl FilterParams {
    fn filter(&self) -> Result<Filter, ApiError> {
        let kind = match &self.kind {
            None => None,
            Some(k) => Some(StepKind::parse(k).ok_or_else(|| {
                Invalid::new(
                    "kind",
                    format!(
                        "no step kind {k:?}; known: {}",
                        StepKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                )
            })?),
        };
        if self.older_than_secs.is_some_and(|s| s < 0) {
            return Err(Invalid::new("older_than_secs", "must not be negative").into());
        }
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_BATCH).contains(&limit) {
            return Err(Invalid::new("limit", format!("must be 1-{MAX_BATCH}")).into());
        }
        Ok(Filter {
            kind,
            older_than_ms: self.older_than_secs.map(|s| s.saturating_mul(1000)),
            limit,
        })
    }
}

/// Who is acting: `X-Fulfilld-Actor` (an operator's name or a tool's), else "admin".
pub(super) fn actor(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get("x-fulfilld-actor") else {
        return Ok("admin".to_owned());
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 100 => Ok(s.trim().to_owned()),
        _ => Err(Invalid::new("X-Fulfilld-Actor", "must be 1-100 visible ASCII characters").into()),
    }
}

/// The start of every admin action: the token checked, who acts, and its JSON body (which
/// may be left out).
pub(super) fn admin_action<T: DeserializeOwned + Default>(
    e: &Engine,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(String, T), ApiError> {
    authorize(e, headers)?;
    Ok((actor(headers)?, optional_body(body)?))
}

/// A numeric id in the path, or a 422 that says it is not one.
pub(super) fn id_param(p: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|_| Invalid::new("id", "must be a number").into())
}

/// Query parameters, or a 422 that says which one is wrong.
pub(super) fn query<T>(
    params: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    params.map(|Query(p)| p).map_err(|r| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            r.body_text(),
        )
    })
}

/// A JSON body that may be left out entirely.
fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            e.to_string(),
        )
    })
}

fn reason(r: &Option<String>, required: bool) -> Result<Option<String>, ApiError> {
    match r.as_deref().map(str::trim) {
        Some(s) if s.len() > 1_000 => {
            Err(Invalid::new("reason", "must be at most 1000 characters").into())
        }
        Some(s) if !s.is_empty() => Ok(Some(s.to_owned())),
        _ if required => Err(Invalid::new("reason", "say why (kept in the audit log)").into()),
        _ => Ok(None),
    }
}

async fn list(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    params: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&e, &headers)?;
    let p = query(params)?;
    let dead = e.store.dead_steps(&p.filter()?).await?;
    Ok(Json(json!({ "dead": dead })))
}

async fn retry_matching(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (who, p): (String, FilterParams) = admin_action(&e, &headers, &body)?;
    let why = reason(&p.reason, false)?;
    let dead = e.store.dead_steps(&p.filter()?).await?;
    let mut retried = Vec::with_capacity(dead.len());
    for d in dead {
        if let Some(r) = e.store.retry_dead(d.id, &who, why.as_deref()).await? {
            retried.push(r);
        }
    }
    let wakes: Vec<Wake> = retried
        .iter()
        .filter_map(|r| steps::wake_of(r.step_id, &r.kind))
        .collect();
    e.queue.wake(&wakes);
    tracing::info!(actor = %who, count = retried.len(), "admin retried dead steps");
    Ok(Json(json!({ "retried": retried })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    reason: Option<String>,
}

async fn retry_one(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (who, a): (String, Action) = admin_action(&e, &headers, &body)?;
    let id = id_param(id)?;
    let why = reason(&a.reason, false)?;
    let r = e
        .store
        .retry_dead(id, &who, why.as_deref())
        .await?
        .ok_or_else(|| not_dead(id))?;
    e.queue.wake(steps::wake_of(id, &r.kind).as_slice());
    tracing::info!(actor = %who, step_id = id, "admin retried a dead step");
    Ok(Json(json!({ "retried": r })))
}

async fn discard_one(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (who, a): (String, Action) = admin_action(&e, &headers, &body)?;
    let id = id_param(id)?;
    let why = reason(&a.reason, true)?.unwrap_or_default();
    if !e.store.discard_dead(id, &who, &why).await? {
        return Err(not_dead(id));
    }
    tracing::info!(actor = %who, step_id = id, "admin discarded a dead step");
    Ok(Json(json!({ "discarded": id })))
}

async fn attempts(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&e, &headers)?;
    let id = id_param(id)?;
    let attempts = e.store.step_attempts(id).await?;
    Ok(Json(json!({ "step_id": id, "attempts": attempts })))
}

/// Drops every wake-up waiting in the queue backend and forgets that they were sent, so the
/// sweeper's next pass sends every due step again: what an operator does when the queue
/// holds wake-ups it should not (or, in a test, to prove that losing them is harmless).
async fn purge(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (who, a): (String, Action) = admin_action(&e, &headers, &body)?;
    let why = reason(&a.reason, false)?;
    let dropped = e.queue.purge().await?;
    let due = e.store.forget_enqueued().await?;
    e.store
        .audit_action(&who, "queue.purge", "queue", why.as_deref())
        .await?;
    tracing::warn!(actor = %who, dropped, due, "admin emptied the queue; the sweeper re-sends due steps");
    Ok(Json(
        json!({ "dropped": dropped, "due_steps_to_resend": due }),
    ))
}

fn not_dead(id: i64) -> ApiError {
    ApiError::conflict(
        "not_dead",
        format!("step {id} is not dead (no such step, or it was retried or discarded already)"),
    )
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/admin/dead-letters", get(list))
        .route("/api/admin/dead-letters/retry", post(retry_matching))
        .route("/api/admin/steps/{id}/retry", post(retry_one))
        .route("/api/admin/steps/{id}/discard", post(discard_one))
        .route("/api/admin/steps/{id}/attempts", get(attempts))
        .route("/api/admin/queue/purge", post(purge))
}
