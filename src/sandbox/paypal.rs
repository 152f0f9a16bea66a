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
//!   "delay_ms": N, "capture": "completed"|"pending"|"declined", "amount": "12.00"}` — the
//!   buyer approves the order. Answers what PayPal's JS SDK hands `onApprove` (`orderID`,
//!   `payerID`, …) plus the `CHECKOUT.ORDER.APPROVED` event and its deliveries. `capture`
//!   decides what a later capture call does: complete, stay pending, or fail with
//!   `INSTRUMENT_DECLINED`; `amount` makes the capture report another amount.
//! - `POST /sandbox/paypal/orders/{id}/void` — the order is voided (`CHECKOUT.ORDER.VOIDED`).
//! - `POST /sandbox/paypal/captures/{id}/settle` `{"outcome": "completed"|"denied"}` — a
//!   pending capture settles (`PAYMENT.CAPTURE.COMPLETED` or `PAYMENT.CAPTURE.DENIED`).
//! - `POST /sandbox/paypal/faults` `{"api_errors": [503, "timeout", …]}` — the next API calls fail
//!   with those statuses, or do their work and time out.
//! - `GET /sandbox/paypal/refunds` — every refund made.
//! - `POST /sandbox/paypal/captures/{id}/dispute` — the buyer disputes a capture:
//!   `CUSTOMER.DISPUTE.CREATED`.
//! - `POST /sandbox/paypal/refunds/mode` `{"status": "pending"|"completed"}` — how refunds
//!   start; `POST /sandbox/paypal/refunds/{id}/settle` `{"outcome": "completed"|"failed"}`
//!   ends a pending one (a completed one is announced as `PAYMENT.CAPTURE.REFUNDED`).
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

/// The sandbox's signing key and its self-signed certificate (PEM), made once per process:
/// an RSA key takes a moment to generate.
fn signing_identity() -> anyhow::Result<&'static (RsaPrivateKey, String)> {
    static IDENTITY: OnceLock<(RsaPrivateKey, String)> = OnceLock::new();
    if let Some(id) = IDENTITY.get() {
        return Ok(id);
    }
    let made = make_identity()?;
    Ok(IDENTITY.get_or_init(|| made))
}

fn make_identity() -> anyhow::Result<(RsaPrivateKey, String)> {
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::EncodePem;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let subject =
        Name::from_str("CN=messageverificationcerts.sandbox.fulfilld,O=fulfilld sandbox")?;
    let builder = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        Validity::from_now(std::time::Duration::from_secs(10 * 365 * 86_400))?,
        subject,
        spki,
        &signer,
    )?;
    let cert = builder.build::<rsa::pkcs1v15::Signature>()?;
    let pem = cert.to_pem(x509_cert::der::pem::LineEnding::LF)?;
    Ok((key, pem))
}

/// The headers PayPal sends with a delivery of `body`, signed with `key`: a fresh
/// transmission id (first), the time, the signature, the certificate URL and the algorithm.
pub fn signature_headers(
    key: &RsaPrivateKey,
    webhook_id: &str,
    cert_url: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    signature_headers_at(
        key,
        webhook_id,
        cert_url,
        body,
        &uuid_like(),
        &rfc3339_now(),
    )
}

/// [`signature_headers`] with a given transmission id and time (to build a replay, or a
/// message from the past).
pub fn signature_headers_at(
    key: &RsaPrivateKey,
    webhook_id: &str,
    cert_url: &str,
    body: &[u8],
    id: &str,
    time: &str,
) -> Vec<(&'static str, String)> {
    let (id, time) = (id.to_owned(), time.to_owned());
    let message = signed_message(&id, &time, webhook_id, body);
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let sig = BASE64.encode(signer.sign(message.as_bytes()).to_bytes());
    vec![
        ("paypal-transmission-id", id),
        ("paypal-transmission-time", time),
        ("paypal-transmission-sig", sig),
        ("paypal-cert-url", cert_url.to_owned()),
        ("paypal-auth-algo", "SHA256withRSA".to_owned()),
        ("paypal-auth-version", "v2".to_owned()),
    ]
}

/// The sandbox's signing key (made on first use, shared by every sandbox in the process).
pub fn signing_key() -> anyhow::Result<&'static RsaPrivateKey> {
    Ok(&signing_identity()?.0)
}

