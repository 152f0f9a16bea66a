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
//!   `timeout` and `hang` serve the call but hold its answer back 3 s and 30 s.
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
    let Some(status) = sb.faults.next() else {
        return Ok(());
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "rate_limit_error"
    } else {
        "api_error"
    };
    Err(stripe_error(
        status,
        kind,
        "Injected by the sandbox: the API failed this request.",
        None,
    ))
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

fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Stripe's refusal of an amount of `currency` that its rules do not allow
/// (<https://docs.stripe.com/currencies>): ISK amounts are written with two decimals that
/// must be 00 (#special-cases, and the message of Stripe's ISK notice), and
/// the three-decimal currencies BHD, JOD, KWD, OMR and TND need a last digit of 0
/// (#three-decimal).
fn amount_refused(currency: &str, amount: i64, param: &str) -> Option<Response> {
    let message = match currency {
        "isk" if amount % 100 != 0 => {
            "Invalid amount. Currency ISK has become effectively zero-decimal and charged amounts must be evenly divisible by 100."
        }
        "bhd" | "jod" | "kwd" | "omr" | "tnd" if amount % 10 != 0 => {
            "Invalid amount. Amounts in three-decimal currencies must be rounded to the nearest ten (the last digit must be 0)."
        }
        _ => return None,
    };
    Some(stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        Some(param),
    ))
}

async fn create_session(State(sb): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let fingerprint = format!(
        "POST /v1/checkout/sessions {}",
        String::from_utf8_lossy(&body)
    );
    if let Some(r) = idempotent_replay(&sb, &headers, &fingerprint) {
        return r;
    }
    let f = form(&body);
    let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let mode = get("mode").unwrap_or_default();
    if mode != "payment" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "The sandbox supports mode=payment only.",
            Some("mode"),
        );
    }
    let mut total: i64 = 0;
    let mut currency: Option<String> = None;
    let mut i = 0;
    while let Some(qty) = get(&format!("line_items[{i}][quantity]")) {
        let p = format!("line_items[{i}][price_data]");
        let (Ok(qty), Some(cur), Some(Ok(unit))) = (
            qty.parse::<i64>(),
            get(&format!("{p}[currency]")),
            get(&format!("{p}[unit_amount]")).map(|u| u.parse::<i64>()),
        ) else {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!(
                    "Invalid line_items[{i}]: quantity, price_data[currency] and price_data[unit_amount] are required integers."
                ),
                Some(&format!("line_items[{i}]")),
            );
        };
        if currency.as_ref().is_some_and(|c| *c != cur) {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "All line items must use the same currency.",
                Some("line_items"),
            );
        }
        if let Some(r) = amount_refused(&cur, unit, &format!("{p}[unit_amount]")) {
            return r;
        }
        currency = Some(cur);
        total += qty * unit;
        i += 1;
    }
    let Some(currency) = currency else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Missing required param: line_items.",
            Some("line_items"),
        );
    };
    let id = rand_id("cs_test_", 58);
    let metadata = f
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|r| r.strip_suffix(']'))
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect();
    let now = now_s();
    // Stripe: "It can be anywhere from 30 minutes to 24 hours after Checkout Session
    // creation. By default, this value is 24 hours from creation." (API reference,
    // Create a Checkout Session, `expires_at`.)
    let expires_at = match get("expires_at").map(|v| v.parse::<i64>()) {
        None => now + 86_400,
        Some(Ok(t)) if (now + 1800..=now + 86_400).contains(&t) => t,
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                Some("expires_at"),
            );
        }
    };
    let session = wire::CheckoutSession {
        id: id.clone(),
        object: "checkout.session".into(),
        amount_subtotal: Some(total),
        amount_total: Some(total),
        cancel_url: get("cancel_url"),
        client_reference_id: get("client_reference_id"),
        created: now,
        currency: Some(currency),
        customer_email: get("customer_email"),
        expires_at,
        livemode: false,
        metadata,
        mode,
        payment_intent: None,
        payment_status: "unpaid".into(),
        status: Some("open".into()),
        success_url: get("success_url"),
        url: Some(format!("{}/c/pay/{id}", sb.inner.base)),
    };
    let value = serde_json::to_value(&session).unwrap_or(Value::Null);
    sb.state().sessions.insert(id, session);
    remember(&sb, &headers, &fingerprint, &value);
    Json(value).into_response()
}

