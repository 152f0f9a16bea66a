//! Admin API for the queue and its dead letters (bearer token): each step kind's queue at a
//! glance, steps by kind, status or order; list dead steps (by kind and
//! age), retry one or every one matching a filter — the pipeline resumes where it stopped —
//! or discard one with a reason; read a step's attempt history; empty the queue's wake-ups
//! (the sweeper sends every due step again). Every action is audited with its actor
//! (`X-Fulfilld-Actor`, else "admin"), time and reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jobs::{StepKind, Wake};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Actor;
use crate::Engine;
use crate::api::{ApiError, Param};
use crate::domain::Invalid;
use crate::store::dead_letters::Filter;
use crate::store::overview::StepFilter;
use crate::store::steps;

/// Dead steps acted on at once, and rows an admin list answers, at most.
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
        let kind = kind_param(self.kind.as_deref())?;
        if self.older_than_secs.is_some_and(|s| s < 0) {
            return Err(Invalid::new("older_than_secs", "must not be negative").into());
        }
        let limit = limit_param(self.limit)?;
        Ok(Filter {
            kind,
            older_than_ms: self.older_than_secs.map(|s| s.saturating_mul(1000)),
            limit,
        })
    }
}

/// A `kind` filter: none, or a known step kind.
fn kind_param(kind: Option<&str>) -> Result<Option<StepKind>, ApiError> {
    let Some(k) = kind else { return Ok(None) };
    let kind = StepKind::parse(k).ok_or_else(|| {
        Invalid::new(
            "kind",
            format!(
                "no step kind {k:?}; known: {}",
                StepKind::ALL.map(|k| k.as_str()).join(", ")
            ),
        )
    })?;
    Ok(Some(kind))
}

/// `GET /api/admin/queues`: per step kind, how many steps wait, are due, retry, run, are
/// dead and were done in the last hour, and how long the longest-due one has waited.
async fn queues(State(e): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "queues": e.store.queue_overview().await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityParams {
    minutes: Option<i64>,
}

/// `GET /api/admin/activity`: per minute of the last `minutes` (default 60), steps done,
/// step runs failed, webhooks received.
async fn activity(
    State(e): State<Arc<Engine>>,
    params: Result<Query<ActivityParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let minutes = query(params)?.minutes.unwrap_or(60);
    if !(1..=1440).contains(&minutes) {
        return Err(Invalid::new("minutes", "must be 1-1440").into());
    }
    Ok(Json(json!({ "minutes": e.store.activity(minutes).await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepParams {
    kind: Option<String>,
    status: Option<String>,
    order_id: Option<String>,
    /// The next page: steps with a smaller id than this.
    before_id: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/admin/steps`: steps, newest first, by kind, status and order; a page ends with
/// `next_before_id` when there may be more.
async fn list_steps(
    State(e): State<Arc<Engine>>,
    params: Result<Query<StepParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let status = p.status.as_deref().map(str::parse).transpose()?;
    let limit = limit_param(p.limit)?;
    if p.before_id.is_some_and(|b| b < 1) {
        return Err(Invalid::new("before_id", "must be a step id (1 or more)").into());
    }
    let filter = StepFilter {
        kind: kind_param(p.kind.as_deref())?,
        status,
        order_id: p.order_id,
        before_id: p.before_id,
        limit,
    };
    let steps = e.store.list_steps(&filter).await?;
    let next = next_before(&steps, limit, |s| s.id);
    Ok(Json(json!({ "steps": steps, "next_before_id": next })))
}

/// A numeric id in the path, or a 422 that says it is not one.
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

/// An admin list's `limit`: 100 when not given, else 1 to [`MAX_BATCH`].
pub(super) fn limit_param(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_BATCH).contains(&limit) {
        return Err(Invalid::new("limit", format!("must be 1-{MAX_BATCH}")).into());
    }
    Ok(limit)
}

/// A `status` filter: none, or one of `known` (the `what` statuses, named in the error).
pub(super) fn status_param(
    status: Option<&str>,
    what: &str,
    known: &[&str],
) -> Result<(), ApiError> {
    match status {
        Some(s) if !known.contains(&s) => Err(Invalid::new(
            "status",
            format!("no {what} status {s:?}; known: {}", known.join(", ")),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Where the next page of a list starts (`next_before_id`): the last row's id when the page
/// is full, as there may be more.
pub(super) fn next_before<T, K>(rows: &[T], limit: i64, id: impl Fn(&T) -> K) -> Option<K> {
    (rows.len() as i64 == limit)
        .then(|| rows.last().map(id))
        .flatten()
}

/// A JSON body that may be left out entirely.
pub(super) fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
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

pub(super) fn reason(r: &Option<String>, required: bool) -> Result<Option<String>, ApiError> {
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
    params: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let dead = e.store.dead_steps(&p.filter()?).await?;
    Ok(Json(json!({ "dead": dead })))
}

async fn retry_matching(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: FilterParams = optional_body(&body)?;
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
pub(super) struct Action {
    pub(super) reason: Option<String>,
}

async fn retry_one(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<i64>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Action = optional_body(&body)?;
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
    Actor(who): Actor,
    Param(id): Param<i64>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Action = optional_body(&body)?;
    let why = reason(&a.reason, true)?.unwrap_or_default();
    if !e.store.discard_dead(id, &who, &why).await? {
        return Err(not_dead(id));
    }
    tracing::info!(actor = %who, step_id = id, "admin discarded a dead step");
    Ok(Json(json!({ "discarded": id })))
}

async fn attempts(
    State(e): State<Arc<Engine>>,
    Param(id): Param<i64>,
) -> Result<Json<Value>, ApiError> {
    let attempts = e.store.step_attempts(id).await?;
    Ok(Json(json!({ "step_id": id, "attempts": attempts })))
}

/// Drops every wake-up waiting in the queue backend and forgets that they were sent, so the
/// sweeper's next pass sends every due step again: what an operator does when the queue
/// holds wake-ups it should not (or, in a test, to prove that losing them is harmless).
async fn purge(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Action = optional_body(&body)?;
    let why = reason(&a.reason, false)?;
    let dropped = e.queue.purge().await?;
    let due = e.store.forget_enqueued(&who, why.as_deref()).await?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    /// The next page: entries with a smaller id than this.
    before_id: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/admin/audit`: the audit log, newest first, by actor (the admin token's name),
/// action and target; a page ends with `next_before_id` when there may be more.
async fn audit_log(
    State(e): State<Arc<Engine>>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let limit = limit_param(p.limit)?;
    if p.before_id.is_some_and(|b| b < 1) {
        return Err(Invalid::new("before_id", "must be an entry id (1 or more)").into());
    }
    let entries = e
        .store
        .list_audit(&crate::store::audit::AuditFilter {
            actor: p.actor,
            action: p.action,
            target: p.target,
            before_id: p.before_id,
            limit,
        })
        .await?;
    let next = next_before(&entries, limit, |a| a.id);
    Ok(Json(json!({ "entries": entries, "next_before_id": next })))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/audit", get(audit_log))
        .route("/queues", get(queues))
        .route("/activity", get(activity))
        .route("/steps", get(list_steps))
        .route("/dead-letters", get(list))
        .route("/dead-letters/retry", post(retry_matching))
        .route("/steps/{id}/retry", post(retry_one))
        .route("/steps/{id}/discard", post(discard_one))
        .route("/steps/{id}/attempts", get(attempts))
        .route("/queue/purge", post(purge))
}