fn rfc3339_now() -> String {
    let ms = crate::domain::now_ms();
    crate::domain::rfc3339(ms - ms.rem_euclid(1000))
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
        Some(s) => Err(pp_error(
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

async fn token(State(sb): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let creds = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(basic_credentials);
    let expected = format!("{}:{}", sb.inner.client_id, sb.inner.client_secret);
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        let body = wire::OAuthError {
            error: error.into(),
            error_description: description.into(),
        };
        (status, Json(body)).into_response()
    };
    if creds.as_deref() != Some(expected.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client Authentication failed",
        );
    }
    let grant = form_urlencoded::parse(&body).find(|(k, _)| k == "grant_type");
    if grant.as_ref().map(|(_, v)| v.as_ref()) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Grant Type is NULL",
        );
    }
    let t = wire::Token {
        scope: "https://uri.paypal.com/services/payments/payment https://uri.paypal.com/services/payments/refund".into(),
        access_token: rand_id("A21AA", 90),
        token_type: "Bearer".into(),
        app_id: "APP-80W284485P519543T".into(),
        expires_in: 32_400,
        nonce: format!("{}{}", rfc3339_now(), rand_id("", 43)),
    };
    sb.state().tokens.push(t.access_token.clone());
    Json(t).into_response()
}

fn order_links(base: &str, o: &wire::Order) -> Vec<wire::Link> {
    let link = |href: String, rel: &str, method: &str| wire::Link {
        href,
        rel: rel.into(),
        method: Some(method.into()),
    };
    let me = format!("{base}/v2/checkout/orders/{}", o.id);
    let mut links = vec![link(me.clone(), "self", "GET")];
    match o.status.as_str() {
        "CREATED" | "PAYER_ACTION_REQUIRED" => {
            let rel = if o.status == "CREATED" {
                "approve"
            } else {
                "payer-action"
            };
            links.push(link(
                format!("{base}/sandbox/paypal/checkoutnow?token={}", o.id),
                rel,
                "GET",
            ));
        }
        "APPROVED" => links.push(link(format!("{me}/capture"), "capture", "POST")),
        _ => {}
    }
    links
}

/// PayPal's refusal of an amount in a currency it does not take, or with more decimals than
/// the currency has at PayPal (<https://developer.paypal.com/api/rest/reference/currency-codes/>:
/// HUF, JPY and TWD "do not support decimals"; the others take two), with the Orders API's
/// documented issues `CURRENCY_NOT_SUPPORTED` and `DECIMAL_PRECISION`.
fn money_refused(m: &wire::Money) -> Option<Response> {
    const TAKEN: [&str; 25] = [
        "AUD", "BRL", "CAD", "CNY", "CZK", "DKK", "EUR", "HKD", "HUF", "ILS", "INR", "JPY", "MYR",
        "MXN", "TWD", "NZD", "NOK", "PHP", "PLN", "GBP", "SGD", "SEK", "CHF", "THB", "USD",
    ];
    if !TAKEN.contains(&m.currency_code.as_str()) {
        return Some(unprocessable(
            "CURRENCY_NOT_SUPPORTED",
            "Currency code is not currently supported.",
        ));
    }
    let decimals = m.value.split_once('.').map_or(0, |(_, f)| f.len());
    let allowed = if matches!(m.currency_code.as_str(), "HUF" | "JPY" | "TWD") {
        0
    } else {
        2
    };
    (decimals > allowed).then(|| {
        unprocessable(
            "DECIMAL_PRECISION",
            "If the currency supports decimals, only two decimal place precision is supported.",
        )
    })
}

