//! `POST /api/payments/refund` (admin token): refund an order in whole or in part through
//! its provider.
//!
//! Body: `{"order_id", "amount_minor"?, "reason"?, "restock"?}` — no amount refunds what is
//! left; `restock` (default `refunds.restock`) returns the stock once the order is refunded
//! in full. An `Idempotency-Key` header makes a repeated request (a timeout, a double click)
//! return the first one's answer; the same key with a different body is refused (422) — as
//! on every `POST /api/…` (`intake::idempotency`). The key is also kept on the refund itself,
//! so that it still finds its refund after the API's key has expired.
//!
//! The refund is recorded as `requested` before the provider is called, with our refund id
//! as the provider's idempotency key and in its metadata. If the provider cannot be reached
//! the answer is 503 and the refund stays `requested`, still counted against what can be
//! refunded: the engine asks again by itself after `refunds.resume_after_ms`, and repeating
//! the request with the same key finishes it at once. 201 means the provider
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

use super::Actor;
use crate::Engine;
use crate::api::ApiError;
use crate::background::refund_calls::{self, Made};
use crate::domain::{Invalid, OrderId};
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
    Actor(who): Actor,
    headers: HeaderMap,
    body: Result<Json<RefundBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        actor: &who,
    };
    let (row, payment) = match e.store.request_refund(&asked).await? {
        Requested::Call(row, payment) => (row, payment),
        Requested::Done(row) => {
            let (row, cn) = e.store.refund_with_credit_note(&row.id).await?;
            return Ok((StatusCode::OK, Json(refund_json(&row, cn.as_deref()))));
        }
        Requested::KeyReused => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
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
    match refund_calls::make(&e, &row, &payment).await? {
        Made::Settled(row) => {
            let (row, cn) = e.store.refund_with_credit_note(&row.id).await?;
            Ok((StatusCode::CREATED, Json(refund_json(&row, cn.as_deref()))))
        }
        // Accepted by the provider, the money not moved yet: nothing is booked (no credit
        // note, access kept, no restock) until its event says it succeeded.
        Made::Pending(row) => Ok((StatusCode::ACCEPTED, Json(refund_json(&row, None)))),
        Made::Refused(_, why) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "refund_failed", why)),
        Made::Unanswered(row, why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            format!(
                "{why}; refund {} is recorded as requested and will be asked for again (refunds.resume_after_ms), or repeat the request with the same Idempotency-Key",
                row.id
            ),
        )),
    }
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/api/payments/refund", post(refund))
}