/// Changes session `id` if `allowed` holds for it; otherwise Stripe's 400 with `refusal`'s
/// message. Returns the changed session.
fn update_session(
    sb: &Sandbox,
    id: &str,
    allowed: impl FnOnce(&wire::CheckoutSession) -> bool,
    refusal: impl FnOnce(&wire::CheckoutSession) -> String,
    change: impl FnOnce(&mut wire::CheckoutSession),
) -> Result<wire::CheckoutSession, Response> {
    let mut st = sb.state();
    let Some(s) = st.sessions.get_mut(id) else {
        return Err(no_such_session(id));
    };
    if !allowed(s) {
        let msg = refusal(s);
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &msg,
            None,
        ));
    }
    change(s);
    Ok(s.clone())
}

fn no_such_session(id: &str) -> Response {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("No such checkout.session: '{id}'"),
        Some("session"),
    )
}

/// `GET /v1/refunds/{id}`.
async fn get_refund(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().refunds.iter().find(|r| r.id == id) {
        Some(r) => Json(r.clone()).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("No such refund: '{id}'"),
            Some("id"),
        ),
    }
}

async fn get_session(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().sessions.get(&id) {
        Some(s) => Json(s.clone()).into_response(),
        None => no_such_session(&id),
    }
}

async fn expire_session(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let session = match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("open"),
        |s| {
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                s.status.as_deref().unwrap_or("")
            )
        },
        |s| s.status = Some("expired".into()),
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Stripe answers with the session itself. The event is delivered before answering, so
    // a caller sees the engine's reaction as soon as this returns.
    let ev = event("checkout.session.expired", &session);
    let deliveries = deliver(&sb, &ev, Copies::ONCE, 0).await;
    tracing::info!(session = %session.id, ?deliveries, "sandbox expired a session");
    Json(session).into_response()
}

async fn create_refund(State(sb): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let fingerprint = format!("POST /v1/refunds {}", String::from_utf8_lossy(&body));
    if let Some(r) = idempotent_replay(&sb, &headers, &fingerprint) {
        return r;
    }
    let f = form(&body);
    let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let Some(pi) = get("payment_intent") else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "One of the following params should be provided for this request: payment_intent or charge.",
            None,
        );
    };
    let refund = {
        let mut st = sb.state();
        let Some(session) = st
            .sessions
            .values()
            .find(|s| s.payment_intent.as_deref() == Some(pi.as_str()))
            .cloned()
        else {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("No such payment_intent: '{pi}'"),
                Some("payment_intent"),
            );
        };
        let total = session.amount_total.unwrap_or(0);
        let refunded: i64 = st
            .refunds
            .iter()
            .filter(|r| r.payment_intent.as_deref() == Some(pi.as_str()))
            .filter(|r| !matches!(r.status.as_deref(), Some("failed" | "canceled")))
            .map(|r| r.amount)
            .sum();
        if refunded >= total {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Charge for payment_intent {pi} has already been refunded."),
                None,
            );
        }
        let amount = match get("amount") {
            None => total - refunded,
            Some(a) => match a.parse::<i64>() {
                Ok(a) if a > 0 && a <= total - refunded => {
                    let cur = session.currency.clone().unwrap_or_default();
                    if let Some(r) = amount_refused(&cur, a, "amount") {
                        return r;
                    }
                    a
                }
                Ok(a) if a > 0 => {
                    return stripe_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        &format!(
                            "Refund amount ({a}) is greater than unrefunded amount on charge ({})",
                            total - refunded
                        ),
                        Some("amount"),
                    );
                }
                _ => {
                    return stripe_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "Invalid positive integer",
                        Some("amount"),
                    );
                }
            },
        };
        let metadata = f
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((key.to_owned(), v.clone()))
            })
            .collect();
        let refund = wire::Refund {
            id: rand_id("re_", 24),
            object: "refund".into(),
            amount,
            created: now_s(),
            currency: session.currency.clone().unwrap_or_default(),
            metadata,
            payment_intent: Some(pi),
            reason: get("reason"),
            status: Some(
                if st.refunds_pending {
                    "pending"
                } else {
                    "succeeded"
                }
                .into(),
            ),
        };
        st.refunds.push(refund.clone());
        refund
    };
    let value = serde_json::to_value(&refund).unwrap_or(Value::Null);
    remember(&sb, &headers, &fingerprint, &value);
    // Stripe announces every refund, whoever made it.
    deliver(
        &sb,
        &event_about("refund.created", value.clone()),
        Copies::ONCE,
        0,
    )
    .await;
    Json(value).into_response()
}

