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

mod client;
mod events;
mod signature;

use client::*;
pub use events::*;
pub use signature::*;

const NAME: &str = "paypal";

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
        let now_s = crate::clock::now_ms() / 1000;
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
        let now_s = crate::clock::now_ms() / 1000;
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
mod tests;
