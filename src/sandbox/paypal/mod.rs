//! The PayPal part of the sandbox: OAuth client credentials, Orders v2 (create, get,
//! capture), captures and their refunds, PayPal's error envelope, `PayPal-Request-Id`
//! idempotency, the verify-webhook-signature API, the event notifications list, and webhooks
//! signed as PayPal signs them:
//! SHA256withRSA over `transmission_id|transmission_time|webhook_id|crc32(body)` with a key
//! the sandbox makes at start-up. Its certificate is written to `sandbox.paypal_cert_file`
//! (for the engine's `providers.paypal.webhook_cert_file`) and served at the
//! `paypal-cert-url` of each delivery.
//!
//! Buyer and provider controls (not PayPal API):
//! - `GET /sandbox/paypal/checkoutnow?token={id}` — the approval page the order's `approve`
//!   / `payer-action` link points at: Approve, or Approve with an eCheck (its capture stays
//!   pending), then back to the `return_url`.
//! - `POST /sandbox/paypal/orders/{id}/approve` `{"webhook": "once"|"twice"|"none",
//!   "delay_ms": N, "capture": "completed"|"pending"|"declined"|"elsewhere"|
//!   "duplicate_invoice", "amount":
//!   "12.00"}` — the buyer approves the order. Answers what PayPal's JS SDK hands `onApprove`
//!   (`orderID`, `payerID`, …) plus the `CHECKOUT.ORDER.APPROVED` event and its deliveries.
//!   `capture` decides what a later capture call does: complete, stay pending, fail with
//!   `INSTRUMENT_DECLINED`, or lose the race to another capture (the order is captured and
//!   the call answers `ORDER_ALREADY_CAPTURED`), or be refused for the merchant's account
//!   (`DUPLICATE_INVOICE_ID`); `amount` makes the capture report another
//!   amount.
//! - `POST /sandbox/paypal/orders/{id}/void` — the order is voided (`CHECKOUT.ORDER.VOIDED`).
//! - `POST /sandbox/paypal/captures/{id}/settle` `{"outcome": "completed"|"denied",
//!   "webhook": "once"|"none"}` — a pending capture settles (`PAYMENT.CAPTURE.COMPLETED` or
//!   `PAYMENT.CAPTURE.DENIED`; `none`: the event is lost).
//! - `POST /sandbox/paypal/faults` `{"api_errors": [503, "timeout", …]}` — the next API calls fail
//!   with those statuses, or do their work and time out.
//! - `GET /sandbox/paypal/refunds` — every refund made.
//! - `POST /sandbox/paypal/captures/{id}/dispute` — the buyer disputes a capture:
//!   `CUSTOMER.DISPUTE.CREATED`.
//! - `POST /sandbox/paypal/refunds/mode` `{"status": "pending"|"completed"}` — how refunds
//!   start; `POST /sandbox/paypal/refunds/{id}/settle` `{"outcome": "completed"|"failed",
//!   "webhook"?: "none"}` ends a pending one (a completed one is announced as
//!   `PAYMENT.CAPTURE.REFUNDED`, unless `none` loses the event).
//! - `POST /sandbox/paypal/events/paging` `{"page_size": N}` — the event list answers at most
//!   N a page, whatever the caller asked, so a test needs few events to need many pages.
//!
//! The event list's `next` links name another host than the one called, as PayPal's name
//! `api.paypal.com` when called on `api-m.paypal.com`: a sandbox on `127.0.0.1` links to
//! `localhost` on its port, and the other way round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::RsaPrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Copies, Courier, Faults, basic_credentials, control_body, copies, rand_id};
use crate::config::Config;
use crate::domain::Currency;
use crate::providers::paypal::{signed_message, wire};

mod orders;
mod refunds;
mod reporting;
mod signing;

use orders::*;
use refunds::*;
use reporting::*;
use signing::*;
pub use signing::{signature_headers, signature_headers_at, signing_key};

