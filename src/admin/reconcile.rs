//! Admin API for reconciliation (bearer token): `POST /api/admin/reconcile`
//! `{"since": "24h"}` runs one now and answers with its report (what was backfilled,
//! repaired, and what needs review); `GET /api/admin/reconciliations` lists recent runs with
//! their reports. `fulfilld admin reconcile --since …` is this call from the command line.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Actor;
use crate::Engine;
use crate::api::ApiError;
use crate::background::reconciliation;
use crate::clock::now_ms;
use crate::domain::parse_since;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    /// An age (`24h`, `7d`) or Unix seconds.
    since: String,
}

async fn reconcile(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    body: Result<Json<ReconcileBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body?;
    let since = parse_since("since", &b.since, now_ms() / 1000)?;
    let report = reconciliation::run(&e, since, &format!("admin:{who}"), None)
        .await?
        .ok_or_else(|| ApiError::internal("an on-demand run found its slot taken"))?;
    Ok(Json(json!({ "report": report })))
}

async fn list(State(e): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let runs: Vec<Value> = e
        .store
        .reconciliations(50)
        .await?
        .into_iter()
        .map(|r| {
            let report = r
                .report
                .as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok());
            json!({
                "id": r.id,
                "trigger": r.trigger,
                "since_s": r.since_s,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "report": report,
            })
        })
        .collect();
    Ok(Json(json!({ "reconciliations": runs })))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/reconcile", post(reconcile))
        .route("/reconciliations", get(list))
}