async fn create_order(State(sb): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let key = request_key(&headers, "orders");
    if let Some(r) = replay(&sb, &key) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return invalid_request(
            "MALFORMED_REQUEST_JSON",
            "",
            "The request JSON is not well formed.",
        );
    };
    if !matches!(b["intent"].as_str(), Some("CAPTURE" | "AUTHORIZE")) {
        return invalid_request(
            "INVALID_PARAMETER_VALUE",
            "/intent",
            "intent must be CAPTURE or AUTHORIZE.",
        );
    }
    let Some(units) = b["purchase_units"].as_array().filter(|u| !u.is_empty()) else {
        return invalid_request(
            "MISSING_REQUIRED_PARAMETER",
            "/purchase_units",
            "A required field / parameter is missing.",
        );
    };
    let mut purchase_units = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let unit: wire::PurchaseUnit = match serde_json::from_value(u.clone()) {
            Ok(u) => u,
            Err(_) => {
                return invalid_request(
                    "MISSING_REQUIRED_PARAMETER",
                    &format!("/purchase_units/{i}/amount"),
                    "A required field / parameter is missing.",
                );
            }
        };
        if let Some(r) = money_refused(&unit.amount) {
            return r;
        }
        let valid = unit.amount.minor().is_some_and(|v| v > 0);
        if !valid {
            return unprocessable(
                "DECIMAL_PRECISION",
                "If the currency supports decimals, only two decimal place precision is supported.",
            );
        }
        purchase_units.push(unit);
    }
    let status = if b.get("payment_source").is_some() {
        "PAYER_ACTION_REQUIRED"
    } else {
        "CREATED"
    };
    let mut order = wire::Order {
        id: pp_id(),
        intent: b["intent"].as_str().unwrap_or("CAPTURE").into(),
        status: status.into(),
        purchase_units,
        payer: None,
        create_time: Some(rfc3339_now()),
        links: Vec::new(),
    };
    order.links = order_links(&sb.inner.base, &order);
    {
        let mut st = sb.state();
        let back = &b["payment_source"]["paypal"]["experience_context"]["return_url"];
        if let Some(url) = back.as_str() {
            st.return_urls.insert(order.id.clone(), url.to_owned());
        }
        st.orders.insert(order.id.clone(), order.clone());
    }
    let body = serde_json::to_value(&order).unwrap_or_default();
    remember(&sb, key, StatusCode::CREATED, body)
}

async fn get_order(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().orders.get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => not_found(),
    }
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

async fn capture(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = request_key(&headers, "capture");
    if let Some(r) = replay(&sb, &key) {
        return r;
    }
    let (order, captured) = {
        let mut st = sb.state();
        let plan = st.plans.get(&id).cloned();
        let Some(o) = st.orders.get_mut(&id) else {
            return not_found();
        };
        match o.status.as_str() {
            "APPROVED" => {}
            "COMPLETED" => {
                return unprocessable(
                    "ORDER_ALREADY_CAPTURED",
                    "Order already captured.If 'intent=CAPTURE' only one capture per order is allowed.",
                );
            }
            _ => {
                return unprocessable(
                    "ORDER_NOT_APPROVED",
                    "Payer has not yet approved the Order for payment. Please redirect the payer to the 'rel':'approve' url returned as part of the HATEOAS links within the Create Order call or provide a valid payment_source in the request.",
                );
            }
        }
        let plan = plan.unwrap_or(Plan {
            capture: "completed".into(),
            amount: None,
        });
        if plan.capture == "declined" {
            return unprocessable(
                "INSTRUMENT_DECLINED",
                "The instrument presented  was either declined by the processor or bank, or it can't be used for this payment.",
            );
        }
        let Some(unit) = o.purchase_units.first_mut() else {
            return not_found();
        };
        let mut amount = unit.amount.clone();
        if let Some(v) = plan.amount {
            amount.value = v;
        }
        let capture = wire::Capture {
            id: pp_id(),
            status: if plan.capture == "pending" {
                "PENDING"
            } else {
                "COMPLETED"
            }
            .into(),
            amount,
            custom_id: unit.custom_id.clone(),
            final_capture: true,
            supplementary_data: Some(wire::SupplementaryData {
                related_ids: wire::RelatedIds {
                    order_id: Some(id.clone()),
                },
            }),
            create_time: Some(rfc3339_now()),
            links: Vec::new(),
        };
        unit.payments = Some(wire::Payments {
            captures: vec![capture.clone()],
        });
        o.status = "COMPLETED".into();
        let base = sb.inner.base.clone();
        o.links = order_links(&base, o);
        let order = o.clone();
        st.captures.insert(capture.id.clone(), id.clone());
        (order, capture)
    };
    let kind = if captured.status == "PENDING" {
        "PAYMENT.CAPTURE.PENDING"
    } else {
        "PAYMENT.CAPTURE.COMPLETED"
    };
    sb.inner
        .courier
        .deliver(vec![capture_event(kind, &captured)], Copies::ONCE, 0)
        .await;
    let body = serde_json::to_value(&order).unwrap_or_default();
    remember(&sb, key, StatusCode::CREATED, body)
}