fn rfc3339_now() -> String {
    let ms = crate::clock::now_ms();
    crate::clock::rfc3339(ms - ms.rem_euclid(1000))
}

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    client_id: String,
    client_secret: String,
    courier: Courier,
    key: &'static RsaPrivateKey,
    cert_pem: &'static str,
    transmissions: Transmissions,
    faults: Arc<Faults>,
    state: Mutex<St>,
}

/// What a capture of an approved order will do (set by the approve control).
#[derive(Debug, Clone)]
struct Plan {
    capture: String,
    amount: Option<String>,
}

#[derive(Default)]
struct St {
    tokens: Vec<String>,
    orders: HashMap<String, wire::Order>,
    plans: HashMap<String, Plan>,
    /// Capture id → order id.
    captures: HashMap<String, String>,
    refunds: Vec<(String, wire::Refund)>,
    /// PayPal-Request-Id → the response body first given for it.
    requests: HashMap<String, Value>,
    /// Order id → where the buyer's browser goes after approving (`return_url`).
    return_urls: HashMap<String, String>,
    /// Refunds made from now on start `PENDING` (`POST /sandbox/paypal/refunds/mode`), as
    /// PayPal's do when the money cannot move at once (an eCheck not cleared yet).
    refunds_pending: bool,
    /// At most this many events a list page (`POST /sandbox/paypal/events/paging`).
    event_page_cap: Option<usize>,
}

/// Transmission id → the raw body delivered, for verify-webhook-signature.
type Transmissions = Arc<Mutex<HashMap<String, Vec<u8>>>>;

impl Sandbox {
    pub fn new(config: &Config, base: &str) -> anyhow::Result<Sandbox> {
        let (key, cert_pem) = signing_identity()?;
        let out = &config.sandbox.paypal_cert_file;
        if !out.is_empty() {
            let path = std::path::Path::new(out);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, cert_pem)?;
        }
        let webhook_id = config.providers.paypal.webhook_id.clone();
        let cert_url = format!("{base}/v1/notifications/certs/CERT-sandbox");
        let transmissions: Transmissions = Arc::default();
        let sign = {
            let transmissions = transmissions.clone();
            Arc::new(move |_event_id: &str, body: &[u8]| {
                let headers = signature_headers(key, &webhook_id, &cert_url, body);
                transmissions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(headers[0].1.clone(), body.to_vec());
                headers
            })
        };
        let sb = Sandbox {
            inner: Arc::new(Inner {
                base: base.to_owned(),
                client_id: config.providers.paypal.client_id.clone(),
                client_secret: config.providers.paypal.client_secret.expose().to_owned(),
                courier: Courier::new(config, "paypal", sign),
                key,
                cert_pem,
                transmissions,
                faults: Arc::default(),
                state: Mutex::new(St::default()),
            }),
        };
        Ok(sb)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, St> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// PayPal's ids: 17 upper-case letters and digits.
fn pp_id() -> String {
    rand_id("", 17).to_ascii_uppercase()
}

fn uuid_like() -> String {
    let h = rand_id("", 32).to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// PayPal's error envelope with its status.
fn pp_error(
    status: StatusCode,
    name: &str,
    message: &str,
    issue: &str,
    description: &str,
    field: Option<&str>,
) -> Response {
    let body = wire::ErrorEnvelope {
        name: name.into(),
        message: message.into(),
        debug_id: rand_id("", 13).to_ascii_lowercase(),
        details: vec![wire::ErrorDetail {
            field: field.map(Into::into),
            issue: issue.into(),
            description: Some(description.into()),
        }],
    };
    (status, Json(body)).into_response()
}

fn not_found() -> Response {
    pp_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        "The specified resource does not exist.",
        "INVALID_RESOURCE_ID",
        "Specified resource ID does not exist. Please check the resource ID and try again.",
        None,
    )
}

fn unprocessable(issue: &str, description: &str) -> Response {
    pp_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed business validation.",
        issue,
        description,
        None,
    )
}

fn invalid_request(issue: &str, field: &str, description: &str) -> Response {
    pp_error(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
        issue,
        description,
        Some(field),
    )
}

