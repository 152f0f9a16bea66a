//! Payment providers, behind one trait. Each provider verifies and normalizes its own
//! webhooks, reads the browser's proof of payment, and offers the API calls the pipeline
//! makes (create a checkout, read a payment, refund). Intake, steps and sweepers only ever
//! hold a `dyn Provider` found by name in [`Providers`]: they never branch on which one it
//! is. Base URLs come from configuration, so the same code talks to the real provider or to
//! `fulfilld sandbox`.
//!
//! One module per provider, its wire types beside it (`stripe.rs` + `stripe/wire.rs`).

pub mod money;
pub mod paypal;
pub mod razorpay;
pub mod stripe;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use jobs::StepError;
use serde_json::Value;

use crate::config::Config;
use crate::domain::Invalid;
pub use crate::domain::event::{
    PaymentChange, PaymentRef, ProviderEvent, RefundNotice, RefundState,
};

/// What a provider does for fulfilld.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The name in URLs (`/webhooks/{name}`), API payloads and the store.
    fn name(&self) -> &'static str;

    /// Checks a webhook's authenticity on the raw bytes and headers, as the provider
    /// specifies, then normalizes it. Nothing is stored for a webhook refused here.
    async fn webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<ProviderEvent, WebhookError>;

    /// The provider's id of this one delivery, when the signature covers one that must be
    /// taken only once (PayPal's `paypal-transmission-id`: its signature covers a CRC32 of
    /// the body, which can be matched at will, so the id is what ties a signature to one
    /// body). The intake takes it after the signature verified.
    fn transmission_id<'h>(&self, _headers: &'h HeaderMap) -> Option<&'h str> {
        None
    }

    /// What verifying a webhook with these headers would cost (see [`VerifyCost`]).
    fn verification_cost(&self, _headers: &HeaderMap) -> VerifyCost {
        VerifyCost::Local
    }

    /// Normalizes an event that [`Provider::webhook`] accepted before and that was stored
    /// with its headers, without checking its signature again (its age would now refuse it):
    /// how the event applier reads what the intake appended.
    fn read_stored(&self, headers: &HeaderMap, body: &[u8]) -> Result<ProviderEvent, String>;

    /// Reads what the provider's checkout handed the browser and says which checkout of ours
    /// it is about. Proof is checked against the provider afterwards, never taken from here.
    fn client_claim(&self, payload: &serde_json::Value) -> Result<ClientClaim, ClaimError>;

    /// Whether the provider ends an unpaid checkout by itself (Stripe at the session's
    /// `expires_at`, PayPal's unapproved orders); when not (Razorpay), the checkout ends with
    /// our stock reservation.
    fn checkout_expires(&self) -> bool {
        true
    }

    /// How this provider writes amounts of `c` (see [`money`]); `None` if it does not take
    /// `c` at all.
    fn wire_money(&self, c: &crate::domain::Currency) -> Option<money::Wire>;

    /// What the shop's frontend needs, beyond the checkout URL, to open this provider's
    /// checkout for a payment (Razorpay: the key id for Checkout.js).
    fn checkout_params(&self) -> serde_json::Value {
        serde_json::json!({})
    }

    async fn create_checkout(&self, r: &CheckoutRequest) -> Result<Checkout, ProviderError>;

    /// The provider's own record of a payment.
    async fn payment_state(&self, p: &PaymentRef<'_>) -> Result<PaymentState, ProviderError>;

    /// The payments made since `since_s` (Unix seconds), as the provider lists them:
    /// what reconciliation compares with the store. Paged through to the end.
    async fn recent_payments(&self, since_s: i64) -> Result<Vec<RecentPayment>, ProviderError>;

    /// Events since `since_s` that may never have reached us, read back from the provider's
    /// API (authentic by the API's own authentication), normalized, with their raw JSON:
    /// Stripe lists the ones it could not deliver (`delivery_success=false`); PayPal lists
    /// every event notification (those we have are known by id and change nothing); Razorpay
    /// has no such list (reconciliation compares its payments instead).
    async fn missed_events(
        &self,
        _since_s: i64,
    ) -> Result<Vec<(ProviderEvent, Vec<u8>)>, ProviderError> {
        Ok(Vec::new())
    }

    /// Where a refund the provider accepted stands now (for a `pending` one whose event may
    /// have been lost).
    async fn refund_state(
        &self,
        p: &PaymentRef<'_>,
        provider_refund_id: &str,
    ) -> Result<RefundState, ProviderError>;

    /// Refunds `r.amount_minor` of the payment, at most once per `r.idempotency_key`.
    async fn refund(
        &self,
        p: &PaymentRef<'_>,
        r: &RefundRequest<'_>,
    ) -> Result<Refund, ProviderError>;
}

