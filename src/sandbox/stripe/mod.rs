//! The Stripe part of the sandbox: Checkout Sessions (create, retrieve, expire), Refunds,
//! idempotency keys, Stripe's error envelope, and signed event delivery.
//!
//! Buyer and provider controls (not Stripe API):
//! - `POST /sandbox/stripe/checkout/sessions/{id}/pay`
//!   `{"webhook": "once"|"twice"|"none", "delay_ms": N, "payment_status": "paid"|"unpaid",
//!   "amount_total": N}` — completes the session (an `unpaid` completion is a delayed payment
//!   method; `amount_total` makes the session report another amount than it was created
//!   with) and delivers `checkout.session.completed`. The answer carries the event and each
//!   delivery's status.
//! - `POST /sandbox/stripe/checkout/sessions/{id}/settle` `{"outcome": "succeeded"|"failed", …}`
//!   — settles a delayed payment: `checkout.session.async_payment_succeeded|failed`.
//! - `POST /sandbox/stripe/checkout/sessions/{id}/amend` `{"amount_total": N}` — corrects the
//!   amount a completed session reports (the provider's record fixed after a mismatch).
//! - `GET /sandbox/stripe/refunds` — every refund made, for inspection.
//! - `POST /sandbox/stripe/disputes` `{"payment_intent"}` — the cardholder disputes a
//!   payment: `charge.dispute.created`.
//! - `POST /sandbox/stripe/refunds/mode` `{"status": "pending"|"succeeded"}` — how refunds
//!   made from now on start; `POST /sandbox/stripe/refunds/{id}/settle`
//!   `{"outcome": "succeeded"|"failed"|"canceled", "webhook"?: "none"}` ends a pending one
//!   with `refund.updated` (and `refund.failed` for a failure), or silently.
//! - `POST /sandbox/stripe/faults` `{"api_errors": [503, 429, "timeout", "hang", …]}` — the next
//!   API calls (`/v1/…`, after authentication) fail with these statuses, one each, in order;
//!   `timeout` and `hang` serve the call but hold its answer back 3 s and 30 s;
//!   `{"status": 400, "should_retry": true}` answers with `Stripe-Should-Retry` as well.
//! - `GET /c/pay/{id}` — a bare checkout page with a Pay button, for trying it in a browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Copies, Courier, basic_credentials, control_body, copies, now_s, rand_id};
use crate::config::Config;
use crate::providers::stripe::{sign, wire};

mod events;
mod refunds;
mod sessions;

use events::*;
use refunds::*;
use sessions::*;

const API_VERSION: &str = "2024-06-20";

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
    faults: Arc<super::Faults>,
}

struct Inner {
    secret_key: String,
    courier: Courier,
    base: String,
    state: Mutex<State_>,
}

#[derive(Default)]
struct State_ {
    sessions: HashMap<String, wire::CheckoutSession>,
    refunds: Vec<wire::Refund>,
    /// Idempotency-Key → (request fingerprint, status, response body).
    idempotency: HashMap<String, (String, u16, Value)>,
    /// Refunds made from now on start `pending` (`POST /sandbox/stripe/refunds/mode`), as
    /// Stripe's are for payment methods that refund asynchronously; settled one by one.
    refunds_pending: bool,
}

