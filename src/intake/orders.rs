//! `GET /api/products` (the catalogue, for a shop's page), `POST /api/orders` (the server
//! prices the order, and answers the order's buyer token once) and `GET /api/orders/{id}`
//! (what a success page polls).
//!
//! `GET /api/orders/{id}` answers by proof, as Stripe answers a PaymentIntent to a
//! publishable key only with its `client_secret`:
//! - no proof: `id`, `status` and `waiting_on`, enough for a success page to poll;
//! - a proof (the buyer token as `X-Buyer-Token`, or the provider's redirect proof in the
//!   query, see `proof`): also the lines, totals, the payment's provider and status, each
//!   step's kind and status, the refunds, and `links`: where to activate access once paid, and
//!   the order's invoice and credit notes (`GET /api/orders/{id}/documents/{doc}`, HTML,
//!   answered to the same proofs, as Stripe links a paid invoice's `hosted_invoice_url`);
//! - the admin token (`Authorization: Bearer`): everything, with the buyer's email, the
//!   provider's ids and the steps' errors.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::proof::{self, Carried};
use super::{ApiError, Param};
use crate::Engine;
use crate::domain::{
    Currency, EmailAddress, Invalid, OrderId, Sku, new_secret, parse_qty, token_hash,
};
use crate::domain::{OrderStatus, StepStatus};

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
    let buyer_token = new_secret("bt");
    let order = e
        .store
        .create_order(&email, &lines, &token_hash(&buyer_token))
        .await??;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": order.id,
            "status": order.status,
            "total_minor": order.total_minor,
            "currency": order.currency,
            // Answered once, here: only its hash is kept. The page that made the order keeps
            // it (the reference checkout: in localStorage) to read the order and activate
            // its access.
            "buyer_token": buyer_token,
        })),
    ))
}

/// Who is reading an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reader {
    Anyone,
    Buyer,
    Admin,
}

async fn reader(
    e: &Engine,
    headers: &HeaderMap,
    query: Option<&str>,
    id: &OrderId,
) -> Result<Reader, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        // A wrong admin token is an error, not a quiet downgrade.
        crate::admin::authorize(e, headers)?;
        return Ok(Reader::Admin);
    }
    let carried = Carried::from_request(headers, query)?;
    let Some(proof) = carried.proof() else {
        return Ok(Reader::Anyone);
    };
    proof::check(e, id, proof).await?;
    Ok(Reader::Buyer)
}

async fn show(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Param(id): Param<String>,
) -> Result<Json<Value>, ApiError> {
    let id = OrderId::parse("id", &id)?;
    let order = e
        .store
        .get_order(id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let who = reader(&e, &headers, query.as_deref(), &id).await?;
    let steps = e.store.order_steps(id.as_str()).await?;
    let unfinished = steps.iter().find(|s| !s.status.finished());
    // A refunded order still sends its refund notice: waiting_on is null only when nothing
    // is left to do.
    let waiting_on = match (unfinished, order.status) {
        // A human closed it: nothing more will run.
        (_, OrderStatus::Resolved) => None,
        // The capture check waits on the provider's settlement (a PayPal capture held
        // PENDING): say so, so the success page can tell the buyer to wait days, not seconds.
        (Some(step), _)
            if step.kind == "confirm_capture"
                && step.status == StepStatus::Pending
                && step
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("waiting: awaiting settlement")) =>
        {
            Some("settlement".to_owned())
        }
        (Some(step), _) => Some(step.kind.clone()),
        (None, OrderStatus::Created | OrderStatus::PendingPayment) => Some("payment".to_owned()),
        (None, _) => None,
    };
    if who == Reader::Anyone {
        return Ok(Json(json!({
            "id": order.id,
            "status": order.status,
            "waiting_on": waiting_on,
        })));
    }
    let admin = who == Reader::Admin;
    let items = e.store.order_items(id.as_str()).await?;
    let payment = e.store.latest_payment(id.as_str()).await?;
    let refunds: Vec<Value> = e
        .store
        .order_refunds(id.as_str())
        .await?
        .iter()
        .map(|(r, cn)| {
            if admin {
                crate::admin::refund_json(r, cn.as_deref())
            } else {
                json!({
                    "amount_minor": r.amount_minor,
                    "currency": r.currency,
                    "status": r.status,
                    "credit_note_number": cn,
                })
            }
        })
        .collect();
    let mut body = json!({
        "id": order.id,
        "status": order.status,
        "total_minor": order.total_minor,
        "currency": order.currency,
        "items": items,
        "payment": payment.map(|p| {
            let mut v = json!({
                "provider": p.provider,
                "status": p.status,
                "amount_minor": p.amount_minor,
                "currency": p.currency,
            });
            if admin {
                v["id"] = json!(p.id);
                v["provider_order_id"] = json!(p.provider_order_id);
            }
            v
        }),
        "steps": steps.iter().map(|s| {
            let mut v = json!({ "kind": s.kind, "status": s.status });
            if admin {
                v["id"] = json!(s.id);
                v["attempts"] = json!(s.attempts);
                v["outcome"] = json!(s.outcome);
                v["last_error"] = json!(s.last_error);
            }
            v
        }).collect::<Vec<_>>(),
        "refunds": refunds,
        "waiting_on": waiting_on,
        "links": links(&e, &order.id, order.status).await?,
    });
    if admin {
        body["customer_email"] = json!(order.customer_email);
    }
    Ok(Json(body))
}

/// Where a proven reader goes next: `activate` once the order is paid, and each invoice and
/// credit note. The document links carry no proof: the reader sends the one it read the order
/// with.
async fn links(e: &Engine, order_id: &str, status: OrderStatus) -> Result<Value, ApiError> {
    let (invoices, credit_notes) = e.store.order_documents(order_id).await?;
    let href = |doc: &str| format!("/api/orders/{order_id}/documents/{doc}");
    let paid = status.is_paid();
    Ok(json!({
        "activate": paid.then_some("/api/entitlements/activate"),
        "invoice": invoices.first().map(|d| json!({ "number": d.number, "href": href(&d.id) })),
        "credit_notes": credit_notes
            .iter()
            .map(|d| json!({ "number": d.number, "href": href(&d.id) }))
            .collect::<Vec<_>>(),
    }))
}

/// `GET /api/orders/{id}/documents/{doc}`: an invoice's or credit note's HTML, to the order's
/// buyer (either proof) or an admin. Served so that it can only be looked at: no script, no
/// fetch, no framing, not cached, and the address (which may carry a proof) is not passed on.
async fn document(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    Param((id, doc)): Param<(String, String)>,
) -> Result<Response, ApiError> {
    let id = OrderId::parse("id", &id)?;
    if e.store.get_order(id.as_str()).await?.is_none() {
        return Err(ApiError::not_found("order"));
    }
    if reader(&e, &headers, query.as_deref(), &id).await? == Reader::Anyone {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "proof_required",
            "send X-Buyer-Token, or the provider's proof in the query (see GET /api/orders/{id})",
        ));
    }
    // Ids are ours (`inv_…`, `cn_…`): anything else names no document.
    let html = if doc.len() <= 64 && doc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        e.store.document_html(id.as_str(), &doc).await?
    } else {
        None
    };
    let html = html.ok_or_else(|| ApiError::not_found("document"))?;
    let mut r = html.into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox",
        ),
        (header::CACHE_CONTROL, "private, no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    Ok(r)
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
                // Digits of the currency's minor unit (ISO 4217), to show the price.
                "decimals": Currency::parse("currency", &k.currency).map_or(2, |c| c.exponent()),
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
        .route("/api/orders/{id}/documents/{doc}", get(document))
}