/// A bearer token this sandbox issued, then any injected fault.
fn gate(sb: &Sandbox, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = token.is_some_and(|t| sb.state().tokens.iter().any(|k| k == t));
    if !known {
        return Err(pp_error(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILURE",
            "Authentication failed due to invalid authentication credentials or a missing Authorization header.",
            "INVALID_TOKEN",
            "The access token is invalid or has expired.",
            None,
        ));
    }
    match sb.inner.faults.next() {
        Some((s, _)) => Err(pp_error(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "INTERNAL_SERVICE_ERROR",
            "An internal service error has occurred.",
            "INTERNAL_SERVICE_ERROR",
            "Injected by the sandbox: the API failed this request.",
            None,
        )),
        None => Ok(()),
    }
}

/// `PayPal-Request-Id`: a repeated request gets the first answer again (200).
fn request_key(headers: &HeaderMap, route: &str) -> Option<String> {
    headers
        .get("paypal-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{route}:{k}"))
}

fn replay(sb: &Sandbox, key: &Option<String>) -> Option<Response> {
    let st = sb.state();
    let first = st.requests.get(key.as_ref()?)?;
    Some((StatusCode::OK, Json(first.clone())).into_response())
}

fn remember(sb: &Sandbox, key: Option<String>, status: StatusCode, body: Value) -> Response {
    if let Some(k) = key {
        sb.state().requests.insert(k, body.clone());
    }
    (status, Json(body)).into_response()
}

/// A webhook event about `resource`.
fn event(kind: &str, resource_type: &str, summary: &str, resource: Value) -> (String, Vec<u8>) {
    let id = format!("WH-{}", pp_id());
    let ev = wire::Event {
        id: id.clone(),
        event_version: "1.0".into(),
        create_time: rfc3339_now(),
        resource_type: resource_type.into(),
        event_type: kind.into(),
        summary: summary.into(),
        resource,
        links: Vec::new(),
    };
    (id, serde_json::to_vec(&ev).unwrap_or_default())
}

fn capture_event(kind: &str, c: &wire::Capture) -> (String, Vec<u8>) {
    let summary = format!(
        "Payment capture {}",
        kind.rsplit('.').next().unwrap_or(kind)
    );
    event(
        kind,
        "capture",
        &summary,
        serde_json::to_value(c).unwrap_or_default(),
    )
}

pub fn router(sb: Sandbox) -> Router {
    let (courier, faults) = (sb.inner.courier.clone(), sb.inner.faults.clone());
    let api = super::gated(
        Router::new()
            .route("/v2/checkout/orders", post(create_order))
            .route("/v2/checkout/orders/{id}", get(get_order))
            .route("/v2/checkout/orders/{id}/capture", post(capture))
            .route("/v2/payments/captures/{id}", get(get_capture))
            .route("/v1/reporting/transactions", get(search_transactions))
            .route("/v1/notifications/webhooks-events", get(list_events))
            .route("/v2/payments/captures/{id}/refund", post(refund))
            .route("/v2/payments/refunds/{id}", get(get_refund))
            .route(
                "/v1/notifications/verify-webhook-signature",
                post(verify_webhook_signature),
            ),
        sb.clone(),
        gate,
    )
    .route("/v1/oauth2/token", post(token))
    .route("/v1/notifications/certs/{id}", get(cert))
    .route("/sandbox/paypal/checkoutnow", get(checkout_page))
    .route("/sandbox/paypal/orders/{id}/approve", post(approve))
    .route("/sandbox/paypal/orders/{id}/void", post(void))
    .route("/sandbox/paypal/captures/{id}/settle", post(settle))
    .route("/sandbox/paypal/refunds", get(list_refunds))
    .route("/sandbox/paypal/refunds/mode", post(refund_mode))
    .route("/sandbox/paypal/events/paging", post(event_paging))
    .route("/sandbox/paypal/captures/{id}/dispute", post(dispute))
    .route("/sandbox/paypal/refunds/{id}/settle", post(settle_refund))
    .with_state(sb);
    super::provider_router("paypal", api, courier, faults)
}
