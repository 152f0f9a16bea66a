//! The Razorpay part of the sandbox: Orders, Payments (fetch, capture, refund), Basic auth
//! with the configured key, Razorpay's error envelope, and webhooks signed with the webhook
//! secret (`X-Razorpay-Signature`, `x-razorpay-event-id`).
//!
//! Buyer and provider controls (not Razorpay API):
//! - `POST /sandbox/razorpay/orders/{id}/pay` `{"webhook": "once"|"twice"|"none",
//!   "delay_ms": N, "capture": "automatic"|"manual"|"race", "outcome": "paid"|"failed",
//!   "amount": N, "events": ["order.paid", …]}` — the buyer pays in Checkout.js (`events`:
//!   the only events the account's webhook is subscribed to). Answers exactly what Checkout.js hands
//!   the browser (`razorpay_payment_id`, `razorpay_order_id`, `razorpay_signature`), plus
//!   the events and each delivery's status. Automatic capture sends `payment.authorized`,
//!   `payment.captured` and `order.paid`; manual capture only `payment.authorized`; a
//!   failure `payment.failed` (the order stays payable: pay it again). `race` is manual
//!   capture that Razorpay's automatic capture overtakes: the payment is captured just after
//!   its first read, so the reader's own capture is answered "already been captured".
//! - `GET /sandbox/razorpay/checkout.js` and the frame it opens,
//!   `GET /sandbox/razorpay/checkout?key_id=…&order_id=…` — a stand-in for Checkout.js: the
//!   buyer pays, or has the bank decline and tries again, and the page gets what
//!   Checkout.js hands it.
//! - `POST /sandbox/razorpay/faults` `{"api_errors": [503, "timeout", …]}` — the next API calls fail
//!   with those statuses, or do their work and time out.
//! - `GET /sandbox/razorpay/refunds` — every refund made.
//! - `POST /sandbox/razorpay/payments/{id}/dispute` — the bank disputes a payment:
//!   `payment.dispute.created`.
//! - `POST /sandbox/razorpay/refunds/mode` `{"status": "pending"|"processed"}` — how refunds
//!   start (a pending one is announced as `refund.created`);
//!   `POST /sandbox/razorpay/refunds/{id}/settle` `{"outcome": "processed"|"failed",
//!   "webhook"?: "none"}` ends one with `refund.processed` or `refund.failed`, or silently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Copies, Courier, Faults, basic_credentials, control_body, copies, now_s, rand_id};
use crate::config::Config;
use crate::providers::razorpay::{sign_payment, sign_webhook, wire};

mod checkout;
mod orders;
mod refunds;

use checkout::*;
use orders::*;
use refunds::*;

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    key_id: String,
    key_secret: String,
    courier: Courier,
    faults: Arc<Faults>,
    state: Mutex<St>,
}

#[derive(Default)]
struct St {
    orders: HashMap<String, wire::Order>,
    payments: HashMap<String, wire::Payment>,
    refunds: Vec<wire::Refund>,
    /// X-Refund-Idempotency → refund id.
    refund_keys: HashMap<String, String>,
    /// Authorized payments Razorpay captures itself once they have been read (`pay` with
    /// `"capture": "race"`): the account's automatic capture landing between a client's
    /// read and its own capture call.
    capture_after_read: std::collections::HashSet<String>,
    /// Refunds made from now on start `pending` (`POST /sandbox/razorpay/refunds/mode`), as
    /// Razorpay's do until the bank confirms them.
    refunds_pending: bool,
}

impl Sandbox {
    pub fn new(config: &Config) -> Sandbox {
        let r = &config.providers.razorpay;
        Sandbox {
            inner: Arc::new(Inner {
                key_id: r.key_id.clone(),
                key_secret: r.key_secret.expose().to_owned(),
                courier: Courier::new(config, "razorpay", {
                    let secret = r.webhook_secret.expose().to_owned();
                    Arc::new(move |id: &str, body: &[u8]| {
                        vec![
                            ("x-razorpay-signature", sign_webhook(&secret, body)),
                            ("x-razorpay-event-id", id.to_owned()),
                        ]
                    })
                }),
                faults: Arc::default(),
                state: Mutex::new(St::default()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, St> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Razorpay's error envelope with its status.
fn rz_error(status: StatusCode, description: &str, field: Option<&str>) -> Response {
    let code = if status == StatusCode::INTERNAL_SERVER_ERROR || status.is_server_error() {
        "SERVER_ERROR"
    } else {
        "BAD_REQUEST_ERROR"
    };
    let body = wire::ErrorEnvelope {
        error: wire::ErrorBody {
            code: code.into(),
            description: description.into(),
            field: field.map(Into::into),
            source: Some("business".into()),
            reason: Some("input_validation_failed".into()),
        },
    };
    (status, Json(body)).into_response()
}

/// Razorpay's answer for an id it does not know.
fn no_such_id() -> Response {
    rz_error(
        StatusCode::BAD_REQUEST,
        "The id provided does not exist",
        Some("id"),
    )
}

/// Basic auth with the key id and secret, then any injected fault.
fn gate(sb: &Sandbox, headers: &HeaderMap) -> Result<(), Response> {
    let creds = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(basic_credentials);
    let expected = format!("{}:{}", sb.inner.key_id, sb.inner.key_secret);
    if creds.as_deref() != Some(expected.as_str()) {
        return Err(rz_error(
            StatusCode::UNAUTHORIZED,
            "Authentication failed",
            None,
        ));
    }
    match sb.inner.faults.next() {
        Some((s, _)) => Err(rz_error(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Injected by the sandbox: the API failed this request.",
            None,
        )),
        None => Ok(()),
    }
}

pub fn router(sb: Sandbox) -> Router {
    let (courier, faults) = (sb.inner.courier.clone(), sb.inner.faults.clone());
    let api = super::gated(
        Router::new()
            .route("/v1/orders", post(create_order))
            .route("/v1/orders/{id}", get(get_order))
            .route("/v1/orders/{id}/payments", get(order_payments))
            .route("/v1/payments", get(list_payments))
            .route("/v1/payments/{id}", get(get_payment))
            .route("/v1/payments/{id}/capture", post(capture))
            .route("/v1/payments/{id}/refund", post(refund))
            .route("/v1/payments/{payment}/refunds/{id}", get(get_refund)),
        sb.clone(),
        gate,
    )
    .route("/sandbox/razorpay/orders/{id}/pay", post(pay))
    .route("/sandbox/razorpay/checkout.js", get(checkout_js))
    .route("/sandbox/razorpay/refunds/mode", post(refund_mode))
    .route("/sandbox/razorpay/payments/{id}/dispute", post(dispute))
    .route("/sandbox/razorpay/refunds/{id}/settle", post(settle_refund))
    .route("/sandbox/razorpay/checkout", get(checkout_frame))
    .route("/sandbox/razorpay/refunds", get(list_refunds))
    .with_state(sb);
    super::provider_router("razorpay", api, courier, faults)
}