/// The capture with this id and its order, for reading or changing.
fn with_capture<T>(
    st: &mut St,
    capture_id: &str,
    f: impl FnOnce(&mut wire::Capture) -> T,
) -> Option<T> {
    let order_id = st.captures.get(capture_id)?.clone();
    let o = st.orders.get_mut(&order_id)?;
    let c = o
        .purchase_units
        .iter_mut()
        .filter_map(|u| u.payments.as_mut())
        .flat_map(|p| p.captures.iter_mut())
        .find(|c| c.id == capture_id)?;
    Some(f(c))
}

/// `GET /v2/payments/refunds/{id}`.
async fn get_refund(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().refunds.iter().find(|(_, r)| r.id == id) {
        Some((_, r)) => Json(r.clone()).into_response(),
        None => not_found(),
    }
}

async fn get_capture(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match with_capture(&mut sb.state(), &id, |c| c.clone()) {
        Some(c) => Json(c).into_response(),
        None => not_found(),
    }
}

async fn refund(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let key = request_key(&headers, "refund");
    if let Some(r) = replay(&sb, &key) {
        return r;
    }
    let asked: Option<wire::Money> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["amount"].clone()).ok());
    if let Some(r) = asked.as_ref().and_then(money_refused) {
        return r;
    }
    let refunded_so_far = |st: &St| -> i64 {
        st.refunds
            .iter()
            .filter(|(cid, _)| *cid == id)
            .filter(|(_, r)| !matches!(r.status.as_str(), "FAILED" | "CANCELLED"))
            .filter_map(|(_, r)| r.amount.as_ref().and_then(wire::Money::minor))
            .sum()
    };
    let refund = {
        let mut st = sb.state();
        let before = refunded_so_far(&st);
        let outcome = with_capture(&mut st, &id, |c| {
            if !matches!(c.status.as_str(), "COMPLETED" | "PARTIALLY_REFUNDED") {
                return Err(unprocessable(
                    "CAPTURE_FULLY_REFUNDED",
                    "The capture has already been fully refunded or is not completed.",
                ));
            }
            let Ok(currency) = Currency::parse("c", &c.amount.currency_code) else {
                return Err(not_found());
            };
            let total = currency.parse_decimal(&c.amount.value).unwrap_or(0);
            let amount = match &asked {
                Some(m) => match currency.parse_decimal(&m.value) {
                    Some(v) if m.currency_code == c.amount.currency_code && v > 0 => v,
                    _ => {
                        return Err(unprocessable(
                            "DECIMAL_PRECISION",
                            "The refund amount must be a positive amount in the capture's currency.",
                        ));
                    }
                },
                None => total - before,
            };
            if amount > total - before {
                return Err(unprocessable(
                    "REFUND_AMOUNT_EXCEEDED",
                    "The refund amount must be less than or equal to the capture amount that has not yet been refunded.",
                ));
            }
            c.status = if before + amount == total {
                "REFUNDED"
            } else {
                "PARTIALLY_REFUNDED"
            }
            .into();
            Ok(wire::Money {
                currency_code: c.amount.currency_code.clone(),
                value: currency.decimal(amount),
            })
        });
        let amount = match outcome {
            None => return not_found(),
            Some(Err(r)) => return r,
            Some(Ok(m)) => m,
        };
        let r = wire::Refund {
            id: pp_id(),
            status: if st.refunds_pending {
                "PENDING"
            } else {
                "COMPLETED"
            }
            .into(),
            amount: Some(amount),
            custom_id: serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["custom_id"].as_str().map(str::to_owned)),
            create_time: Some(rfc3339_now()),
            links: vec![wire::Link {
                href: format!("{}/v2/payments/captures/{id}", sb.inner.base),
                rel: "up".into(),
                method: Some("GET".into()),
            }],
        };
        st.refunds.push((id.clone(), r.clone()));
        r
    };
    // PayPal announces every refund, whoever made it, once it is done.
    if refund.status == "COMPLETED" {
        announce_refund(&sb, &refund).await;
    }
    let body = serde_json::to_value(&refund).unwrap_or_default();
    remember(&sb, key, StatusCode::CREATED, body)
}

