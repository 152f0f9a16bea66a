//! The Razorpay part of the sandbox: Orders, Payments (fetch, capture, refund), Basic auth
//! with the configured key, Razorpay's error envelope, and webhooks signed with the webhook
//! secret (`X-Razorpay-Signature`, `x-razorpay-event-id`).
//!
//! Buyer and provider controls (not Razorpay API):
//! - `POST /sandbox/razorpay/orders/{id}/pay` `{"webhook": "once"|"twice"|"none",
//!   "delay_ms": N, "capture": "automatic"|"manual"|"race", "outcome": "paid"|"failed",
//!   "amount": N}` — the buyer pays in Checkout.js. Answers exactly what Checkout.js hands
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
        Some(s) => Err(rz_error(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Injected by the sandbox: the API failed this request.",
            None,
        )),
        None => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
struct CreateOrder {
    amount: Option<i64>,
    currency: Option<String>,
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    notes: Value,
}

/// Razorpay's refusal of a three-decimal amount whose last digit is not 0: "you should pass
/// the last decimal number as 0 for three decimal currency payments"
/// (<https://razorpay.com/docs/api/orders/entity>, `amount`; KWD, BHD and OMR are its
/// examples, JOD and the other ISO three-decimal currencies count the same way).
fn amount_refused(currency: &str, amount: i64) -> Option<Response> {
    let three = matches!(
        currency.to_ascii_uppercase().as_str(),
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND"
    );
    (three && amount % 10 != 0).then(|| {
        rz_error(
            StatusCode::BAD_REQUEST,
            "The last digit of an amount in a three decimal currency must be 0",
            Some("amount"),
        )
    })
}

async fn create_order(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let b: CreateOrder = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                &format!("The request body is not valid JSON: {e}"),
                None,
            );
        }
    };
    let Some(amount) = b.amount.filter(|a| *a >= 100) else {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The amount must be atleast INR 1.00",
            Some("amount"),
        );
    };
    let Some(currency) = b.currency.filter(|c| c.len() == 3) else {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The currency field is required.",
            Some("currency"),
        );
    };
    if let Some(r) = amount_refused(&currency, amount) {
        return r;
    }
    if b.receipt.as_ref().is_some_and(|r| r.len() > 40) {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The receipt may not be greater than 40 characters.",
            Some("receipt"),
        );
    }
    let order = wire::Order {
        id: rand_id("order_", 14),
        entity: "order".into(),
        amount,
        amount_paid: 0,
        amount_due: amount,
        currency,
        receipt: b.receipt,
        status: "created".into(),
        attempts: 0,
        notes: if b.notes.is_object() {
            b.notes
        } else {
            json!([])
        },
        created_at: now_s(),
    };
    sb.state().orders.insert(order.id.clone(), order.clone());
    Json(order).into_response()
}

async fn get_order(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().orders.get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => no_such_id(),
    }
}

async fn order_payments(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let mut st = sb.state();
    if !st.orders.contains_key(&id) {
        return no_such_id();
    }
    let mut items: Vec<wire::Payment> = st
        .payments
        .values()
        .filter(|p| p.order_id.as_deref() == Some(id.as_str()))
        .cloned()
        .collect();
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    for p in &items {
        captured_after_read(&mut st, &p.id);
    }
    Json(wire::Collection {
        entity: "collection".into(),
        count: items.len(),
        items,
    })
    .into_response()
}

/// `GET /v1/payments`: newest first; `from`, `to` (Unix seconds), `count` (≤ 100, default
/// 10) and `skip`.
async fn list_payments(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let num = |k: &str, default: i64| -> Result<i64, Response> {
        match q.iter().find(|(key, _)| key == k) {
            None => Ok(default),
            Some((_, v)) => v.parse::<i64>().map_err(|_| {
                rz_error(
                    StatusCode::BAD_REQUEST,
                    &format!("The {k} must be an integer."),
                    Some(k),
                )
            }),
        }
    };
    let (from, to, count, skip) = match (
        num("from", 0),
        num("to", i64::MAX),
        num("count", 10),
        num("skip", 0),
    ) {
        (Ok(f), Ok(t), Ok(c), Ok(s)) => (f, t, c, s),
        (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return r,
    };
    if !(1..=100).contains(&count) || skip < 0 {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The count may not be greater than 100.",
            Some("count"),
        );
    }
    let mut items: Vec<wire::Payment> = sb
        .state()
        .payments
        .values()
        .filter(|p| p.created_at >= from && p.created_at <= to)
        .cloned()
        .collect();
    items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let items: Vec<_> = items
        .into_iter()
        .skip(skip as usize)
        .take(count as usize)
        .collect();
    Json(wire::Collection {
        entity: "collection".into(),
        count: items.len(),
        items,
    })
    .into_response()
}