/// Events read back from a provider's API (raw JSON objects), normalized with that
/// provider's `normalize`, each with its raw bytes; one that does not read is logged and
/// skipped rather than failing the rest.
fn read_events(
    provider: &str,
    listed: Vec<serde_json::Value>,
    normalize: fn(&[u8]) -> Result<ProviderEvent, String>,
) -> Vec<(ProviderEvent, Vec<u8>)> {
    let mut out = Vec::with_capacity(listed.len());
    for v in listed {
        let raw = serde_json::to_vec(&v).unwrap_or_default();
        match normalize(&raw) {
            Ok(ev) => out.push((ev, raw)),
            Err(e) => tracing::warn!(provider, error = %e, "a listed event is unreadable; skipped"),
        }
    }
    out
}

/// Why a webhook was refused; nothing is stored either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Forged, tampered or unsigned (400).
    #[error("{0}")]
    Signature(String),
    /// Signed but unreadable: kept all the same (200), and not applied.
    #[error("{0}")]
    Malformed(String),
    /// What checks the signature is out of reach right now (PayPal's certificate or
    /// verification API): 503, so the provider delivers it again later.
    #[error("{0}")]
    Unavailable(String),
}

/// Why the browser's payload was refused: unusable (422), or signed wrongly (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Signature(String),
}

/// The checkout a browser's payload claims to be about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientClaim {
    pub provider_order_id: String,
    /// The provider's payment id, when the payload carries one that its signature vouches for.
    pub provider_payment_id: Option<String>,
    /// The payload field that named it, for error messages.
    pub field: &'static str,
}

/// The provider's payment id of `p`, which refunds need; an error naming `what` is missing
/// when the payment has none yet.
pub(crate) fn payment_id_for<'a>(
    p: &PaymentRef<'a>,
    provider: &'static str,
    what: &str,
) -> Result<&'a str, ProviderError> {
    p.provider_payment_id
        .ok_or_else(|| ProviderError::Unusable {
            provider,
            message: format!("no {what} to refund"),
        })
}

/// A refund to ask the provider for.
#[derive(Debug, Clone, Copy)]
pub struct RefundRequest<'a> {
    /// Our refund id. The provider keeps it with the refund (Stripe `metadata`, Razorpay
    /// `notes`, PayPal `custom_id`) and echoes it in refund events, which then find our row.
    pub refund_id: &'a str,
    /// Our payment id, kept beside it.
    pub payment_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    /// Makes a retried call return the first refund instead of making another.
    pub idempotency_key: &'a str,
}

/// A refund the provider accepted.
#[derive(Debug, Clone)]
pub struct Refund {
    pub id: String,
    pub amount_minor: i64,
    /// The provider's word: e.g. `succeeded`, `pending`, `failed`.
    pub status: String,
}

impl Refund {
    pub fn state(&self) -> RefundState {
        RefundState::of(&self.status)
    }
}

/// The configured providers, by name.
#[derive(Debug, Clone)]
pub struct Providers {
    by_name: BTreeMap<&'static str, Arc<dyn Provider>>,
}

impl Providers {
    pub fn from_config(config: &Config) -> Providers {
        let mut by_name: BTreeMap<&'static str, Arc<dyn Provider>> = BTreeMap::new();
        let p = &config.providers;
        let http = http_client(p.request_timeout_ms);
        if p.stripe.enabled {
            by_name.insert(
                "stripe",
                Arc::new(stripe::Stripe::new(&p.stripe, http.clone())),
            );
        }
        if p.razorpay.enabled {
            let r = razorpay::Razorpay::new(&p.razorpay, http.clone());
            by_name.insert("razorpay", Arc::new(r));
        }
        if p.paypal.enabled {
            by_name.insert("paypal", Arc::new(paypal::PayPal::new(&p.paypal, http)));
        }
        Providers { by_name }
    }