async fn announce_refund(sb: &Sandbox, refund: &wire::Refund) -> Vec<Value> {
    let ev = event(
        "PAYMENT.CAPTURE.REFUNDED",
        "refund",
        "A payment capture was refunded",
        serde_json::to_value(refund).unwrap_or_default(),
    );
    sb.inner.courier.deliver(vec![ev], Copies::ONCE, 0).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundControl {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
}

/// `POST /sandbox/paypal/captures/{id}/dispute`: the buyer opens a dispute on the capture,
/// announced as `CUSTOMER.DISPUTE.CREATED`
/// (<https://developer.paypal.com/api/rest/webhooks/event-names/#disputes>).
async fn dispute(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(amount) = with_capture(&mut sb.state(), &id, |c| c.amount.clone()) else {
        return not_found();
    };
    let resource = json!({
        "dispute_id": format!("PP-D-{}", pp_id()), "create_time": rfc3339_now(),
        "update_time": rfc3339_now(),
        "disputed_transactions": [{"seller_transaction_id": id, "gross_amount": amount}],
        "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED", "status": "OPEN",
        "dispute_amount": amount, "dispute_life_cycle_stage": "INQUIRY", "dispute_channel": "INTERNAL",
    });
    let ev = event(
        "CUSTOMER.DISPUTE.CREATED",
        "dispute",
        "A new dispute opened",
        resource.clone(),
    );
    let deliveries = sb.inner.courier.deliver(vec![ev], Copies::ONCE, 0).await;
    Json(json!({ "dispute": resource, "deliveries": deliveries })).into_response()
}

/// `{"status": "pending"|"completed"}`: how refunds made from now on start.
async fn refund_mode(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pending = match d.status.as_deref() {
        Some("pending") => true,
        Some("completed") => false,
        _ => {
            return invalid_request(
                "INVALID_PARAMETER_VALUE",
                "status",
                "status must be \"pending\" or \"completed\"",
            );
        }
    };
    sb.state().refunds_pending = pending;
    Json(json!({ "refunds_start": d.status })).into_response()
}

/// `{"outcome": "completed"|"failed"}`: a `PENDING` refund ends; a completed one is
/// announced with `PAYMENT.CAPTURE.REFUNDED`, and a failed one gives the capture its money
/// back to refund again.
async fn settle_refund(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let status = match d.outcome.as_deref().unwrap_or("completed") {
        "completed" => "COMPLETED",
        "failed" => "FAILED",
        _ => {
            return invalid_request(
                "INVALID_PARAMETER_VALUE",
                "outcome",
                "outcome must be \"completed\" or \"failed\"",
            );
        }
    };
    let refund = {
        let mut st = sb.state();
        let Some((capture, r)) = st.refunds.iter_mut().find(|(_, r)| r.id == id) else {
            return not_found();
        };
        if r.status != "PENDING" {
            return unprocessable("REFUND_NOT_PENDING", "Only a pending refund settles.");
        }
        r.status = status.into();
        let (capture, refund) = (capture.clone(), r.clone());
        if status == "FAILED" {
            // The money stayed with the merchant: the capture is refundable again.
            let still = st
                .refunds
                .iter()
                .filter(|(c, r)| {
                    *c == capture && !matches!(r.status.as_str(), "FAILED" | "CANCELLED")
                })
                .count();
            with_capture(&mut st, &capture, |c| {
                c.status = if still == 0 {
                    "COMPLETED"
                } else {
                    "PARTIALLY_REFUNDED"
                }
                .into();
            });
        }
        refund
    };
    let deliveries = if status == "COMPLETED" {
        announce_refund(&sb, &refund).await
    } else {
        Vec::new()
    };
    Json(json!({ "refund": refund, "deliveries": deliveries })).into_response()
}

/// `GET /v1/notifications/webhooks-events`: the event notifications sent, newest first,
/// `start_time` … `end_time` (RFC 3339, UTC), `page_size` (default 10, at most 300), with a
/// `next` link while more remain.
async fn list_events(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = Params::of(query);
    let start = q.time("start_time").unwrap_or_default();
    let end = q.time("end_time").unwrap_or_else(|| "9999".into());
    let (size, page) = q.paging(10, 300);
    let size = sb.state().event_page_cap.map_or(size, |cap| size.min(cap));
    let mut all: Vec<wire::Event> = sb
        .inner
        .courier
        .sent()
        .into_iter()
        .filter_map(|(body, _)| serde_json::from_slice::<wire::Event>(&body).ok())
        .filter(|e| {
            e.create_time
                .get(..19)
                .is_some_and(|t| t >= start.as_str() && t <= end.as_str())
        })
        .collect();
    all.reverse();
    let events: Vec<&wire::Event> = all.iter().skip((page - 1) * size).take(size).collect();
    let mut links = Vec::new();
    if page * size < all.len() {
        let mut next = form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.0.iter().filter(|(k, _)| k != "page") {
            next.append_pair(k, v);
        }
        next.append_pair("page", &(page + 1).to_string());
        links.push(json!({
            "href": format!("{}/v1/notifications/webhooks-events?{}", other_host(&sb.inner.base), next.finish()),
            "rel": "next",
            "method": "GET",
        }));
    }
    Json(json!({ "events": events, "count": events.len(), "links": links })).into_response()
}

/// `base` with its loopback host's other name (`127.0.0.1` ↔ `localhost`), as PayPal's list
/// pages link to another of its API hosts than the one called.
fn other_host(base: &str) -> String {
    let Ok(mut url) = url::Url::parse(base) else {
        return base.to_owned();
    };
    let other = match url.host_str() {
        Some("127.0.0.1") => "localhost",
        Some("localhost") => "127.0.0.1",
        _ => return base.to_owned(),
    };
    if url.set_host(Some(other)).is_err() {
        return base.to_owned();
    }
    url.as_str().trim_end_matches('/').to_owned()
}

#[derive(Default, Deserialize)]
struct PagingControl {
    #[serde(default)]
    page_size: usize,
}

async fn event_paging(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<PagingControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    sb.state().event_page_cap = Some(d.page_size.max(1));
    Json(json!({ "page_size": d.page_size.max(1) })).into_response()
}

/// A list call's query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(query: Option<String>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, k: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    }

    /// `page_size` (default `size`, between 1 and `max`) and the 1-based `page`.
    fn paging(&self, size: usize, max: usize) -> (usize, usize) {
        let number = |k: &str| self.get(k).and_then(|v| v.parse::<usize>().ok());
        let size = number("page_size").unwrap_or(size).clamp(1, max);
        (size, number("page").unwrap_or(1).max(1))
    }

    /// A date-time parameter, to compare as text on its first 19 characters (all are UTC
    /// here).
    fn time(&self, k: &str) -> Option<String> {
        self.get(k)
            .filter(|d| d.len() >= 19)
            .map(|d| d[..19].to_owned())
    }
}

