//! PayPal: OAuth client-credentials token (cached until it expires), Orders v2 (create with
//! intent CAPTURE, get, capture on approval), refunds of a capture, and webhook signatures.
//!
//! A webhook is signed with SHA256withRSA over
//! `"{transmission_id}|{transmission_time}|{webhook_id}|{crc32(raw body) as decimal}"`; the
//! signature (base64) is in `paypal-transmission-sig`, the certificate at `paypal-cert-url`.
//! With `webhook_verification = "certificate"` the signature is checked here, with the
//! configured certificate file or with the certificate downloaded from the URL — only from
//! `https://*.paypal.com`, so TLS vouches for it — and cached. With `"api"`, PayPal's own
//! verify-webhook-signature API decides.
//!
//! Amounts travel as decimal strings (`"10.00"`; JPY and HUF `"1000"`), written with the
//! digits PayPal takes for the currency ([`wire_money`]) and never through floats.

pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::Sha256;
use x509_cert::der::{DecodePem, Encode};

use super::money::Wire;
use super::{
    Checkout, CheckoutRequest, ClaimError, ClientClaim, PaymentChange, PaymentRef, PaymentState,
    Provider, ProviderError, ProviderEvent, RecentPayment, Refund, RefundNotice, RefundRequest,
    RefundState, WebhookError,
};
use crate::config::{self, PayPalVerification};
use crate::domain::{Currency, Invalid};

const NAME: &str = "paypal";

/// The string PayPal signs for a webhook delivery.
pub fn signed_message(
    transmission_id: &str,
    transmission_time: &str,
    webhook_id: &str,
    body: &[u8],
) -> String {
    format!(
        "{transmission_id}|{transmission_time}|{webhook_id}|{}",
        crc32fast::hash(body)
    )
}

/// Checks a base64 SHA256withRSA (PKCS#1 v1.5) signature of `message`.
pub fn verify_signature(key: &RsaPublicKey, message: &str, signature_b64: &str) -> bool {
    let Ok(bytes) = BASE64.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
        .verify(message.as_bytes(), &sig)
        .is_ok()
}

/// A certificate's RSA key, and when the certificate stops being valid.
#[derive(Debug, Clone)]
struct TrustedKey {
    key: RsaPublicKey,
    not_after_s: i64,
    /// The file's modification time, for a configured certificate file.
    stamp: Option<SystemTime>,
}

/// Reads the first certificate of a PEM chain; refuses one that is not valid at `now_s` or
/// whose key is not RSA.
fn key_from_pem(pem: &[u8], now_s: i64) -> Result<TrustedKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the certificate is not PEM text")?;
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or("no PEM certificate found")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[begin..]
        .find(end_marker)
        .ok_or("unterminated PEM certificate")?
        + begin
        + end_marker.len();
    let cert = x509_cert::Certificate::from_pem(&text[begin..end])
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let validity = &cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs() as i64;
    let not_after = validity.not_after.to_unix_duration().as_secs() as i64;
    if now_s < not_before || now_s > not_after {
        return Err("the certificate is not valid at this time".into());
    }
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("unreadable certificate key: {e}"))?;
    let key = RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| format!("the certificate's key is not RSA: {e}"))?;
    Ok(TrustedKey {
        key,
        not_after_s: not_after,
        stamp: None,
    })
}

/// PayPal's REST API hosts (<https://developer.paypal.com/api/rest/requests/>): `api-m` is
/// the one to call, and PayPal's own links (certificates, `next` pages) name either.
const LIVE_HOSTS: [&str; 2] = ["api.paypal.com", "api-m.paypal.com"];
const SANDBOX_HOSTS: [&str; 2] = ["api.sandbox.paypal.com", "api-m.sandbox.paypal.com"];

/// Whether a `next` link PayPal answered may be followed with our token: on our API base's
/// origin, or on another of PayPal's API hosts of the same environment (PayPal's list pages
/// link to `api.paypal.com` when called on `api-m.paypal.com`), over https, without
/// credentials in it. A base on this machine (the sandbox) may likewise link to another
/// loopback name on its own port and scheme.
fn next_link_allowed(base: &str, link: &str) -> bool {
    let (Ok(base), Ok(next)) = (url::Url::parse(base), url::Url::parse(link)) else {
        return false;
    };
    if !next.username().is_empty() || next.password().is_some() {
        return false;
    }
    if next.origin() == base.origin() {
        return true;
    }
    let host = |u: &url::Url| u.host_str().unwrap_or_default().to_ascii_lowercase();
    let (ours, theirs) = (host(&base), host(&next));
    let loopback = |h: &str| matches!(h, "127.0.0.1" | "localhost" | "[::1]");
    if loopback(&ours) {
        return loopback(&theirs)
            && next.scheme() == base.scheme()
            && next.port_or_known_default() == base.port_or_known_default();
    }
    let same_env =
        |hosts: &[&str]| hosts.contains(&ours.as_str()) && hosts.contains(&theirs.as_str());
    next.scheme() == "https"
        && next.port().is_none()
        && (same_env(&LIVE_HOSTS) || same_env(&SANDBOX_HOSTS))
}

/// A certificate URL is followed only to PayPal's own hosts, over https on the default port,
/// without credentials, and only to its certificate path: anything else could serve a key
/// of the sender's choosing, or make every forged webhook fetch a page of its choosing.
pub fn cert_url_allowed(raw: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|_| format!("paypal-cert-url {raw:?} is not a URL"))?;
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    // PayPal's REST API hosts, live and sandbox, which serve the certificates; nothing
    // else under paypal.com (a host that never answers would hold a fetch for its timeout).
    let paypal_host = LIVE_HOSTS.contains(&host.as_str()) || SANDBOX_HOSTS.contains(&host.as_str());
    // One certificate, one URL: no query or fragment to vary (each would be fetched and
    // cached anew).
    let name = u
        .path()
        .strip_prefix("/v1/notifications/certs/")
        .unwrap_or("");
    if u.scheme() != "https"
        || !paypal_host
        || u.port().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
        || name.is_empty()
        || name.len() > 100
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "paypal-cert-url {raw:?} is not an https URL of a certificate on PayPal's API host \
             (api.paypal.com, api-m.paypal.com or their sandbox twins)"
        ));
    }
    Ok(u)
}