    /// Every configured provider, by name.
    pub fn enabled(&self) -> impl Iterator<Item = &dyn Provider> {
        self.by_name.values().map(|p| p.as_ref())
    }

    /// The provider called `name`, or an error for `field` that lists the supported ones.
    pub fn get(&self, field: &str, name: &str) -> Result<&dyn Provider, Invalid> {
        self.by_name.get(name).map(|p| p.as_ref()).ok_or_else(|| {
            let known: Vec<String> = self.by_name.keys().map(|k| format!("{k:?}")).collect();
            Invalid::new(
                field,
                format!(
                    "{name:?} is not a supported provider (supported: {})",
                    known.join(", ")
                ),
            )
        })
    }
}

/// What checking one webhook's signature costs, which decides whether the sender's
/// forged-webhook budget gates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyCost {
    /// Computed here from the bytes and keys at hand (an HMAC, a cached certificate):
    /// always checked, so no budget can turn a genuine webhook away.
    Local,
    /// Fetches what the sender names (a PayPal certificate not cached yet): paid for with
    /// a token of the sender's budget before anything is fetched.
    Fetch,
    /// Asks the provider's API (PayPal's verify-webhook-signature): only while the sender's
    /// budget is not spent by failures, so forged messages cannot use up the API quota.
    Remote,
}

/// The provider's record of a payment, as `confirm_capture` checks it and the browser's
/// verify call applies it.
#[derive(Debug, Clone)]
pub struct PaymentState {
    /// What the record means for our payment, exactly as if an event had said it.
    pub change: PaymentChange,
    pub paid: bool,
    pub state: String,
    pub amount_minor: i64,
    pub currency: String,
    pub provider_payment_id: Option<String>,
}

/// One of a provider's recent payments.
#[derive(Debug, Clone)]
pub struct RecentPayment {
    /// The checkout it belongs to (Stripe session, Razorpay order), when the listing says.
    pub provider_order_id: Option<String>,
    /// Our payment id, when the provider kept it with the payment (Stripe `metadata`,
    /// PayPal `custom_id`).
    pub payment_ref: Option<String>,
    pub created_s: i64,
    /// What it means for our payment, as `payment_state` would say (read only: nothing is
    /// captured by listing).
    pub state: PaymentState,
    /// The provider gave the money back to the buyer (PayPal's reversed `V`): a payment we
    /// still hold as paid goes to a person, whose refund or dispute decides.
    pub returned: bool,
}

/// At most this many payments are read per listing, so a huge backlog cannot exhaust
/// memory; reconciliation runs again from where the newest seen left off.
pub const RECENT_LIMIT: usize = 10_000;

/// An order line as sent to a hosted checkout page.
#[derive(Debug, Clone)]
pub struct CheckoutLine {
    pub name: String,
    pub qty: i64,
    pub unit_amount_minor: i64,
}

#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub order_id: String,
    pub payment_id: String,
    pub customer_email: String,
    pub currency: String,
    pub lines: Vec<CheckoutLine>,
    pub success_url: String,
    pub cancel_url: String,
    /// When the stock reserved for this checkout is released (Unix seconds): a provider
    /// that can end its checkout then is asked to, so no payment lands after the stock went.
    pub reserved_until_s: i64,
}

#[derive(Debug, Clone)]
pub struct Checkout {
    pub provider_order_id: String,
    /// A hosted page to send the buyer to, for providers that have one.
    pub url: Option<String>,
    pub amount_minor: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request never got an answer (connection refused, reset, timeout).
    #[error("{provider}: request failed: {message}")]
    Transport {
        provider: &'static str,
        message: String,
    },
    /// The provider answered with an error status.
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        provider: &'static str,
        status: u16,
        message: String,
        /// What the provider said about asking again, where it says (Stripe's
        /// `Stripe-Should-Retry`); it overrides the status's usual meaning.
        should_retry: Option<bool>,
    },
    /// The provider answered 2xx with something we cannot read.
    #[error("{provider}: unexpected response: {message}")]
    Decode {
        provider: &'static str,
        message: String,
    },
    /// The call cannot be made at all (the payment lacks what the provider needs).
    #[error("{provider}: {message}")]
    Unusable {
        provider: &'static str,
        message: String,
    },
}

