//! Admin API for one order (bearer token): everything the store holds about it — payments,
//! webhook events, steps with their failed runs, emails, invoice and credit notes,
//! entitlements, refunds, ledger rows, admin actions — and the same as one timeline, oldest
//! first.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiError;
use super::admin::authorize;
use crate::Engine;
use crate::domain::OrderId;

async fn show(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&e, &headers)?;
    let id = OrderId::parse("id", &id)?;
    let record = e
        .store
        .order_record(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let timeline = record.timeline();
    let mut body = serde_json::to_value(&record)
        .map_err(|err| ApiError::internal(format_args!("order record: {err}")))?;
    body["timeline"] = json!(timeline);
    Ok(Json(body))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/api/admin/orders/{id}", get(show))
}