/// Reads a verified webhook body.
pub fn normalize(body: &[u8]) -> Result<ProviderEvent, String> {
    let ev: wire::Event =
        serde_json::from_slice(body).map_err(|e| format!("not a PayPal event: {e}"))?;
    let resource = |what: &str| format!("{}: the resource is not {what}", ev.event_type);
    let (order_id, payment_ref, change) = match ev.event_type.as_str() {
        "CHECKOUT.ORDER.APPROVED" | "CHECKOUT.ORDER.COMPLETED" | "CHECKOUT.ORDER.VOIDED" => {
            let o: wire::Order = serde_json::from_value(ev.resource.clone())
                .map_err(|e| format!("{}: {e}", resource("an order")))?;
            let change = if ev.event_type == "CHECKOUT.ORDER.VOIDED" {
                PaymentChange::Expired
            } else {
                // Approval: the buyer agreed; `confirm_capture` captures and checks.
                PaymentChange::Paid {
                    provider_payment_id: o
                        .capture()
                        .filter(|c| c.status == "COMPLETED")
                        .map(|c| c.id.clone()),
                }
            };
            let custom = o.purchase_units.first().and_then(|u| u.custom_id.clone());
            (Some(o.id), custom, change)
        }
        "PAYMENT.CAPTURE.COMPLETED"
        | "PAYMENT.CAPTURE.PENDING"
        | "PAYMENT.CAPTURE.DENIED"
        | "PAYMENT.CAPTURE.DECLINED" => {
            let c: wire::Capture = serde_json::from_value(ev.resource.clone())
                .map_err(|e| format!("{}: {e}", resource("a capture")))?;
            let id = Some(c.id.clone());
            let change = match ev.event_type.as_str() {
                "PAYMENT.CAPTURE.COMPLETED" => PaymentChange::Paid {
                    provider_payment_id: id,
                },
                "PAYMENT.CAPTURE.PENDING" => PaymentChange::AwaitingSettlement {
                    provider_payment_id: id,
                },
                _ => PaymentChange::Failed,
            };
            let order = c.supplementary_data.and_then(|s| s.related_ids.order_id);
            (order, c.custom_id, change)
        }
        // The buyer's approval was taken back before capture.
        "CHECKOUT.PAYMENT-APPROVAL.REVERSED" => {
            let order = ev.resource["order_id"]
                .as_str()
                .or_else(|| ev.resource["id"].as_str())
                .map(str::to_owned);
            (order, None, PaymentChange::Failed)
        }
        // Money back to the buyer: a refund (ours or from the dashboard) or a reversal
        // (a dispute decided against the shop). The resource is the refund; its `up` link
        // names the capture.
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.CAPTURE.REVERSED" => {
            let r: wire::Refund = serde_json::from_value(ev.resource.clone())
                .map_err(|e| format!("{}: {e}", resource("a refund")))?;
            let capture = r
                .links
                .iter()
                .find(|l| l.rel == "up")
                .and_then(|l| l.href.rsplit('/').next())
                .map(str::to_owned);
            let amount = r
                .amount
                .as_ref()
                .and_then(wire::Money::minor)
                .ok_or_else(|| format!("{}: the refund has no readable amount", ev.event_type))?;
            return Ok(ProviderEvent {
                provider: NAME,
                event_id: ev.id,
                event_type: ev.event_type,
                provider_order_id: None,
                provider_payment_id: capture,
                payment_ref: None,
                change: PaymentChange::Refunded(RefundNotice {
                    provider_refund_id: r.id,
                    amount_minor: amount,
                    currency: r.amount.map(|m| m.currency_code),
                    refund_ref: r.custom_id,
                    state: RefundState::of(&r.status),
                }),
            });
        }
        _ => (None, None, PaymentChange::Ignored),
    };
    Ok(ProviderEvent {
        provider: NAME,
        event_id: ev.id,
        event_type: ev.event_type,
        provider_order_id: order_id,
        provider_payment_id: None,
        payment_ref,
        change,
    })
}

/// `2026-11-22T10:00:00Z` for a Unix time.
fn iso_utc(s: i64) -> String {
    crate::domain::rfc3339(s.saturating_mul(1000))
}