impl Sandbox {
    pub fn new(config: &Config, base: &str) -> Sandbox {
        let s = &config.providers.stripe;
        Sandbox {
            faults: Arc::default(),
            inner: Arc::new(Inner {
                secret_key: s.secret_key.expose().to_owned(),
                courier: Courier::new(config, "stripe", {
                    let secret = s
                        .webhook_secrets
                        .first()
                        .map(|w| w.expose().to_owned())
                        .unwrap_or_default();
                    Arc::new(move |_id: &str, body: &[u8]| {
                        vec![
                            ("stripe-signature", sign(&secret, now_s(), body)),
                            (
                                "user-agent",
                                "Stripe/1.0 (+https://stripe.com/docs/webhooks)".to_owned(),
                            ),
                        ]
                    })
                }),
                base: base.to_owned(),
                state: Mutex::new(State_::default()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State_> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stripe's error envelope with its status.
fn stripe_error(status: StatusCode, kind: &str, message: &str, param: Option<&str>) -> Response {
    let body = wire::ErrorEnvelope {
        error: wire::ErrorBody {
            kind: kind.into(),
            message: message.into(),
            code: None,
            param: param.map(Into::into),
        },
    };
    (status, Json(body)).into_response()
}

/// Stripe accepts the secret key as a bearer token or as the Basic-auth user name.
fn authorized(sb: &Sandbox, headers: &HeaderMap) -> Result<(), Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let key = if let Some(k) = auth.strip_prefix("Bearer ") {
        k.to_owned()
    } else if let Some(b) = auth.strip_prefix("Basic ") {
        basic_credentials(b)
            .and_then(|s| s.split(':').next().map(str::to_owned))
            .unwrap_or_default()
    } else {
        String::new()
    };
    if key.is_empty() {
        return Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            None,
        ));
    }
    if key != sb.inner.secret_key {
        let shown: String = key.chars().take(8).collect();
        return Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            &format!("Invalid API Key provided: {shown}****"),
            None,
        ));
    }
    Ok(())
}

/// Authentication, then any injected fault: what every `/v1` call goes through first.
fn gate(sb: &Sandbox, headers: &HeaderMap) -> Result<(), Response> {
    authorized(sb, headers)?;
    let Some((status, should_retry)) = sb.faults.next() else {
        return Ok(());
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "rate_limit_error"
    } else {
        "api_error"
    };
    let mut refused = stripe_error(
        status,
        kind,
        "Injected by the sandbox: the API failed this request.",
        None,
    );
    // Stripe tells the client whether repeating the request can help, overriding what the
    // status would suggest (<https://docs.stripe.com/error-low-level#idempotency>; read by
    // stripe-node's RequestSender before the status).
    if let Some(retry) = should_retry {
        refused.headers_mut().insert(
            "stripe-should-retry",
            axum::http::HeaderValue::from_static(if retry { "true" } else { "false" }),
        );
    }
    Err(refused)
}

/// Replays the stored answer for a reused Idempotency-Key, or refuses a reuse with other
/// parameters — as Stripe does.
fn idempotent_replay(sb: &Sandbox, headers: &HeaderMap, fingerprint: &str) -> Option<Response> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())?;
    let st = sb.state();
    let (fp, status, body) = st.idempotency.get(key)?;
    if fp != fingerprint {
        return Some(stripe_error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            &format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
            ),
            None,
        ));
    }
    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
    Some((status, Json(body.clone())).into_response())
}

fn remember(sb: &Sandbox, headers: &HeaderMap, fingerprint: &str, body: &Value) {
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        sb.state()
            .idempotency
            .insert(key.to_owned(), (fingerprint.to_owned(), 200, body.clone()));
    }
}

async fn unknown(uri: axum::http::Uri) -> Response {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!(
            "Unrecognized request URL (path: {}). The sandbox implements Checkout Sessions and Refunds.",
            uri.path()
        ),
        None,
    )
}

pub fn router(sb: Sandbox) -> Router {
    let (courier, faults) = (sb.inner.courier.clone(), sb.faults.clone());
    let api = super::gated(
        Router::new()
            .route(
                "/v1/checkout/sessions",
                post(create_session).get(list_sessions),
            )
            .route("/v1/checkout/sessions/{id}", get(get_session))
            .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
            .route("/v1/refunds", post(create_refund))
            .route("/v1/refunds/{id}", get(get_refund))
            .route("/v1/events", get(list_events)),
        sb.clone(),
        gate,
    )
    .route("/sandbox/stripe/checkout/sessions/{id}/pay", post(pay))
    .route(
        "/sandbox/stripe/checkout/sessions/{id}/settle",
        post(settle),
    )
    .route("/sandbox/stripe/refunds", get(list_refunds))
    .route("/sandbox/stripe/refunds/mode", post(refund_mode))
    .route("/sandbox/stripe/disputes", post(dispute))
    .route("/sandbox/stripe/refunds/{id}/settle", post(settle_refund))
    .route("/sandbox/stripe/checkout/sessions/{id}/amend", post(amend))
    .route("/c/pay/{id}", get(checkout_page))
    .fallback(unknown)
    .with_state(sb);
    super::provider_router("stripe", api, courier, faults)
}