/// `GET /v1/checkout/sessions`: newest first; `created[gte]`, `limit` (1-100, default 10)
/// and `starting_after` as Stripe reads them.
async fn list_sessions(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let all: Vec<wire::CheckoutSession> = sb.state().sessions.values().cloned().collect();
    page(
        all,
        query,
        "/v1/checkout/sessions",
        "checkout.session",
        |s| (s.created, s.id.as_str()),
    )
}

/// `GET /v1/events`: like sessions, plus `delivery_success=false` for the events no webhook
/// delivery succeeded for (what a receiver that was down missed).
async fn list_events(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = form(query.clone().unwrap_or_default().as_bytes());
    let delivery = q
        .iter()
        .find(|(k, _)| k == "delivery_success")
        .map(|(_, v)| v.clone());
    let want = match delivery.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "delivery_success must be true or false.",
                Some("delivery_success"),
            );
        }
    };
    let all: Vec<wire::Event> = sb
        .inner
        .courier
        .sent()
        .into_iter()
        .filter(|(_, delivered)| want.is_none_or(|w| w == *delivered))
        .filter_map(|(body, _)| serde_json::from_slice(&body).ok())
        .collect();
    page(all, query, "/v1/events", "event", |e| {
        (e.created, e.id.as_str())
    })
}

/// One page of a Stripe list, newest first: `created[gte]`, `limit` (1-100, default 10) and
/// `starting_after` as Stripe reads them. `key` gives an item's (created, id).
fn page<T: serde::Serialize + Clone>(
    mut all: Vec<T>,
    query: Option<String>,
    url: &str,
    object: &str,
    key: impl Fn(&T) -> (i64, &str),
) -> Response {
    let q = form(query.unwrap_or_default().as_bytes());
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let since: i64 = get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit = match get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "This value must be greater than or equal to 1 and less than or equal to 100.",
                Some("limit"),
            );
        }
    };
    all.retain(|t| key(t).0 >= since);
    all.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.cmp(&ka.0).then(kb.1.cmp(ka.1))
    });
    let start = match get("starting_after") {
        Some(after) => match all.iter().position(|t| key(t).1 == after) {
            Some(i) => i + 1,
            None => {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such {object}: '{after}'"),
                    Some("starting_after"),
                );
            }
        },
        None => 0,
    };
    let data: Vec<T> = all.iter().skip(start).take(limit).cloned().collect();
    let list = wire::List {
        object: "list".into(),
        has_more: start + data.len() < all.len(),
        data,
        url: url.into(),
    };
    Json(list).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundControl {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// `"none"`: the change is not announced (a lost event).
    #[serde(default)]
    webhook: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeControl {
    #[serde(default)]
    payment_intent: Option<String>,
}

/// `POST /sandbox/stripe/disputes` `{"payment_intent"}`: the cardholder disputes the
/// payment, announced as `charge.dispute.created`
/// (<https://docs.stripe.com/api/events/types#event_types-charge.dispute.created>).
async fn dispute(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<DisputeControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pi = d.payment_intent.unwrap_or_default();
    let Some(session) = sb
        .state()
        .sessions
        .values()
        .find(|s| s.payment_intent.as_deref() == Some(pi.as_str()))
        .cloned()
    else {
        return stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("No such payment_intent: '{pi}'"),
            Some("payment_intent"),
        );
    };
    let dispute = json!({
        "id": rand_id("dp_", 24), "object": "dispute", "amount": session.amount_total,
        "currency": session.currency, "charge": rand_id("ch_", 24), "payment_intent": pi,
        "reason": "fraudulent", "status": "needs_response", "created": now_s(),
        "livemode": false, "metadata": {}, "is_charge_refundable": true,
    });
    let deliveries = deliver(
        &sb,
        &event_about("charge.dispute.created", dispute.clone()),
        Copies::ONCE,
        0,
    )
    .await;
    Json(json!({ "dispute": dispute, "deliveries": deliveries })).into_response()
}