/// Unix seconds of PayPal's `2026-11-22T10:00:00+0000` (or `…Z`), read as UTC.
fn unix_of(date: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(date.get(..19)?, &fmt).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// A listed transaction as a payment, if it is money received.
fn recent_of(t: wire::TransactionInfo) -> Option<RecentPayment> {
    let currency = Currency::parse("currency_code", &t.transaction_amount.currency_code).ok()?;
    let amount_minor = currency.parse_decimal(&t.transaction_amount.value)?;
    let id = Some(t.transaction_id.clone());
    // Transaction Search's `transaction_status`
    // (<https://developer.paypal.com/docs/api/transaction-search/v1/>): D denied, P pending,
    // S completed, V "a successful transaction was reversed and funds were refunded to the
    // original sender" — no money is held for a V, so it is not a payment to fulfil (its
    // refund or reversal arrives as PAYMENT.CAPTURE.REVERSED / REFUNDED).
    let (change, paid) = match t.transaction_status.as_str() {
        "S" => (
            PaymentChange::Paid {
                provider_payment_id: id.clone(),
            },
            true,
        ),
        "P" => (
            PaymentChange::AwaitingSettlement {
                provider_payment_id: id.clone(),
            },
            false,
        ),
        "D" => (PaymentChange::Failed, false),
        _ => (PaymentChange::Ignored, false),
    };
    Some(RecentPayment {
        provider_order_id: None,
        payment_ref: t.custom_field,
        created_s: unix_of(&t.transaction_initiation_date).unwrap_or(0),
        state: PaymentState {
            change,
            paid,
            state: format!("transaction_status={}", t.transaction_status),
            amount_minor,
            currency: currency.as_str().to_owned(),
            provider_payment_id: id,
        },
    })
}

/// The currencies PayPal takes and how it writes them
/// (<https://developer.paypal.com/api/rest/reference/currency-codes/>): two decimals, but
/// HUF, JPY and TWD, which "do not support decimals" ("decimal amounts cause an error").
/// BRL, CNY, MYR and INR are taken by in-country accounts only; PayPal refuses them elsewhere.
/// Amounts PayPal writes are decimal strings, which mean the same in any count of digits, so
/// they are read with the currency's ISO digits ([`Currency::parse_decimal`]).
pub fn wire_money(c: &Currency) -> Option<Wire> {
    let exponent = match c.as_str() {
        "HUF" | "JPY" | "TWD" => 0,
        "AUD" | "BRL" | "CAD" | "CNY" | "CZK" | "DKK" | "EUR" | "HKD" | "ILS" | "INR" | "MYR"
        | "MXN" | "NZD" | "NOK" | "PHP" | "PLN" | "GBP" | "SGD" | "SEK" | "CHF" | "THB" | "USD" => {
            2
        }
        _ => return None,
    };
    Some(Wire { exponent, step: 1 })
}

/// `{currency_code, value}` of our minor units, as PayPal takes them.
fn paypal_money(code: &str, minor: i64) -> Result<Value, ProviderError> {
    let unusable = |message: String| ProviderError::Unusable {
        provider: NAME,
        message,
    };
    let c = Currency::parse("currency", code).map_err(|e| unusable(e.to_string()))?;
    let w = wire_money(&c).ok_or_else(|| unusable(format!("{NAME} does not take {c}")))?;
    let units = w.to_wire(NAME, &c, minor).map_err(unusable)?;
    Ok(json!({ "currency_code": c.as_str(), "value": crate::domain::decimal(units, w.exponent) }))
}

/// PayPal as a [`Provider`].
pub struct PayPal {
    http: reqwest::Client,
    /// For certificates only: no redirects, a short timeout (bodies are capped as read).
    cert_http: reqwest::Client,
    /// How far a message's `paypal-transmission-time` may be behind now.
    tolerance_s: i64,
    base: String,
    client_id: String,
    client_secret: config::Secret,
    webhook_id: String,
    verification: PayPalVerification,
    cert_file: Option<PathBuf>,
    /// The access token and when to stop using it. A tokio mutex: concurrent callers wait
    /// for one token request instead of each making their own.
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// Keys of certificates already fetched (by URL) or read (by file path).
    keys: Mutex<HashMap<String, TrustedKey>>,
    /// Certificate URLs whose fetch failed lately, and until when that is answered without
    /// fetching again.
    failed_fetches: Mutex<HashMap<String, (Instant, String)>>,
    /// Held while a certificate is fetched: one fetch at a time, and a webhook that waited
    /// finds the key the fetch it waited for cached.
    fetching: tokio::sync::Mutex<()>,
}

/// The largest certificate chain read from PayPal.
const CERT_MAX_BYTES: usize = 64 * 1024;
/// How long a failed certificate fetch is answered from memory.
const CERT_FAILURE_TTL: Duration = Duration::from_secs(30);
/// How far ahead of our clock a `paypal-transmission-time` may be (clock skew).
pub const TRANSMISSION_SKEW_S: i64 = 60;

impl std::fmt::Debug for PayPal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayPal")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .field("verification", &self.verification)
            .finish()
    }
}

/// An error's text for PayPal's envelope: name, message, and the detail issues, whose codes
/// (`ORDER_ALREADY_CAPTURED`, `INSTRUMENT_DECLINED`) callers look for.
fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(e) = serde_json::from_slice::<wire::ErrorEnvelope>(body) {
        let issues: Vec<&str> = e.details.iter().map(|d| d.issue.as_str()).collect();
        return Some(format!("{}: {} [{}]", e.name, e.message, issues.join(", ")));
    }
    serde_json::from_slice::<wire::OAuthError>(body)
        .ok()
        .map(|e| format!("{}: {}", e.error, e.error_description))
}

fn has_issue(e: &ProviderError, issue: &str) -> bool {
    matches!(e, ProviderError::Status { status: 422, message, .. } if message.contains(issue))
}

/// The issue of a 422 from `POST /v2/checkout/orders/{id}/capture` that ends this payment
/// without money (Orders v2 capture errors,
/// <https://developer.paypal.com/docs/api/orders/v2/#orders_capture>, and
/// <https://developer.paypal.com/api/rest/reference/orders/v2/errors/>): the stock goes
/// back and the buyer may pay again (with another funding source, for
/// `INSTRUMENT_DECLINED` and `REDIRECT_PAYER_FOR_ALTERNATE_FUNDING`).
/// `ORDER_ALREADY_CAPTURED` is read again by [`PayPal::capture`]; any other answer is an
/// error the step retries.
fn declined_issue(e: &ProviderError) -> Option<&'static str> {
    const DECLINED: [&str; 11] = [
        "INSTRUMENT_DECLINED",
        "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING",
        "PAYER_CANNOT_PAY",
        "PAYER_ACCOUNT_RESTRICTED",
        "PAYER_ACCOUNT_LOCKED_OR_CLOSED",
        "TRANSACTION_REFUSED",
        "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED",
        "PAYEE_BLOCKED_TRANSACTION",
        "COMPLIANCE_VIOLATION",
        "ORDER_EXPIRED",
        "PAYMENT_DENIED",
    ];
    DECLINED.into_iter().find(|issue| has_issue(e, issue))
}