/// `GET /v1/payments/{payment}/refunds/{id}`.
async fn get_refund(
    State(sb): State<Sandbox>,
    Path((payment, id)): Path<(String, String)>,
) -> Response {
    let st = sb.state();
    match st
        .refunds
        .iter()
        .find(|r| r.id == id && r.payment_id == payment)
    {
        Some(r) => Json(r.clone()).into_response(),
        None => no_such_id(),
    }
}

async fn get_payment(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let mut st = sb.state();
    let Some(p) = st.payments.get(&id).cloned() else {
        return no_such_id();
    };
    captured_after_read(&mut st, &id);
    Json(p).into_response()
}

/// After a read of a payment marked `capture_after_read`, Razorpay's automatic capture
/// takes it: a capture call then answers "This payment has already been captured".
fn captured_after_read(st: &mut St, payment_id: &str) {
    if !st.capture_after_read.remove(payment_id) {
        return;
    }
    let Some(p) = st.payments.get_mut(payment_id) else {
        return;
    };
    p.status = "captured".into();
    p.captured = true;
    let (amount, order_id) = (p.amount, p.order_id.clone());
    if let Some(o) = order_id.and_then(|oid| st.orders.get_mut(&oid)) {
        o.status = "paid".into();
        o.amount_paid = amount;
        o.amount_due = 0;
    }
}

async fn capture(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let amount = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["amount"].as_i64());
    let (payment, order) = {
        let mut st = sb.state();
        let Some(p) = st.payments.get_mut(&id) else {
            return no_such_id();
        };
        if p.status != "authorized" {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "This payment has already been captured",
                None,
            );
        }
        if amount != Some(p.amount) {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "Capture amount must be equal to the amount authorized",
                Some("amount"),
            );
        }
        p.status = "captured".into();
        p.captured = true;
        let p = p.clone();
        let order = p.order_id.clone().and_then(|oid| {
            let o = st.orders.get_mut(&oid)?;
            o.status = "paid".into();
            o.amount_paid = p.amount;
            o.amount_due = 0;
            Some(o.clone())
        });
        (p, order)
    };
    // A capture made through the API is announced like any other.
    let mut events = vec![event("payment.captured", Some(&payment), None)];
    if let Some(o) = &order {
        events.push(event("order.paid", Some(&payment), Some(o)));
    }
    deliver(&sb, &events, Copies::ONCE, 0).await;
    Json(payment).into_response()
}

async fn refund(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let key = headers
        .get("x-refund-idempotency")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // "The idempotency key must be at least 10 character long and can contain alphabets,
    // numbers, hyphens and underscores only" (razorpay.com/docs/api/refunds/normal-refunds-idempotent).
    if let Some(k) = &key
        && !crate::providers::razorpay::refund_key_ok(k)
    {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The idempotency key must be at least 10 characters of letters, digits, hyphens and underscores",
            Some("X-Refund-Idempotency"),
        );
    }
    let parsed = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let amount = parsed["amount"].as_i64();
    let notes = if parsed["notes"].is_object() {
        parsed["notes"].clone()
    } else {
        json!([])
    };
    let (refund, payment) = {
        let mut st = sb.state();
        let pending = st.refunds_pending;
        if let Some(existing) = key.as_ref().and_then(|k| st.refund_keys.get(k)).cloned()
            && let Some(r) = st.refunds.iter().find(|r| r.id == existing)
        {
            return Json(r.clone()).into_response();
        }
        let Some(p) = st.payments.get_mut(&id) else {
            return no_such_id();
        };
        if p.status != "captured" {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "The payment has been fully refunded already or is not captured",
                None,
            );
        }
        let amount = amount.unwrap_or(p.amount - p.amount_refunded);
        if let Some(r) = amount_refused(&p.currency, amount) {
            return r;
        }
        if amount <= 0 || amount > p.amount - p.amount_refunded {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "The refund amount provided is greater than amount captured",
                Some("amount"),
            );
        }
        p.amount_refunded += amount;
        if p.amount_refunded == p.amount {
            p.status = "refunded".into();
        }
        let refund = wire::Refund {
            id: rand_id("rfnd_", 14),
            entity: "refund".into(),
            amount,
            currency: p.currency.clone(),
            payment_id: p.id.clone(),
            status: if pending { "pending" } else { "processed" }.into(),
            notes,
            created_at: now_s(),
        };
        let payment = p.clone();
        if let Some(k) = key {
            st.refund_keys.insert(k, refund.id.clone());
        }
        st.refunds.push(refund.clone());
        (refund, payment)
    };
    // Razorpay announces every refund, whoever made it: refund.created, then
    // refund.processed (or refund.failed) once the bank has it
    // (<https://razorpay.com/docs/webhooks/payloads/refunds/>).
    let kind = if refund.status == "pending" {
        "refund.created"
    } else {
        "refund.processed"
    };
    announce_refund(&sb, kind, &refund, &payment).await;
    Json(refund).into_response()
}