/// The HTTP client every provider's API calls share (one connection pool).
fn http_client(timeout_ms: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .connect_timeout(std::time::Duration::from_millis(timeout_ms.min(5_000)))
        .build()
        .unwrap_or_default()
}

/// Sends an authenticated request and reads the JSON answer: transport failures,
/// non-2xx answers (their message read by `error_message` from the provider's own error
/// envelope) and unreadable bodies become the matching [`ProviderError`].
async fn send_json<T: serde::de::DeserializeOwned>(
    provider: &'static str,
    req: reqwest::RequestBuilder,
    error_message: fn(&[u8]) -> Option<String>,
) -> Result<T, ProviderError> {
    let transport = |e: reqwest::Error| ProviderError::Transport {
        provider,
        message: e.to_string(),
    };
    let res = req.send().await.map_err(transport)?;
    let status = res.status();
    // Stripe says whether a failed request is worth repeating: `false` when repeating would
    // change nothing, `true` for a lock timeout or a conflict that will clear (as
    // stripe-node's RequestSender reads it; <https://docs.stripe.com/error-low-level#idempotency>).
    let should_retry = res
        .headers()
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
    let bytes = res.bytes().await.map_err(transport)?;
    if !status.is_success() {
        let message = error_message(&bytes)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(ProviderError::Status {
            provider,
            status: status.as_u16(),
            message,
            should_retry,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode {
        provider,
        message: e.to_string(),
    })
}

impl ProviderError {
    /// Transport errors, 408, 409 (Stripe: idempotent request in flight), 429 and 5xx may
    /// succeed later; other answers will not change by asking again — unless the provider
    /// says otherwise (`Stripe-Should-Retry`).
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Transport { .. } => true,
            ProviderError::Status {
                should_retry: Some(retry),
                ..
            } => *retry,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            ProviderError::Decode { .. } | ProviderError::Unusable { .. } => false,
        }
    }
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> StepError {
        if e.is_transient() {
            StepError::Transient(e.to_string())
        } else {
            StepError::Permanent(e.to_string())
        }
    }
}

/// The headers kept with an event, for verifying it again on replay: all but credentials.
pub fn kept_headers(headers: &HeaderMap) -> String {
    let kept: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "authorization" | "proxy-authorization" | "cookie"
            ) && k.as_str() != crate::store::events::SOURCE_HEADER
        })
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    Value::Object(kept).to_string()
}

/// The headers kept by [`kept_headers`], back as a map.
pub fn headers_from_kept(s: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(s) {
        for (k, v) in m {
            if let (Ok(name), Some(Ok(value))) = (
                axum::http::HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(axum::http::HeaderValue::from_str),
            ) {
                h.append(name, value);
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_says_whether_to_ask_again() {
        let answered = |status: u16, should_retry: Option<bool>| ProviderError::Status {
            provider: "stripe",
            status,
            message: String::new(),
            should_retry,
        };
        assert!(answered(503, None).is_transient());
        assert!(!answered(400, None).is_transient());
        assert!(
            !answered(503, Some(false)).is_transient(),
            "Stripe-Should-Retry: false"
        );
        assert!(
            answered(400, Some(true)).is_transient(),
            "Stripe-Should-Retry: true"
        );
    }

    #[test]
    fn a_refund_books_only_on_a_documented_success() {
        for (word, state) in [
            ("succeeded", RefundState::Succeeded),
            ("processed", RefundState::Succeeded),
            ("COMPLETED", RefundState::Succeeded),
            ("pending", RefundState::Pending),
            ("requires_action", RefundState::Pending),
            ("PENDING", RefundState::Pending),
            ("", RefundState::Pending),
            ("failed", RefundState::Failed),
            ("canceled", RefundState::Failed),
            ("CANCELLED", RefundState::Failed),
        ] {
            assert_eq!(RefundState::of(word), state, "{word:?}");
        }
    }
}