/// `GET /v1/reporting/transactions`: the captures (and refunds, as negative amounts) made
/// between `start_date` and `end_date` (required, at most 31 days apart), `page_size`
/// (≤ 500) per `page`.
async fn search_transactions(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = Params::of(query);
    let (Some(start), Some(end)) = (q.time("start_date"), q.time("end_date")) else {
        return invalid_request(
            "MISSING_REQUIRED_PARAMETER",
            "start_date",
            "start_date and end_date are required.",
        );
    };
    let (size, page) = q.paging(100, 500);
    let mut all = Vec::new();
    {
        let st = sb.state();
        for o in st.orders.values() {
            for c in o
                .purchase_units
                .iter()
                .filter_map(|u| u.payments.as_ref())
                .flat_map(|p| p.captures.iter())
            {
                let when = c.create_time.clone().unwrap_or_default();
                if when
                    .get(..19)
                    .is_none_or(|w| w < start.as_str() || w > end.as_str())
                {
                    continue;
                }
                // Transaction Search's statuses: V is "a successful transaction was
                // reversed and funds were refunded to the original sender".
                let status = match c.status.as_str() {
                    "PENDING" => "P",
                    "DECLINED" | "FAILED" => "D",
                    "REFUNDED" => "V",
                    _ => "S",
                };
                all.push(wire::TransactionDetail {
                    transaction_info: wire::TransactionInfo {
                        transaction_id: c.id.clone(),
                        transaction_event_code: "T0006".into(),
                        transaction_initiation_date: when.replace('Z', "+0000"),
                        transaction_amount: c.amount.clone(),
                        transaction_status: status.into(),
                        custom_field: c.custom_id.clone(),
                    },
                });
            }
        }
    }
    all.sort_by(|a, b| {
        b.transaction_info
            .transaction_initiation_date
            .cmp(&a.transaction_info.transaction_initiation_date)
            .then(
                b.transaction_info
                    .transaction_id
                    .cmp(&a.transaction_info.transaction_id),
            )
    });
    let total_items = all.len();
    let total_pages = total_items.div_ceil(size).max(1);
    let details: Vec<_> = all.into_iter().skip((page - 1) * size).take(size).collect();
    Json(wire::TransactionSearch {
        transaction_details: details,
        page: page as i64,
        total_pages: total_pages as i64,
        total_items: total_items as i64,
    })
    .into_response()
}