async fn announce_refund(
    sb: &Sandbox,
    kind: &str,
    refund: &wire::Refund,
    payment: &wire::Payment,
) -> Vec<Value> {
    let (id, mut ev) = event(kind, Some(payment), None);
    ev.contains.insert(0, "refund".into());
    ev.payload.refund = Some(wire::Wrapped {
        entity: refund.clone(),
    });
    deliver(sb, &[(id, ev)], Copies::ONCE, 0).await
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

/// `POST /sandbox/razorpay/payments/{id}/dispute`: the buyer's bank opens a dispute on a
/// captured payment, announced as `payment.dispute.created`
/// (<https://razorpay.com/docs/webhooks/payloads/disputes/>).
async fn dispute(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(payment) = sb.state().payments.get(&id).cloned() else {
        return no_such_id();
    };
    let dispute = json!({
        "id": rand_id("disp_", 14), "entity": "dispute", "payment_id": payment.id,
        "amount": payment.amount, "currency": payment.currency, "amount_deducted": 0,
        "reason_code": "chargeback", "respond_by": now_s() + 7 * 86_400, "status": "open",
        "phase": "chargeback", "created_at": now_s(),
    });
    let (eid, mut ev) = event("payment.dispute.created", Some(&payment), None);
    ev.contains.push("dispute".into());
    ev.payload.dispute = Some(wire::Wrapped {
        entity: dispute.clone(),
    });
    let deliveries = deliver(&sb, &[(eid, ev)], Copies::ONCE, 0).await;
    Json(json!({ "dispute": dispute, "deliveries": deliveries })).into_response()
}

/// `{"status": "pending"|"processed"}`: how refunds made from now on start.
async fn refund_mode(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pending = match d.status.as_deref() {
        Some("pending") => true,
        Some("processed") => false,
        _ => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "status must be \"pending\" or \"processed\"",
                Some("status"),
            );
        }
    };
    sb.state().refunds_pending = pending;
    Json(json!({ "refunds_start": d.status })).into_response()
}

/// `{"outcome": "processed"|"failed"}`: a pending refund ends, announced with
/// `refund.processed` or `refund.failed`; a failed one gives the payment its money back to
/// refund again.
async fn settle_refund(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let outcome = d.outcome.unwrap_or_else(|| "processed".into());
    if !matches!(outcome.as_str(), "processed" | "failed") {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "outcome must be \"processed\" or \"failed\"",
            Some("outcome"),
        );
    }
    let (refund, payment) = {
        let mut st = sb.state();
        let Some(r) = st.refunds.iter_mut().find(|r| r.id == id) else {
            return no_such_id();
        };
        if r.status != "pending" {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "Only a pending refund settles",
                None,
            );
        }
        r.status = outcome.clone();
        let refund = r.clone();
        let Some(p) = st.payments.get_mut(&refund.payment_id) else {
            return no_such_id();
        };
        if outcome == "failed" {
            p.amount_refunded -= refund.amount;
            if p.status == "refunded" {
                p.status = "captured".into();
            }
        }
        (refund, p.clone())
    };
    let deliveries = if d.webhook.as_deref() == Some("none") {
        Vec::new()
    } else {
        announce_refund(&sb, &format!("refund.{outcome}"), &refund, &payment).await
    };
    Json(json!({ "refund": refund, "deliveries": deliveries })).into_response()
}