impl PayPal {
    pub fn new(c: &config::PayPal, http: reqwest::Client) -> PayPal {
        let cert_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        PayPal {
            http,
            cert_http,
            tolerance_s: i64::try_from(c.webhook_tolerance_secs).unwrap_or(i64::MAX),
            base: c.api_base.trim_end_matches('/').to_owned(),
            client_id: c.client_id.clone(),
            client_secret: c.client_secret.clone(),
            webhook_id: c.webhook_id.clone(),
            verification: c.webhook_verification,
            cert_file: (!c.webhook_cert_file.is_empty())
                .then(|| PathBuf::from(&c.webhook_cert_file)),
            token: tokio::sync::Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            failed_fetches: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A valid access token: the cached one, or a new one (kept until a minute before it
    /// expires).
    async fn access_token(&self) -> Result<String, ProviderError> {
        let mut slot = self.token.lock().await;
        if let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let req = self
            .http
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")]);
        let t: wire::Token = super::send_json(NAME, req, error_message).await?;
        let ttl = Duration::from_secs(t.expires_in.saturating_sub(60).max(0) as u64);
        *slot = Some((t.access_token.clone(), Instant::now() + ttl));
        Ok(t.access_token)
    }

    /// One authenticated call. A 401 (token revoked or expired early) drops the cached token
    /// and tries once more with a fresh one.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        for attempt in 0..2 {
            let token = self.access_token().await?;
            match super::send_json(NAME, build(&token).bearer_auth(&token), error_message).await {
                Err(ProviderError::Status { status: 401, .. }) if attempt == 0 => {
                    *self.token.lock().await = None;
                }
                other => return other,
            }
        }
        Err(ProviderError::Status {
            provider: NAME,
            status: 401,
            message: "the access token was refused twice".into(),
            should_retry: None,
        })
    }

    async fn get_order(&self, id: &str) -> Result<wire::Order, ProviderError> {
        let url = format!("{}/v2/checkout/orders/{id}", self.base);
        self.call(|_| self.http.get(&url)).await
    }

    /// Captures an approved order. `PayPal-Request-Id` makes a retried capture return the
    /// first one's result; an order captured meanwhile is read back instead.
    async fn capture(&self, id: &str) -> Result<wire::Order, ProviderError> {
        let url = format!("{}/v2/checkout/orders/{id}/capture", self.base);
        let res = self
            .call(|_| {
                self.http
                    .post(&url)
                    .header("PayPal-Request-Id", format!("capture-{id}"))
                    .header("Prefer", "return=representation")
                    .json(&json!({}))
            })
            .await;
        match res {
            Err(e) if has_issue(&e, "ORDER_ALREADY_CAPTURED") => self.get_order(id).await,
            other => other,
        }
    }

    /// The key that signed a webhook: from the configured file, or from `cert_url`.
    async fn trusted_key(&self, cert_url: &str, now_s: i64) -> Result<RsaPublicKey, WebhookError> {
        let cached = |k: &str, stamp: Option<SystemTime>| {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.get(k)
                .filter(|t| t.not_after_s >= now_s && t.stamp == stamp)
                .map(|t| t.key.clone())
        };
        let remember = |k: String, t: TrustedKey| {
            let key = t.key.clone();
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            // PayPal signs with a handful of certificates at a time: past this many, the
            // ones out of date go, then (if still full) all but the one just read.
            if keys.len() >= 64 {
                keys.retain(|_, t| t.not_after_s >= now_s);
                if keys.len() >= 64 {
                    keys.clear();
                }
            }
            keys.insert(k, t);
            key
        };
        if let Some(path) = &self.cert_file {
            let name = path.display().to_string();
            let unreadable = |e: std::io::Error| {
                WebhookError::Unavailable(format!("cannot read webhook_cert_file {name}: {e}"))
            };
            let stamp = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map_err(unreadable)?;
            if let Some(k) = cached(&name, Some(stamp)) {
                return Ok(k);
            }
            let pem = std::fs::read(path).map_err(unreadable)?;
            let mut t = key_from_pem(&pem, now_s)
                .map_err(|e| WebhookError::Unavailable(format!("{name}: {e}")))?;
            t.stamp = Some(stamp);
            return Ok(remember(name, t));
        }
        let url = cert_url_allowed(cert_url).map_err(WebhookError::Signature)?;
        if let Some(k) = cached(url.as_str(), None) {
            return Ok(k);
        }
        let recent_failure = || {
            let failed = self
                .failed_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            failed
                .get(url.as_str())
                .filter(|(until, _)| *until > Instant::now())
                .map(|(_, why)| WebhookError::Unavailable(why.clone()))
        };
        if let Some(err) = recent_failure() {
            return Err(err);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Another webhook's fetch may have finished while this one waited.
        if let Some(k) = cached(url.as_str(), None) {
            return Ok(k);
        }
        if let Some(err) = recent_failure() {
            return Err(err);
        }
        let fetched = match self.fetch_cert(&url).await {
            Ok(pem) => key_from_pem(&pem, now_s).map_err(|e| (e, false)),
            Err(e) => Err((e, true)),
        };
        match fetched {
            Ok(t) => Ok(remember(url.to_string(), t)),
            Err((why, unavailable)) => {
                let why = format!("cannot use the certificate {url}: {why}");
                let mut failed = self
                    .failed_fetches
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if failed.len() >= 1000 {
                    failed.retain(|_, (until, _)| *until > Instant::now());
                }
                failed.insert(
                    url.to_string(),
                    (Instant::now() + CERT_FAILURE_TTL, why.clone()),
                );
                Err(if unavailable {
                    WebhookError::Unavailable(why)
                } else {
                    WebhookError::Signature(why)
                })
            }
        }
    }

    /// The certificate chain at `url`: no redirect followed, at most [`CERT_MAX_BYTES`].
    async fn fetch_cert(&self, url: &url::Url) -> Result<Vec<u8>, String> {
        let mut res = self
            .cert_http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if pem.len() + chunk.len() > CERT_MAX_BYTES {
                return Err(format!("larger than {CERT_MAX_BYTES} bytes"));
            }
            pem.extend_from_slice(&chunk);
        }
        Ok(pem)
    }
}

/// Whether a `paypal-transmission-time` is fresh at `now_s`: not older than `tolerance_s`,
/// not ahead by more than [`TRANSMISSION_SKEW_S`]. PayPal signs each delivery attempt anew
/// (its own transmission id and time: the event's `transmissions` list shows one per
/// attempt), so a retry hours later is fresh; a captured message replayed later is not.
pub fn transmission_fresh(time: &str, now_s: i64, tolerance_s: i64) -> Result<(), String> {
    let t = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("paypal-transmission-time {time:?} is not an RFC 3339 time"))?
        .unix_timestamp();
    if t < now_s.saturating_sub(tolerance_s) {
        return Err(format!(
            "paypal-transmission-time {time} is more than {tolerance_s} s old"
        ));
    }
    if t > now_s.saturating_add(TRANSMISSION_SKEW_S) {
        return Err(format!(
            "paypal-transmission-time {time} is ahead of this server's clock"
        ));
    }
    Ok(())
}