/// `{"status": "pending"|"succeeded"}`: how refunds made from now on start.
async fn refund_mode(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pending = match d.status.as_deref() {
        Some("pending") => true,
        Some("succeeded") => false,
        _ => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "status must be \"pending\" or \"succeeded\"",
                Some("status"),
            );
        }
    };
    sb.state().refunds_pending = pending;
    Json(json!({ "refunds_start": d.status })).into_response()
}

/// `{"outcome": "succeeded"|"failed"|"canceled"}`: a pending refund ends. Stripe announces
/// the change as `refund.updated`, and a failure also as `refund.failed`
/// (<https://docs.stripe.com/api/events/types#event_types-refund.updated>).
async fn settle_refund(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let outcome = d.outcome.unwrap_or_else(|| "succeeded".into());
    if !matches!(outcome.as_str(), "succeeded" | "failed" | "canceled") {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "outcome must be \"succeeded\", \"failed\" or \"canceled\"",
            Some("outcome"),
        );
    }
    let refund = {
        let mut st = sb.state();
        let Some(r) = st.refunds.iter_mut().find(|r| r.id == id) else {
            return stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                &format!("No such refund: '{id}'"),
                Some("id"),
            );
        };
        if r.status.as_deref() != Some("pending") {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Only a pending refund settles.",
                None,
            );
        }
        r.status = Some(outcome.clone());
        r.clone()
    };
    let value = serde_json::to_value(&refund).unwrap_or(Value::Null);
    if d.webhook.as_deref() == Some("none") {
        return Json(json!({ "refund": value, "deliveries": [] })).into_response();
    }
    let mut deliveries = deliver(
        &sb,
        &event_about("refund.updated", value.clone()),
        Copies::ONCE,
        0,
    )
    .await;
    if outcome == "failed" {
        deliveries.extend(
            deliver(
                &sb,
                &event_about("refund.failed", value.clone()),
                Copies::ONCE,
                0,
            )
            .await,
        );
    }
    Json(json!({ "refund": value, "deliveries": deliveries })).into_response()
}