async fn list_refunds(State(sb): State<Sandbox>) -> Json<Value> {
    Json(json!({ "entity": "collection", "items": sb.state().refunds }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pay {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    capture: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// The amount the payment reports, when it should differ from the order's.
    #[serde(default)]
    amount: Option<i64>,
}

fn event(
    kind: &str,
    payment: Option<&wire::Payment>,
    order: Option<&wire::Order>,
) -> (String, wire::Event) {
    let mut contains = Vec::new();
    let mut payload = wire::EventPayload::default();
    if let Some(p) = payment {
        contains.push("payment".to_owned());
        payload.payment = Some(wire::Wrapped { entity: p.clone() });
    }
    if let Some(o) = order {
        contains.push("order".to_owned());
        payload.order = Some(wire::Wrapped { entity: o.clone() });
    }
    let ev = wire::Event {
        entity: "event".into(),
        account_id: "acc_Sandbox0000000".into(),
        event: kind.into(),
        contains,
        payload,
        created_at: now_s(),
    };
    (rand_id("evt_", 14), ev)
}

/// Delivers the events in order, each `copies` times, signed as Razorpay signs them.
async fn deliver(
    sb: &Sandbox,
    events: &[(String, wire::Event)],
    copies: Copies,
    delay_ms: u64,
) -> Vec<Value> {
    let bodies = events
        .iter()
        .filter_map(|(id, ev)| serde_json::to_vec(ev).ok().map(|b| (id.clone(), b)))
        .collect();
    sb.inner.courier.deliver(bodies, copies, delay_ms).await
}

async fn pay(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d: Pay = match control_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match copies(d.webhook.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (manual, race) = match d.capture.as_deref().unwrap_or("automatic") {
        "automatic" => (false, false),
        "manual" => (true, false),
        "race" => (true, true),
        _ => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "capture must be \"automatic\", \"manual\" or \"race\"",
                Some("capture"),
            );
        }
    };
    let failed = match d.outcome.as_deref().unwrap_or("paid") {
        "paid" => false,
        "failed" => true,
        _ => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "outcome must be \"paid\" or \"failed\"",
                Some("outcome"),
            );
        }
    };
    let (payment, order) = {
        let mut st = sb.state();
        let Some(o) = st.orders.get_mut(&id) else {
            return no_such_id();
        };
        if o.status == "paid" {
            return rz_error(StatusCode::BAD_REQUEST, "Order has already been paid", None);
        }
        o.attempts += 1;
        let status = if failed {
            "failed"
        } else if manual {
            "authorized"
        } else {
            "captured"
        };
        let amount = d.amount.unwrap_or(o.amount);
        if status == "captured" {
            o.status = "paid".into();
            o.amount_paid = amount;
            o.amount_due = 0;
        } else {
            o.status = "attempted".into();
        }
        let payment = wire::Payment {
            id: rand_id("pay_", 14),
            entity: "payment".into(),
            amount,
            currency: o.currency.clone(),
            status: status.into(),
            order_id: Some(o.id.clone()),
            method: Some("upi".into()),
            captured: status == "captured",
            amount_refunded: 0,
            email: Some("buyer@example.com".into()),
            notes: json!([]),
            error_code: failed.then(|| "BAD_REQUEST_ERROR".into()),
            error_description: failed.then(|| "Payment failed because the bank declined it".into()),
            created_at: now_s(),
        };
        let order = o.clone();
        st.payments.insert(payment.id.clone(), payment.clone());
        if race {
            st.capture_after_read.insert(payment.id.clone());
        }
        (payment, order)
    };
    let mut events = Vec::new();
    if failed {
        events.push(event("payment.failed", Some(&payment), None));
    } else {
        let mut authorized = payment.clone();
        authorized.status = "authorized".into();
        authorized.captured = false;
        events.push(event("payment.authorized", Some(&authorized), None));
        if !manual {
            events.push(event("payment.captured", Some(&payment), None));
            events.push(event("order.paid", Some(&payment), Some(&order)));
        }
    }
    let deliveries = deliver(&sb, &events, copies, d.delay_ms.unwrap_or(0)).await;
    let sent: Vec<Value> = events
        .iter()
        .map(|(id, ev)| json!({ "id": id, "body": serde_json::to_string(ev).unwrap_or_default() }))
        .collect();
    Json(json!({
        "razorpay_payment_id": payment.id,
        "razorpay_order_id": order.id,
        "razorpay_signature": sign_payment(&sb.inner.key_secret, &order.id, &payment.id),
        "events": sent,
        "deliveries": deliveries,
    }))
    .into_response()
}