#[async_trait]
impl Provider for PayPal {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<ProviderEvent, WebhookError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| WebhookError::Signature(format!("missing {name} header")))
        };
        let id = header("paypal-transmission-id")?;
        let time = header("paypal-transmission-time")?;
        let sig = header("paypal-transmission-sig")?;
        let cert_url = header("paypal-cert-url")?;
        let algo = header("paypal-auth-algo")?;
        if algo != "SHA256withRSA" {
            return Err(WebhookError::Signature(format!(
                "paypal-auth-algo {algo:?} is not SHA256withRSA"
            )));
        }
        // Before any certificate is fetched or PayPal is asked: a stale message costs nothing.
        transmission_fresh(time, now_s, self.tolerance_s).map_err(WebhookError::Signature)?;
        let verified = match self.verification {
            PayPalVerification::Certificate => {
                let key = self.trusted_key(cert_url, now_s).await?;
                let message = signed_message(id, time, &self.webhook_id, body);
                verify_signature(&key, &message, sig)
            }
            PayPalVerification::Api => {
                // Not JSON: nothing PayPal could vouch for, so not signed as far as we know.
                // Otherwise the very text received, not a re-serialization of it.
                let event = std::str::from_utf8(body)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        serde_json::value::RawValue::from_string(text.trim().to_owned())
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| {
                        WebhookError::Signature(format!("not JSON, so it cannot be verified: {e}"))
                    })?;
                let req = wire::VerifyRequest {
                    auth_algo: algo.into(),
                    cert_url: cert_url.into(),
                    transmission_id: id.into(),
                    transmission_sig: sig.into(),
                    transmission_time: time.into(),
                    webhook_id: self.webhook_id.clone(),
                    webhook_event: event,
                };
                let url = format!("{}/v1/notifications/verify-webhook-signature", self.base);
                let answer: wire::VerifyResponse = self
                    .call(|_| self.http.post(&url).json(&req))
                    .await
                    .map_err(|e| WebhookError::Unavailable(e.to_string()))?;
                answer.verification_status == "SUCCESS"
            }
        };
        if !verified {
            return Err(WebhookError::Signature(
                "paypal-transmission-sig does not match".into(),
            ));
        }
        self.read_stored(headers, body)
            .map_err(WebhookError::Malformed)
    }

    fn read_stored(&self, _headers: &HeaderMap, body: &[u8]) -> Result<ProviderEvent, String> {
        normalize(body)
    }

    fn verification_cost(&self, headers: &HeaderMap) -> super::VerifyCost {
        use super::VerifyCost::{Fetch, Local, Remote};
        if self.verification == PayPalVerification::Api {
            return Remote;
        }
        if self.cert_file.is_some() {
            return Local;
        }
        let Some(url) = headers
            .get("paypal-cert-url")
            .and_then(|v| v.to_str().ok())
            .and_then(|u| cert_url_allowed(u).ok())
        else {
            return Local;
        };
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.contains_key(url.as_str()) {
            Local
        } else {
            Fetch
        }
    }

    fn transmission_id<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get("paypal-transmission-id")
            .and_then(|v| v.to_str().ok())
    }

    /// PayPal's JS SDK hands `onApprove` the order id as `orderID`; the capture happens on
    /// the server, in `payment_state`.
    fn wire_money(&self, c: &Currency) -> Option<Wire> {
        wire_money(c)
    }

    fn client_claim(&self, payload: &Value) -> Result<ClientClaim, ClaimError> {
        payload
            .get("orderID")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(|s| ClientClaim {
                provider_order_id: s.to_owned(),
                provider_payment_id: None,
                field: "payload.orderID",
            })
            .ok_or_else(|| {
                ClaimError::Invalid(Invalid::new(
                    "payload.orderID",
                    "required: the order id PayPal's onApprove handed the page",
                ))
            })
    }

    fn checkout_params(&self) -> Value {
        json!({ "client_id": self.client_id })
    }

    /// `POST /v2/checkout/orders` with intent CAPTURE; `PayPal-Request-Id` (our payment id)
    /// makes a retried create return the same order. `custom_id` carries our payment id back
    /// in captures and events; `reference_id` our order id.
    async fn create_checkout(&self, r: &CheckoutRequest) -> Result<Checkout, ProviderError> {
        let currency =
            Currency::parse("currency", &r.currency).map_err(|e| ProviderError::Unusable {
                provider: NAME,
                message: e.to_string(),
            })?;
        let amount: i64 = r.lines.iter().map(|l| l.qty * l.unit_amount_minor).sum();
        let body = json!({
            "intent": "CAPTURE",
            "purchase_units": [{
                "reference_id": r.order_id,
                "custom_id": r.payment_id,
                "description": format!("Order {}", r.order_id),
                "amount": paypal_money(&r.currency, amount)?,
            }],
            "payment_source": { "paypal": { "experience_context": {
                "return_url": r.success_url,
                "cancel_url": r.cancel_url,
                "user_action": "PAY_NOW",
                "shipping_preference": "NO_SHIPPING",
            }}},
        });
        let url = format!("{}/v2/checkout/orders", self.base);
        let o: wire::Order = self
            .call(|_| {
                self.http
                    .post(&url)
                    .header("PayPal-Request-Id", &r.payment_id)
                    .header("Prefer", "return=representation")
                    .json(&body)
            })
            .await?;
        let created = o
            .purchase_units
            .first()
            .and_then(|u| currency.parse_decimal(&u.amount.value))
            .unwrap_or(amount);
        let url = o.link("payer-action").or_else(|| o.link("approve"));
        Ok(Checkout {
            url: url.map(str::to_owned),
            provider_order_id: o.id,
            amount_minor: created,
        })
    }

    /// Reads the order, capturing it first when the buyer has approved it, and reports its
    /// capture.
    async fn payment_state(&self, p: &PaymentRef<'_>) -> Result<PaymentState, ProviderError> {
        let mut order = self.get_order(p.provider_order_id).await?;
        let mut declined = None;
        if order.status == "APPROVED" {
            match self.capture(&order.id).await {
                Ok(o) => order = o,
                Err(e) => match declined_issue(&e) {
                    Some(issue) => declined = Some(issue),
                    None => return Err(e),
                },
            }
        }
        let unpaid = |change, state: String| PaymentState {
            change,
            paid: false,
            state,
            amount_minor: 0,
            currency: String::new(),
            provider_payment_id: None,
        };
        if let Some(issue) = declined {
            return Ok(unpaid(
                PaymentChange::Failed,
                format!("capture declined ({issue})"),
            ));
        }
        let Some(capture) = order.capture() else {
            let change = if order.status == "VOIDED" {
                PaymentChange::Expired
            } else {
                PaymentChange::Ignored
            };
            return Ok(unpaid(change, format!("order {}", order.status)));
        };
        let currency =
            Currency::parse("currency_code", &capture.amount.currency_code).map_err(|e| {
                ProviderError::Decode {
                    provider: NAME,
                    message: e.to_string(),
                }
            })?;
        let amount_minor = currency
            .parse_decimal(&capture.amount.value)
            .ok_or_else(|| ProviderError::Decode {
                provider: NAME,
                message: format!("capture amount {:?} is not a decimal", capture.amount.value),
            })?;
        let id = Some(capture.id.clone());
        let (change, paid) = match capture.status.as_str() {
            "COMPLETED" | "PARTIALLY_REFUNDED" | "REFUNDED" => (
                PaymentChange::Paid {
                    provider_payment_id: id.clone(),
                },
                true,
            ),
            "PENDING" => (
                PaymentChange::AwaitingSettlement {
                    provider_payment_id: id.clone(),
                },
                false,
            ),
            "DECLINED" | "FAILED" => (PaymentChange::Failed, false),
            _ => (PaymentChange::Ignored, false),
        };
        Ok(PaymentState {
            change,
            paid,
            state: format!("order {}, capture {}", order.status, capture.status),
            amount_minor,
            currency: currency.as_str().to_owned(),
            provider_payment_id: id,
        })
    }

    /// Transaction Search (`GET /v1/reporting/transactions`), in windows of at most 31 days
    /// (the API's limit), page by page. Only money received (positive amounts) is a
    /// payment; refunds and fees are left out. PayPal lists a transaction up to three hours
    /// after it happened.
    async fn recent_payments(&self, since_s: i64) -> Result<Vec<RecentPayment>, ProviderError> {
        const WINDOW_S: i64 = 31 * 86_400;
        let now_s = crate::domain::now_ms() / 1000;
        let mut out = Vec::new();
        let mut start = since_s;
        while start <= now_s && out.len() < super::RECENT_LIMIT {
            let end = (start + WINDOW_S).min(now_s);
            let mut page = 1;
            loop {
                let q = [
                    ("start_date", iso_utc(start)),
                    ("end_date", iso_utc(end)),
                    ("fields", "transaction_info".to_owned()),
                    ("page_size", "100".to_owned()),
                    ("page", page.to_string()),
                ];
                let url = format!("{}/v1/reporting/transactions", self.base);
                let found: wire::TransactionSearch =
                    self.call(|_| self.http.get(&url).query(&q)).await?;
                for d in found.transaction_details {
                    if let Some(p) = recent_of(d.transaction_info) {
                        out.push(p);
                    }
                }
                if page >= found.total_pages || out.len() >= super::RECENT_LIMIT {
                    break;
                }
                page += 1;
            }
            start = end + 1;
        }
        Ok(out)
    }

    /// `GET /v1/notifications/webhooks-events` since `since_s`, following the `next` links
    /// (on PayPal's API hosts only: [`next_link_allowed`]).
    async fn missed_events(
        &self,
        since_s: i64,
    ) -> Result<Vec<(ProviderEvent, Vec<u8>)>, ProviderError> {
        let now_s = crate::domain::now_ms() / 1000;
        let mut url = format!(
            "{}/v1/notifications/webhooks-events?start_time={}&end_time={}&page_size=300",
            self.base,
            iso_utc(since_s),
            iso_utc(now_s)
        );
        let mut out = Vec::new();
        loop {
            let page: wire::EventList = self.call(|_| self.http.get(&url)).await?;
            out.extend(super::read_events(NAME, page.events, normalize));
            let next = page
                .links
                .into_iter()
                .find(|l| l.rel == "next")
                .map(|l| l.href)
                .filter(|h| next_link_allowed(&self.base, h));
            match next {
                Some(n) if out.len() < super::RECENT_LIMIT => url = n,
                _ => return Ok(out),
            }
        }
    }

    /// `GET /v2/payments/refunds/{id}` (<https://developer.paypal.com/docs/api/payments/v2/#refunds_get>).
    async fn refund_state(
        &self,
        _p: &PaymentRef<'_>,
        provider_refund_id: &str,
    ) -> Result<RefundState, ProviderError> {
        let url = format!("{}/v2/payments/refunds/{provider_refund_id}", self.base);
        let r: wire::Refund = self.call(|_| self.http.get(&url)).await?;
        Ok(RefundState::of(&r.status))
    }

    async fn refund(
        &self,
        p: &PaymentRef<'_>,
        req: &RefundRequest<'_>,
    ) -> Result<Refund, ProviderError> {
        let capture = super::payment_id_for(p, NAME, "capture")?;
        let url = format!("{}/v2/payments/captures/{capture}/refund", self.base);
        let body = json!({
            "amount": paypal_money(req.currency, req.amount_minor)?,
            "custom_id": req.refund_id,
        });
        let r: wire::Refund = self
            .call(|_| {
                self.http
                    .post(&url)
                    .header("PayPal-Request-Id", req.idempotency_key)
                    .header("Prefer", "return=representation")
                    .json(&body)
            })
            .await?;
        let amount_minor = r.amount.as_ref().and_then(wire::Money::minor).unwrap_or(0);
        Ok(Refund {
            id: r.id,
            amount_minor,
            status: r.status.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pages_are_followed_on_paypals_api_hosts_only() {
        let live = "https://api-m.paypal.com";
        let page = "/v1/notifications/webhooks-events?page=2";
        assert!(next_link_allowed(
            live,
            &format!("https://api.paypal.com{page}")
        ));
        assert!(next_link_allowed(
            live,
            &format!("https://api-m.paypal.com{page}")
        ));
        for refused in [
            format!("https://api.sandbox.paypal.com{page}"),
            format!("https://evil.example{page}"),
            format!("http://api.paypal.com{page}"),
            format!("https://api.paypal.com:8443{page}"),
            format!("https://user:pw@api.paypal.com{page}"),
            format!("https://api.paypal.com.evil.example{page}"),
        ] {
            assert!(!next_link_allowed(live, &refused), "{refused}");
        }
        let sandbox = "https://api-m.sandbox.paypal.com";
        assert!(next_link_allowed(
            sandbox,
            &format!("https://api.sandbox.paypal.com{page}")
        ));
        assert!(!next_link_allowed(
            sandbox,
            &format!("https://api.paypal.com{page}")
        ));
        // Our own sandbox: its own origin only.
        let local = "http://127.0.0.1:8099";
        assert!(next_link_allowed(
            local,
            &format!("http://127.0.0.1:8099{page}")
        ));
        assert!(!next_link_allowed(
            local,
            &format!("http://127.0.0.1:9999{page}")
        ));
        // … or another loopback name for it, as the sandbox's links are.
        assert!(next_link_allowed(
            local,
            &format!("http://localhost:8099{page}")
        ));
        for refused in [
            format!("https://localhost:8099{page}"),
            format!("http://localhost:9999{page}"),
            format!("http://10.0.0.1:8099{page}"),
            format!("http://api.paypal.com:8099{page}"),
        ] {
            assert!(!next_link_allowed(local, &refused), "{refused}");
        }
    }

    #[test]
    fn a_token_answer_needs_only_the_token_and_its_type() {
        let t: wire::Token =
            serde_json::from_str(r#"{"access_token":"A21AAx","token_type":"Bearer"}"#)
                .expect("the required fields are enough");
        assert_eq!((t.access_token.as_str(), t.expires_in), ("A21AAx", 0));
    }

    #[test]
    fn a_reversed_transaction_is_not_a_payment() {
        let listed = |status: &str| wire::TransactionInfo {
            transaction_id: "9XL12345AB678901C".into(),
            transaction_event_code: "T0006".into(),
            transaction_initiation_date: "2026-12-07T01:00:00+0000".into(),
            transaction_amount: wire::Money {
                currency_code: "USD".into(),
                value: "10.00".into(),
            },
            transaction_status: status.into(),
            custom_field: None,
        };
        let reversed = recent_of(listed("V")).expect("readable");
        assert!(!reversed.state.paid);
        assert_eq!(reversed.state.change, PaymentChange::Ignored);
        let completed = recent_of(listed("S")).expect("readable");
        assert!(completed.state.paid);
        assert_eq!(completed.state.amount_minor, 1000);
    }

    #[test]
    fn a_declined_capture_is_known_by_its_issue() {
        let refused = |issue: &str| ProviderError::Status {
            provider: NAME,
            status: 422,
            message: format!(
                "UNPROCESSABLE_ENTITY: The requested action could not be performed. [{issue}]"
            ),
            should_retry: None,
        };
        assert_eq!(
            declined_issue(&refused("INSTRUMENT_DECLINED")),
            Some("INSTRUMENT_DECLINED")
        );
        assert_eq!(
            declined_issue(&refused("PAYER_CANNOT_PAY")),
            Some("PAYER_CANNOT_PAY")
        );
        assert_eq!(declined_issue(&refused("ORDER_NOT_APPROVED")), None);
        let unavailable = ProviderError::Status {
            provider: NAME,
            status: 503,
            message: "INSTRUMENT_DECLINED".into(),
            should_retry: None,
        };
        assert_eq!(declined_issue(&unavailable), None, "only a 422 says so");
    }

    #[test]
    fn only_an_uncached_paypal_certificate_counts_as_a_fetch() {
        use crate::providers::VerifyCost;
        let c = config::PayPal {
            enabled: true,
            client_id: "id".into(),
            client_secret: "secret".into(),
            webhook_id: "WH-1".into(),
            api_base: "https://api-m.sandbox.paypal.com".into(),
            webhook_verification: PayPalVerification::Certificate,
            webhook_cert_file: String::new(),
            webhook_tolerance_secs: 300,
        };
        let pp = PayPal::new(&c, reqwest::Client::new());
        let with = |url: &str| {
            let mut h = HeaderMap::new();
            h.insert("paypal-cert-url", url.parse().expect("header"));
            h
        };
        let genuine = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594";
        assert_eq!(pp.verification_cost(&with(genuine)), VerifyCost::Fetch);
        // Refused by its URL before any fetch, or no URL at all: nothing is fetched.
        assert_eq!(
            pp.verification_cost(&with("https://evil.example/v1/notifications/certs/X")),
            VerifyCost::Local
        );
        assert_eq!(pp.verification_cost(&HeaderMap::new()), VerifyCost::Local);
        // Once its key is cached, the same certificate costs nothing.
        let key = crate::sandbox::paypal::signing_key()
            .expect("sandbox key")
            .to_public_key();
        pp.keys.lock().expect("keys").insert(
            genuine.to_owned(),
            TrustedKey {
                key,
                not_after_s: i64::MAX,
                stamp: None,
            },
        );
        assert_eq!(pp.verification_cost(&with(genuine)), VerifyCost::Local);
        // A configured certificate file is read, never fetched.
        let file = PayPal::new(
            &config::PayPal {
                webhook_cert_file: "cert.pem".into(),
                ..c.clone()
            },
            reqwest::Client::new(),
        );
        assert_eq!(file.verification_cost(&with(genuine)), VerifyCost::Local);
        // Asking PayPal's API is remote, whatever the headers.
        let api = PayPal::new(
            &config::PayPal {
                webhook_verification: PayPalVerification::Api,
                ..c.clone()
            },
            reqwest::Client::new(),
        );
        assert_eq!(api.verification_cost(&HeaderMap::new()), VerifyCost::Remote);
    }

    #[test]
    fn transmission_time_must_be_fresh_and_not_from_the_future() {
        // 2026-11-22T10:00:00Z
        let now = 1_795_341_600;
        let ok = |t: &str| transmission_fresh(t, now, 300);
        assert_eq!(ok("2026-11-22T10:00:00Z"), Ok(()));
        assert_eq!(ok("2026-11-22T09:55:00Z"), Ok(()), "exactly the tolerance");
        assert_eq!(ok("2026-11-22T10:01:00Z"), Ok(()), "a minute of skew");
        assert_eq!(ok("2026-11-22T11:55:00+02:00"), Ok(()), "any offset");
        for stale in [
            "2026-11-22T09:54:59Z",
            "2016-11-22T10:00:00Z",
            "2026-11-22T10:01:01Z",
            "2036-11-22T10:00:00Z",
            "yesterday",
            "",
            "1795341600",
        ] {
            assert!(ok(stale).is_err(), "{stale:?} is refused");
        }
    }

    #[test]
    fn signed_message_uses_the_decimal_crc32_of_the_raw_body() {
        // crc32("hello world") = 0x0d4a1185 = 222957957.
        assert_eq!(
            signed_message("id-1", "2026-11-22T10:00:00Z", "WH-1", b"hello world"),
            "id-1|2026-11-22T10:00:00Z|WH-1|222957957"
        );
    }

    /// Key, certificate and signature made with the openssl command line (`openssl req
    /// -x509 -newkey rsa:2048`, `openssl dgst -sha256 -sign`); the CRC with Python's zlib.
    /// Only the public half is kept.
    #[test]
    fn known_vector_made_with_openssl_verifies() {
        let cert = include_bytes!("../../tests/fixtures/paypal/cert.pem");
        let body = include_bytes!("../../tests/fixtures/paypal/body.json");
        let sig = include_str!("../../tests/fixtures/paypal/sig.b64");
        let now = 1_800_000_000;
        let key = key_from_pem(cert, now).expect("certificate").key;
        let (id, time, webhook) = (
            "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
            "2016-02-18T20:01:35Z",
            "1JE4291016473214C",
        );
        let message = signed_message(id, time, webhook, body);
        assert_eq!(message, format!("{id}|{time}|{webhook}|1038609229"));
        assert!(verify_signature(&key, &message, sig));
        let tampered = signed_message(id, time, webhook, &body[1..]);
        assert!(!verify_signature(&key, &tampered, sig));
        let other_hook = signed_message(id, time, "WH-OTHER", body);
        assert!(!verify_signature(&key, &other_hook, sig));
        assert!(!verify_signature(&key, &message, "not base64!"));
        // Past its notAfter (2126) the certificate is refused.
        assert!(key_from_pem(cert, 5_000_000_000).is_err());
        assert!(key_from_pem(b"garbage", now).is_err());
    }

    #[test]
    fn cert_urls_outside_paypal_are_refused() {
        for ok in [
            "https://api.paypal.com/v1/notifications/certs/CERT-360caa42",
            "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
            "https://api-m.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
        ] {
            assert!(cert_url_allowed(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.paypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com.evil.example/v1/notifications/certs/CERT-1",
            "https://evilpaypal.com/v1/notifications/certs/CERT-1",
            "https://paypal.com@evil.example/v1/notifications/certs/CERT-1",
            "https://user:pw@api.paypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
            "https://www.paypal.com/signin",
            "https://127.0.0.1/v1/notifications/certs/CERT-1",
            "file:///etc/passwd",
            "not a url",
            "https://slow.paypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com/v1/notifications/certs/CERT-1?n=2",
            "https://api.paypal.com/v1/notifications/certs/CERT-1#x",
            "https://api.paypal.com/v1/notifications/certs/",
            "https://api.paypal.com/v1/notifications/certs/a/../../../x",
        ] {
            assert!(cert_url_allowed(bad).is_err(), "{bad}");
        }
    }
}