async fn list_refunds(State(sb): State<Sandbox>) -> Json<Value> {
    let st = sb.state();
    Json(json!({ "object": "list", "data": st.refunds }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// Pay: the amount the session reports as captured, when it should differ from the
    /// amount it was created with (a tampered or mismatched checkout).
    #[serde(default)]
    amount_total: Option<i64>,
}

impl Delivery {
    fn copies(&self) -> Result<Copies, Response> {
        copies(self.webhook.as_deref())
    }
}

fn event(kind: &str, session: &wire::CheckoutSession) -> wire::Event {
    event_about(kind, serde_json::to_value(session).unwrap_or(Value::Null))
}

fn event_about(kind: &str, object: Value) -> wire::Event {
    wire::Event {
        id: rand_id("evt_", 24),
        object: "event".into(),
        api_version: Some(API_VERSION.into()),
        created: now_s(),
        data: wire::EventData { object },
        livemode: false,
        pending_webhooks: 1,
        request: Some(wire::EventRequest {
            id: None,
            idempotency_key: None,
        }),
        kind: kind.into(),
    }
}

/// Delivers `ev` `copies` times, signed as Stripe signs it (`Stripe-Signature`, with the
/// first configured webhook secret).
async fn deliver(sb: &Sandbox, ev: &wire::Event, copies: Copies, delay_ms: u64) -> Vec<Value> {
    let Ok(body) = serde_json::to_vec(ev) else {
        return Vec::new();
    };
    sb.inner
        .courier
        .deliver(vec![(ev.id.clone(), body)], copies, delay_ms)
        .await
}

async fn pay(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d = match control_body::<Delivery>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match d.copies() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let status = d.payment_status.clone().unwrap_or_else(|| "paid".into());
    if status != "paid" && status != "unpaid" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "payment_status must be \"paid\" or \"unpaid\"",
            Some("payment_status"),
        );
    }
    let session = match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("open"),
        |s| {
            format!(
                "This Checkout Session is {} and can no longer be paid.",
                s.status.as_deref().unwrap_or("")
            )
        },
        |s| {
            s.status = Some("complete".into());
            s.payment_status = status;
            s.payment_intent = Some(rand_id("pi_", 24));
            if let Some(a) = d.amount_total {
                s.amount_total = Some(a);
            }
        },
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ev = event("checkout.session.completed", &session);
    let deliveries = deliver(&sb, &ev, copies, d.delay_ms.unwrap_or(0)).await;
    Json(json!({ "session": session, "event": ev, "deliveries": deliveries })).into_response()
}

async fn settle(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d = match control_body::<Delivery>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match d.copies() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let succeeded = match d.outcome.as_deref().unwrap_or("succeeded") {
        "succeeded" => true,
        "failed" => false,
        _ => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "outcome must be \"succeeded\" or \"failed\"",
                Some("outcome"),
            );
        }
    };
    let session = match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("complete") && s.payment_status == "unpaid",
        |_| "Only a completed, unpaid (delayed) payment can be settled.".into(),
        |s| {
            if succeeded {
                s.payment_status = "paid".into();
            }
        },
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let kind = if succeeded {
        "checkout.session.async_payment_succeeded"
    } else {
        "checkout.session.async_payment_failed"
    };
    let ev = event(kind, &session);
    let deliveries = deliver(&sb, &ev, copies, d.delay_ms.unwrap_or(0)).await;
    Json(json!({ "session": session, "event": ev, "deliveries": deliveries })).into_response()
}

/// Corrects what a completed session reports as captured (the provider's record fixed after
/// a mismatch, e.g. the rest of the amount collected). No event is sent.
async fn amend(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d = match control_body::<Delivery>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(amount) = d.amount_total.filter(|a| *a >= 0) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "amount_total (a non-negative integer) is required",
            Some("amount_total"),
        );
    };
    match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("complete"),
        |_| "Only a completed session can be amended.".into(),
        |s| s.amount_total = Some(amount),
    ) {
        Ok(session) => Json(json!({ "session": session })).into_response(),
        Err(r) => r,
    }
}

async fn checkout_page(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(s) = sb.state().sessions.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>".to_owned()),
        )
            .into_response();
    };
    let amount = s.amount_total.unwrap_or(0);
    let cur = s.currency.clone().unwrap_or_default().to_uppercase();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox checkout</title></head><body>\
         <h1>fulfilld sandbox — Stripe Checkout</h1><p>Session {id}: {amount} minor units of {cur}, status {st}.</p>\
         <button onclick=\"fetch('/sandbox/stripe/checkout/sessions/{id}/pay',{{method:'POST'}}).then(r=>r.json()).then(j=>{{document.body.insertAdjacentHTML('beforeend','<pre>'+JSON.stringify(j.deliveries)+'</pre>');if('{ok}')location.href='{ok}'}})\">Pay</button>\
         </body></html>",
        st = s.status.unwrap_or_default(),
        // Stripe fills in the session's id where the URL names it
        // (https://docs.stripe.com/payments/checkout/custom-success-page).
        ok = s
            .success_url
            .unwrap_or_default()
            .replace("{CHECKOUT_SESSION_ID}", &id)
            .replace('\'', "%27"),
    ))
    .into_response()
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