/// The stand-in for Razorpay's Checkout.js (`GET /sandbox/razorpay/checkout.js`): the same
/// surface a shop page uses (<https://razorpay.com/docs/payments/payment-gateway/web-integration/standard/build-integration/>)
/// — `new Razorpay({key, order_id, handler, modal: {ondismiss}})`, `.on("payment.failed",
/// cb)`, `.open()` — over a frame served by the sandbox, which answers the page by
/// `postMessage`: the signed `{razorpay_payment_id, razorpay_order_id, razorpay_signature}`
/// to `handler`, or `{error: {code, description, source, step, reason, metadata}}` to the
/// `payment.failed` callbacks while the frame stays open for another try, as Razorpay's does.
const CHECKOUT_JS: &str = r#"(function () {
  "use strict";
  var origin = new URL(document.currentScript.src).origin;
  function Razorpay(options) { this.options = options || {}; this.handlers = {}; }
  Razorpay.prototype.on = function (event, cb) {
    (this.handlers[event] = this.handlers[event] || []).push(cb);
  };
  Razorpay.prototype.open = function () {
    var self = this, o = this.options;
    var frame = document.createElement("iframe");
    frame.id = "razorpay-checkout-frame";
    frame.title = "Razorpay Checkout";
    frame.src = origin + "/sandbox/razorpay/checkout?key_id=" + encodeURIComponent(o.key || "") +
      "&order_id=" + encodeURIComponent(o.order_id || "");
    frame.style.cssText = "position:fixed;top:10%;left:20%;width:60%;height:60%;border:1px solid #888;background:#fff;z-index:10";
    function done() { window.removeEventListener("message", listen); frame.remove(); }
    function listen(ev) {
      if (ev.origin !== origin || ev.source !== frame.contentWindow) return;
      var m = ev.data || {};
      if (m.event === "payment.success") { done(); if (o.handler) o.handler(m.response); }
      else if (m.event === "payment.failed") {
        (self.handlers["payment.failed"] || []).forEach(function (cb) { cb(m.response); });
      } else if (m.event === "dismiss") { done(); if (o.modal && o.modal.ondismiss) o.modal.ondismiss(); }
    }
    window.addEventListener("message", listen);
    document.body.appendChild(frame);
  };
  window.Razorpay = Razorpay;
})();
"#;

async fn checkout_js() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        CHECKOUT_JS,
    )
        .into_response()
}

/// `GET /sandbox/razorpay/checkout?key_id=…&order_id=…`: the frame Checkout.js opens. The
/// buyer pays (or has the bank decline, to try again); the outcome goes to the page.
async fn checkout_frame(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let esc = crate::domain::html_escape;
    let (key, id) = (
        q.get("key_id").cloned().unwrap_or_default(),
        q.get("order_id").cloned().unwrap_or_default(),
    );
    let order = sb.state().orders.get(&id).cloned();
    let Some(o) = order.filter(|_| key == sb.inner.key_id) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::response::Html(
                "<h1>Razorpay: the key or the order id is not valid</h1>".to_owned(),
            ),
        )
            .into_response();
    };
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Razorpay Checkout</title></head><body>\
         <h1>fulfilld sandbox — Razorpay</h1><p>Order {id}: {amount} (minor units) {cur}, status {st}.</p>\
         <button id=\"pay\">Pay</button> <button id=\"fail\">Pay, and have the bank decline</button>\
         <p id=\"said\"></p>\
         <script>function pay(fail){{\
           fetch('/sandbox/razorpay/orders/{id}/pay',{{method:'POST',headers:{{'content-type':'application/json'}},\
             body:JSON.stringify(fail?{{outcome:'failed'}}:{{}})}}).then(r=>r.json()).then(j=>{{\
             if(fail){{document.getElementById('said').textContent='Payment failed: try again.';\
               parent.postMessage({{event:'payment.failed',response:{{error:{{code:'BAD_REQUEST_ERROR',\
                 description:'Payment failed because the bank declined it',source:'bank',step:'payment_authorization',\
                 reason:'payment_failed',metadata:{{order_id:j.razorpay_order_id,payment_id:j.razorpay_payment_id}}}}}}}},'*')}}\
             else parent.postMessage({{event:'payment.success',response:{{razorpay_payment_id:j.razorpay_payment_id,\
               razorpay_order_id:j.razorpay_order_id,razorpay_signature:j.razorpay_signature}}}},'*')}})}}\
           document.getElementById('pay').onclick=function(){{pay(false)}};\
           document.getElementById('fail').onclick=function(){{pay(true)}};</script>\
         </body></html>",
        id = esc(&o.id),
        amount = o.amount,
        cur = esc(&o.currency),
        st = esc(&o.status),
    ))
    .into_response()
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