async fn list_refunds(State(sb): State<Sandbox>) -> Json<Value> {
    let items: Vec<Value> = sb
        .state()
        .refunds
        .iter()
        .map(|(capture, r)| json!({ "capture_id": capture, "refund": r }))
        .collect();
    Json(json!({ "items": items }))
}

/// `POST /v1/notifications/verify-webhook-signature`: checks the signature against the
/// body this sandbox delivered under that transmission id (PayPal, too, needs the event
/// exactly as delivered).
async fn verify_webhook_signature(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<wire::VerifyRequest>(&body) else {
        return invalid_request(
            "MISSING_REQUIRED_PARAMETER",
            "",
            "A required field / parameter is missing.",
        );
    };
    let delivered = sb
        .inner
        .transmissions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&req.transmission_id)
        .cloned();
    let ok = delivered.is_some_and(|raw| {
        // The text delivered, byte for byte (bar surrounding whitespace): PayPal checks
        // the signature against the JSON exactly as sent, so a re-serialized event fails.
        let same_event = req.webhook_event.get().as_bytes() == raw.trim_ascii();
        let message = signed_message(
            &req.transmission_id,
            &req.transmission_time,
            &req.webhook_id,
            &raw,
        );
        same_event
            && req.auth_algo == "SHA256withRSA"
            && crate::providers::paypal::verify_signature(
                &sb.inner.key.to_public_key(),
                &message,
                &req.transmission_sig,
            )
    });
    let status = if ok { "SUCCESS" } else { "FAILURE" };
    Json(wire::VerifyResponse {
        verification_status: status.into(),
    })
    .into_response()
}

