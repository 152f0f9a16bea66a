//! `GET /api/products` (the catalogue, for a shop's page), `POST /api/orders` (the server
//! prices the order) and `GET /api/orders/{id}` (what a success page polls: status, payment,
//! every step).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::Engine;
use crate::domain::{EmailAddress, Invalid, OrderId, Sku, parse_qty};

#[derive(Debug, Deserialize)]
struct CreateOrder {
    customer_email: String,
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    sku: String,
    qty: i64,
}

async fn create(
    State(e): State<Arc<Engine>>,
    body: Result<Json<CreateOrder>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let email = EmailAddress::parse("customer_email", &b.customer_email)?;
    if b.items.is_empty() {
        return Err(Invalid::new("items", "an order needs at least one item").into());
    }
    if b.items.len() > 100 {
        return Err(Invalid::new("items", "at most 100 lines per order").into());
    }
    let mut lines = Vec::with_capacity(b.items.len());
    for (i, it) in b.items.iter().enumerate() {
        let sku = Sku::parse(&format!("items[{i}].sku"), &it.sku)?;
        let qty = parse_qty(&format!("items[{i}].qty"), it.qty)?;
        lines.push((sku, qty));
    }
    let order = e.store.create_order(&email, &lines).await??;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": order.id,
            "status": order.status,
            "total_minor": order.total_minor,
            "currency": order.currency,
        })),
    ))
}

async fn show(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = OrderId::parse("id", &id)?;
    let order = e
        .store
        .get_order(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let items = e.store.order_items(id.as_str()).await?;
    let payment = e.store.latest_payment(id.as_str()).await?;
    let steps = e.store.order_steps(id.as_str()).await?;
    let refunds: Vec<Value> = e
        .store
        .order_refunds(id.as_str())
        .await?
        .iter()
        .map(|(r, cn)| super::refunds::refund_json(r, cn.as_deref()))
        .collect();
    let unfinished = steps
        .iter()
        .find(|s| s.status != "done" && s.status != "skipped");
    // A refunded order still sends its refund notice: waiting_on is null only when nothing
    // is left to do.
    let waiting_on = match (unfinished, order.status.as_str()) {
        // A human closed it: nothing more will run.
        (_, "resolved") => None,
        (Some(step), _) => Some(step.kind.clone()),
        (None, "created" | "pending_payment") => Some("payment".to_owned()),
        (None, _) => None,
    };
    Ok(Json(json!({
        "id": order.id,
        "status": order.status,
        "customer_email": order.customer_email,
        "total_minor": order.total_minor,
        "currency": order.currency,
        "items": items,
        "payment": payment.map(|p| json!({
            "id": p.id,
            "provider": p.provider,
            "provider_order_id": p.provider_order_id,
            "status": p.status,
            "amount_minor": p.amount_minor,
            "currency": p.currency,
        })),
        "steps": steps.iter().map(|s| json!({
            "id": s.id,
            "kind": s.kind,
            "status": s.status,
            "attempts": s.attempts,
            "outcome": s.outcome,
            "last_error": s.last_error,
        })).collect::<Vec<_>>(),
        "refunds": refunds,
        "waiting_on": waiting_on,
    })))
}

async fn products(State(e): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let skus = e.store.list_skus().await?;
    let products: Vec<Value> = skus
        .iter()
        .map(|k| {
            json!({
                "sku": k.sku,
                "name": k.name,
                "price_minor": k.price_minor,
                "currency": k.currency,
                "available": (k.stock - k.reserved).max(0),
            })
        })
        .collect();
    Ok(Json(json!({ "products": products })))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/products", get(products))
        .route("/api/orders", post(create))
        .route("/api/orders/{id}", get(show))
}
