//! `POST /api/payments/refund` (admin token): refund an order in whole or in part through
//! its provider.
//!
//! Body: `{"order_id", "amount_minor"?, "reason"?, "restock"?}` — no amount refunds what is
//! left; `restock` (default `refunds.restock`) returns the stock once the order is refunded
//! in full. An `Idempotency-Key` header makes a repeated request (a timeout, a double click)
//! return the first one's refund; the same key with a different body is refused.
//!
//! The refund is recorded as `requested` before the provider is called, with our refund id
//! as the provider's idempotency key and in its metadata. If the provider cannot be reached
//! the answer is 503 and the refund stays `requested`, still counted against what can be
//! refunded: repeating the request with the same key finishes it. 201 means the provider
//! accepted the refund and its effects (credit note, ledger, order status, revocation,
//! stock) are committed.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::admin::authorize;
use crate::Engine;
use crate::domain::{Invalid, OrderId};
use crate::providers::RefundRequest;
use crate::store::refunds::{NewRefund, RefundRow, Requested};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    order_id: String,
    #[serde(default)]
    amount_minor: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    restock: Option<bool>,
}

/// A refund as the API shows it.
pub fn refund_json(r: &RefundRow, credit_note: Option<&str>) -> Value {
    json!({
        "id": r.id,
        "order_id": r.order_id,
        "payment_id": r.payment_id,
        "provider": r.provider,
        "provider_refund_id": r.provider_refund_id,
        "amount_minor": r.amount_minor,
        "currency": r.currency,
        "reason": r.reason,
        "source": r.source,
        "status": r.status,
        "restock": r.restock == 1,
        "applied": r.applied_at.is_some(),
        "credit_note_number": credit_note,
        "last_error": r.last_error,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Invalid> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| Invalid::new("Idempotency-Key", "must be 1-255 visible ASCII characters"))
}

async fn refund(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Result<Json<RefundBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&e, &headers)?;
    let Json(b) = body?;
    let order_id = OrderId::parse("order_id", &b.order_id)?;
    if b.amount_minor.is_some_and(|a| a <= 0) {
        return Err(
            Invalid::new("amount_minor", "must be a positive number of minor units").into(),
        );
    }
    let reason = b
        .reason
        .as_deref()
        .map(str::trim)
        .unwrap_or("requested_by_customer");
    if reason.is_empty() || reason.len() > 200 {
        return Err(Invalid::new("reason", "must be 1-200 characters").into());
    }
    let key = idempotency_key(&headers)?;
    let asked = NewRefund {
        order_id: order_id.as_str(),
        amount_minor: b.amount_minor,
        reason,
        restock: b.restock.unwrap_or(e.config.refunds.restock),
        idempotency_key: key.as_deref(),
    };
    let (row, payment) = match e.store.request_refund(&asked).await? {
        Requested::Call(row, payment) => (row, payment),
        Requested::Done(row) => {
            let cn = credit_note_of(&e, &row).await?;
            return Ok((StatusCode::OK, Json(refund_json(&row, cn.as_deref()))));
        }
        Requested::KeyReused => {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was sent with a different refund request",
            ));
        }
        Requested::OrderNotFound => return Err(ApiError::not_found("order")),
        Requested::NotRefundable { status } => {
            return Err(ApiError::conflict(
                "not_refundable",
                format!(
                    "the order is {status}: only a fulfilled order, or one stopped for review with its payment captured, can be refunded"
                ),
            ));
        }
        Requested::FullyRefunded => {
            return Err(ApiError::conflict(
                "already_refunded",
                "the order's payment is refunded in full already",
            ));
        }
        Requested::TooMuch { refundable } => {
            return Err(Invalid::new(
                "amount_minor",
                format!("at most {refundable} minor units can still be refunded"),
            )
            .into());
        }
    };
    let provider = e
        .providers
        .get("provider", &payment.provider)
        .map_err(ApiError::internal)?;
    let req = RefundRequest {
        refund_id: &row.id,
        payment_id: &payment.id,
        amount_minor: row.amount_minor,
        currency: &row.currency,
        idempotency_key: &format!("fulfilld-refund:{}", row.id),
    };
    match provider.refund(&payment.provider_ref(), &req).await {
        Ok(r) => {
            let (row, wake) = e.store.refund_answered(&row.id, &r.id, r.failed()).await?;
            e.queue.wake(&wake);
            if row.status == "failed" {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "refund_failed",
                    format!("{} refused the refund ({})", payment.provider, r.status),
                ));
            }
            let cn = credit_note_of(&e, &row).await?;
            tracing::info!(order_id = %row.order_id, refund_id = %row.id, amount_minor = row.amount_minor, "refunded");
            Ok((StatusCode::CREATED, Json(refund_json(&row, cn.as_deref()))))
        }
        Err(err) => {
            let transient = err.is_transient();
            let row = e
                .store
                .refund_call_failed(&row.id, &err.to_string(), !transient)
                .await?;
            if row.status == "succeeded" {
                // The answer was lost, but the provider's refund event arrived and was
                // applied: the refund is made.
                let cn = credit_note_of(&e, &row).await?;
                return Ok((StatusCode::CREATED, Json(refund_json(&row, cn.as_deref()))));
            }
            tracing::warn!(refund_id = %row.id, error = %err, transient, "refund call failed");
            if transient {
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "provider_unavailable",
                    format!(
                        "{err}; refund {} is recorded as requested: repeat the request with the same Idempotency-Key to finish it",
                        row.id
                    ),
                ))
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "refund_failed",
                    err.to_string(),
                ))
            }
        }
    }
}

async fn credit_note_of(e: &Engine, r: &RefundRow) -> Result<Option<String>, ApiError> {
    Ok(e.store
        .order_refunds(&r.order_id)
        .await?
        .into_iter()
        .find(|(row, _)| row.id == r.id)
        .and_then(|(_, cn)| cn))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/api/payments/refund", post(refund))
}
