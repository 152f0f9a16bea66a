//! Admin API for orders (bearer token): a search by buyer and status; for one order,
//! everything the store holds about it — payments,
//! webhook events, steps with their failed runs, emails, invoice and credit notes,
//! entitlements, refunds, ledger rows, admin actions — and the same as one timeline, oldest
//! first; and the manual actions on it, each audited: resolve an order that needs review,
//! ask the provider about its payment again.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Actor;
use super::queues::{Action, limit_param, next_before, optional_body, query, reason};
use crate::Engine;
use crate::api::{ApiError, Param};
use crate::domain::{EmailAddress, OrderId};
use crate::store::manual::{Rechecked, Resolved};
use crate::store::orders::OrderFilter;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Search {
    email: Option<String>,
    status: Option<String>,
    /// The next page: orders older than this one.
    before_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/admin/orders?email=&status=&before_id=&limit=`: orders newest first; a page
/// ends with `next_before_id` when there may be more.
async fn search(
    State(e): State<Arc<Engine>>,
    params: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let email = match p.email.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(m) => Some(EmailAddress::parse("email", m)?.as_str().to_owned()),
    };
    let status = p.status.as_deref().map(str::parse).transpose()?;
    let before_id = match &p.before_id {
        Some(b) => Some(OrderId::parse("before_id", b)?.as_str().to_owned()),
        None => None,
    };
    let limit = limit_param(p.limit)?;
    let filter = OrderFilter {
        email,
        status,
        before_id,
        limit,
    };
    let orders = e.store.find_orders(&filter).await?;
    let next = next_before(&orders, limit, |o| o.id.clone());
    Ok(Json(json!({ "orders": orders, "next_before_id": next })))
}

async fn show(
    State(e): State<Arc<Engine>>,
    Param(id): Param<String>,
) -> Result<Json<Value>, ApiError> {
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

/// `POST /api/admin/orders/{id}/resolve {"reason"}`: a human closed an order that needs
/// review; its dead steps are discarded and its held stock released.
async fn resolve(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Action = optional_body(&body)?;
    let id = OrderId::parse("id", &id)?;
    let why = reason(&a.reason, true)?.unwrap_or_default();
    match e.store.resolve_order(id.as_str(), &who, &why).await? {
        Resolved::Done { discarded } => {
            tracing::info!(actor = %who, order_id = %id.as_str(), discarded, "admin resolved an order");
            Ok(Json(
                json!({ "resolved": id.as_str(), "discarded_steps": discarded }),
            ))
        }
        Resolved::NotFound => Err(ApiError::not_found("order")),
        Resolved::NotInReview { status } => Err(ApiError::conflict(
            "not_in_review",
            format!("the order is {status}: only an order that needs review can be resolved"),
        )),
    }
}

/// `POST /api/admin/orders/{id}/recheck-payment {"reason"?}`: read the order's latest
/// payment from its provider again and let that answer decide.
async fn recheck_payment(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(id): Param<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a: Action = optional_body(&body)?;
    let id = OrderId::parse("id", &id)?;
    let why = reason(&a.reason, false)?;
    match e
        .store
        .recheck_payment(id.as_str(), &who, why.as_deref())
        .await?
    {
        Rechecked::Armed(wake) => {
            e.queue.wake(&wake);
            tracing::info!(actor = %who, order_id = %id.as_str(), "admin asked for a payment recheck");
            Ok(Json(json!({ "rechecking": id.as_str() })))
        }
        Rechecked::NotFound => Err(ApiError::not_found("order")),
        Rechecked::NoPayment => Err(ApiError::conflict(
            "no_payment",
            "the order has no payment to check yet",
        )),
    }
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/orders", get(search))
        .route("/orders/{id}", get(show))
        .route("/orders/{id}/resolve", post(resolve))
        .route("/orders/{id}/recheck-payment", post(recheck_payment))
}