async fn cert(State(sb): State<Sandbox>) -> Response {
    (
        [("content-type", "application/x-pem-file")],
        sb.inner.cert_pem.to_owned(),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    capture: Option<String>,
    #[serde(default)]
    amount: Option<String>,
}

async fn approve(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d: Approve = match control_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match copies(d.webhook.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let capture = d.capture.unwrap_or_else(|| "completed".into());
    if !matches!(capture.as_str(), "completed" | "pending" | "declined") {
        return invalid_request(
            "INVALID_PARAMETER_VALUE",
            "capture",
            "capture must be \"completed\", \"pending\" or \"declined\"",
        );
    }
    let payer_id = pp_id()[..13].to_owned();
    let order = {
        let mut st = sb.state();
        let Some(o) = st.orders.get_mut(&id) else {
            return not_found();
        };
        if !matches!(o.status.as_str(), "CREATED" | "PAYER_ACTION_REQUIRED") {
            return unprocessable(
                "ORDER_NOT_APPROVABLE",
                &format!("The order is {} and cannot be approved.", o.status),
            );
        }
        o.status = "APPROVED".into();
        o.payer = Some(json!({
            "name": { "given_name": "Sandbox", "surname": "Buyer" },
            "email_address": "buyer@example.com",
            "payer_id": payer_id,
        }));
        let base = sb.inner.base.clone();
        o.links = order_links(&base, o);
        let order = o.clone();
        st.plans.insert(
            id.clone(),
            Plan {
                capture,
                amount: d.amount,
            },
        );
        order
    };
    let ev = event(
        "CHECKOUT.ORDER.APPROVED",
        "checkout-order",
        "An order has been approved by buyer",
        serde_json::to_value(&order).unwrap_or_default(),
    );
    let sent = json!({ "id": ev.0, "body": String::from_utf8_lossy(&ev.1) });
    let deliveries = sb
        .inner
        .courier
        .deliver(vec![ev], copies, d.delay_ms.unwrap_or(0))
        .await;
    Json(json!({
        "orderID": order.id,
        "payerID": payer_id,
        "paymentID": null,
        "billingToken": null,
        "facilitatorAccessToken": rand_id("A21AA", 60),
        "paymentSource": "paypal",
        "events": [sent],
        "deliveries": deliveries,
    }))
    .into_response()
}

async fn void(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let order = {
        let mut st = sb.state();
        let Some(o) = st.orders.get_mut(&id) else {
            return not_found();
        };
        if o.status == "COMPLETED" {
            return unprocessable(
                "ORDER_ALREADY_COMPLETED",
                "A completed order cannot be voided.",
            );
        }
        o.status = "VOIDED".into();
        o.links = Vec::new();
        o.clone()
    };
    let ev = event(
        "CHECKOUT.ORDER.VOIDED",
        "checkout-order",
        "An order has been voided",
        serde_json::to_value(&order).unwrap_or_default(),
    );
    let deliveries = sb.inner.courier.deliver(vec![ev], Copies::ONCE, 0).await;
    Json(json!({ "order": order, "deliveries": deliveries })).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settle {
    #[serde(default)]
    outcome: Option<String>,
}

async fn settle(State(sb): State<Sandbox>, Path(id): Path<String>, body: Bytes) -> Response {
    let d: Settle = match control_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let (status, kind) = match d.outcome.as_deref().unwrap_or("completed") {
        "completed" => ("COMPLETED", "PAYMENT.CAPTURE.COMPLETED"),
        "denied" => ("DECLINED", "PAYMENT.CAPTURE.DENIED"),
        _ => {
            return invalid_request(
                "INVALID_PARAMETER_VALUE",
                "outcome",
                "outcome must be \"completed\" or \"denied\"",
            );
        }
    };
    let captured = with_capture(&mut sb.state(), &id, |c| {
        if c.status != "PENDING" {
            return Err(unprocessable(
                "CAPTURE_NOT_PENDING",
                "Only a pending capture settles.",
            ));
        }
        c.status = status.into();
        Ok(c.clone())
    });
    let captured = match captured {
        None => return not_found(),
        Some(Err(r)) => return r,
        Some(Ok(c)) => c,
    };
    let deliveries = sb
        .inner
        .courier
        .deliver(vec![capture_event(kind, &captured)], Copies::ONCE, 0)
        .await;
    Json(json!({ "capture": captured, "deliveries": deliveries })).into_response()
}

/// `GET /sandbox/paypal/checkoutnow?token={order id}`: the buyer's approval page behind
/// the order's approval link. Its button approves the order (as the control call does) and
/// sends the browser to the order's `return_url` with `token` and `PayerID`, as PayPal does.
async fn checkout_page(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let token = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let st = sb.state();
    let Some(o) = st.orders.get(&token) else {
        return (
            StatusCode::NOT_FOUND,
            axum::response::Html("<h1>No such PayPal order</h1>".to_owned()),
        )
            .into_response();
    };
    let esc = crate::domain::html_escape;
    let amount = o
        .purchase_units
        .first()
        .map(|u| format!("{} {}", u.amount.value, u.amount.currency_code))
        .unwrap_or_default();
    let back = st.return_urls.get(&token).cloned().unwrap_or_default();
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox PayPal</title></head><body>\
         <h1>fulfilld sandbox — PayPal</h1><p>Order {id}: {amount}, status {st}.</p>\
         <button id=\"approve\" data-back=\"{back}\">Approve</button>\
         <button id=\"approve-pending\" data-back=\"{back}\" data-capture=\"pending\">Approve with an eCheck (the capture stays pending)</button>\
         <script>function approve(){{\
           var back=this.dataset.back, capture=this.dataset.capture;\
           fetch('/sandbox/paypal/orders/{id}/approve',{{method:'POST',headers:{{'content-type':'application/json'}},body:JSON.stringify(capture?{{capture:capture}}:{{}})}}).then(r=>r.json()).then(j=>{{\
             document.body.insertAdjacentHTML('beforeend','<pre>'+JSON.stringify(j.deliveries)+'</pre>');\
             if(back){{var u=new URL(back);u.searchParams.set('token',j.orderID);u.searchParams.set('PayerID',j.payerID);location.href=u}}}})}}\
           document.getElementById('approve').onclick=approve;document.getElementById('approve-pending').onclick=approve;</script>\
         </body></html>",
        id = esc(&o.id),
        st = esc(&o.status),
        amount = esc(&amount),
        back = esc(&back),
    ))
    .into_response()
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
