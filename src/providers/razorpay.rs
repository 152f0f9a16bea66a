//! Razorpay: webhook and checkout signatures, event normalization, and the API client
//! (Orders, Payments, capture, Refunds).
//!
//! Webhooks carry `X-Razorpay-Signature`: hex HMAC-SHA256 of the raw body with the
//! *webhook* secret, and their id in `x-razorpay-event-id`. The browser's checkout hands
//! back `razorpay_order_id`, `razorpay_payment_id` and `razorpay_signature`: hex
//! HMAC-SHA256 of `"{order_id}|{payment_id}"` with the *key* secret. Comparisons are
//! constant-time (`Mac::verify_slice`). Razorpay has no hosted checkout URL: the shop's page
//! opens Checkout.js with the key id and the order id.

pub mod wire;

use async_trait::async_trait;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::money::{self, Wire};
use super::{
    Checkout, CheckoutRequest, ClaimError, ClientClaim, PaymentChange, PaymentRef, PaymentState,
    Provider, ProviderError, ProviderEvent, RecentPayment, Refund, RefundNotice, RefundRequest,
    RefundState, WebhookError,
};
use crate::config;
use crate::domain::{Currency, Invalid};

const NAME: &str = "razorpay";

/// How Razorpay writes amounts (Orders API, `amount`,
/// <https://razorpay.com/docs/api/orders/entity>): "in the smallest currency sub-unit", the
/// ISO one (zero-decimal currencies "such as JPY" whole, three-decimal ones "such as KWD,
/// BHD and OMR" with three digits), and "you should pass the last decimal number as 0 for
/// three decimal currency payments". Which currencies an account may charge depends on the
/// account (international payments), so none is refused here. Razorpay's amounts are then
/// our own minor units, and are read back as they are.
pub fn wire_money(c: &Currency) -> Option<Wire> {
    let iso = Wire::iso(c);
    Some(if iso.exponent == 3 {
        Wire { step: 10, ..iso }
    } else {
        iso
    })
}

/// Our minor units of `currency` as Razorpay takes them (the same number, if it takes it).
fn razorpay_amount(currency: &str, minor: i64) -> Result<i64, ProviderError> {
    money::to_provider(NAME, wire_money, currency, minor).map_err(|message| {
        ProviderError::Unusable {
            provider: NAME,
            message,
        }
    })
}

fn mac(secret: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m
}

/// Hex HMAC-SHA256 of the body: the webhook signature Razorpay sends.
pub fn sign_webhook(webhook_secret: &str, body: &[u8]) -> String {
    hex::encode(mac(webhook_secret, &[body]).finalize().into_bytes())
}

/// Hex HMAC-SHA256 of `"{order_id}|{payment_id}"`: the checkout's payment signature.
pub fn sign_payment(key_secret: &str, order_id: &str, payment_id: &str) -> String {
    let m = mac(
        key_secret,
        &[order_id.as_bytes(), b"|", payment_id.as_bytes()],
    );
    hex::encode(m.finalize().into_bytes())
}

fn matches(m: Hmac<Sha256>, hex_sig: &str) -> bool {
    hex::decode(hex_sig.trim()).is_ok_and(|sig| m.verify_slice(&sig).is_ok())
}

pub fn verify_webhook(webhook_secret: &str, body: &[u8], signature: &str) -> bool {
    matches(mac(webhook_secret, &[body]), signature)
}

pub fn verify_payment(key_secret: &str, order_id: &str, payment_id: &str, signature: &str) -> bool {
    matches(
        mac(
            key_secret,
            &[order_id.as_bytes(), b"|", payment_id.as_bytes()],
        ),
        signature,
    )
}

/// Reads a verified webhook body (its id comes from the header).
pub fn normalize(event_id: &str, body: &[u8]) -> Result<ProviderEvent, String> {
    let ev: wire::Event =
        serde_json::from_slice(body).map_err(|e| format!("not a Razorpay event: {e}"))?;
    let payment = ev.payload.payment.as_ref().map(|w| &w.entity);
    let order = ev.payload.order.as_ref().map(|w| &w.entity);
    let order_id = order
        .map(|o| o.id.clone())
        .or_else(|| payment.and_then(|p| p.order_id.clone()));
    let payment_ref = order
        .and_then(|o| o.notes.get("payment_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let need_payment = || payment.ok_or_else(|| format!("{}: no payment in the payload", ev.event));
    if matches!(ev.event.as_str(), "refund.processed" | "refund.failed") {
        let r = &ev
            .payload
            .refund
            .as_ref()
            .ok_or_else(|| format!("{}: no refund in the payload", ev.event))?
            .entity;
        let note = |k: &str| r.notes.get(k).and_then(Value::as_str).map(str::to_owned);
        return Ok(ProviderEvent {
            provider: NAME,
            event_id: event_id.to_owned(),
            event_type: ev.event.clone(),
            provider_order_id: order_id,
            provider_payment_id: Some(r.payment_id.clone()),
            payment_ref: note("payment_id"),
            change: PaymentChange::Refunded(RefundNotice {
                provider_refund_id: r.id.clone(),
                amount_minor: r.amount,
                currency: Some(r.currency.clone()),
                refund_ref: note("refund_id"),
                // refund.processed: the money went back; refund.failed: it did not.
                state: if ev.event == "refund.failed" {
                    RefundState::Failed
                } else {
                    RefundState::Succeeded
                },
            }),
        });
    }
    let change = match ev.event.as_str() {
        // An authorized payment is captured by `confirm_capture` (manual-capture accounts);
        // either way that step re-reads the payment before anything is fulfilled.
        "payment.authorized" | "payment.captured" | "order.paid" => PaymentChange::Paid {
            provider_payment_id: Some(need_payment()?.id.clone()),
        },
        "payment.failed" => PaymentChange::AttemptFailed,
        _ => PaymentChange::Ignored,
    };
    Ok(ProviderEvent {
        provider: NAME,
        event_id: event_id.to_owned(),
        event_type: ev.event,
        provider_order_id: if change == PaymentChange::Ignored {
            None
        } else {
            order_id
        },
        provider_payment_id: None,
        payment_ref,
        change,
    })
}

/// What a Razorpay payment says about ours. An authorized payment counts as paid, as its
/// event does: `confirm_capture` captures it before anything is fulfilled.
fn state_of(payment: wire::Payment) -> PaymentState {
    let id = Some(payment.id.clone());
    let change = match payment.status.as_str() {
        "captured" | "refunded" | "authorized" => PaymentChange::Paid {
            provider_payment_id: id.clone(),
        },
        "failed" => PaymentChange::AttemptFailed,
        _ => PaymentChange::Ignored,
    };
    PaymentState {
        paid: payment.status == "captured" || payment.status == "refunded",
        change,
        state: format!("status={}", payment.status),
        amount_minor: payment.amount,
        currency: payment.currency,
        provider_payment_id: id,
    }
}

/// Razorpay as a [`Provider`].
#[derive(Clone)]
pub struct Razorpay {
    http: reqwest::Client,
    base: String,
    key_id: String,
    key_secret: config::Secret,
    webhook_secret: config::Secret,
}

impl std::fmt::Debug for Razorpay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Razorpay")
            .field("base", &self.base)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Razorpay {
    pub fn new(c: &config::Razorpay, http: reqwest::Client) -> Razorpay {
        Razorpay {
            http,
            base: c.api_base.trim_end_matches('/').to_owned(),
            key_id: c.key_id.clone(),
            key_secret: c.key_secret.clone(),
            webhook_secret: c.webhook_secret.clone(),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        let req = req.basic_auth(&self.key_id, Some(self.key_secret.expose()));
        super::send_json(NAME, req, |body| {
            serde_json::from_slice::<wire::ErrorEnvelope>(body)
                .ok()
                .map(|e| format!("{}: {}", e.error.code, e.error.description))
        })
        .await
    }

    async fn get_payment(&self, id: &str) -> Result<wire::Payment, ProviderError> {
        self.call(self.http.get(format!("{}/v1/payments/{id}", self.base)))
            .await
    }

    /// The order's payment that matters: a captured one, else an authorized one, else the
    /// newest attempt.
    async fn order_payment(&self, order_id: &str) -> Result<Option<wire::Payment>, ProviderError> {
        let list: wire::Collection<wire::Payment> = self
            .call(
                self.http
                    .get(format!("{}/v1/orders/{order_id}/payments", self.base)),
            )
            .await?;
        let mut items = list.items;
        items.sort_by_key(|p| match p.status.as_str() {
            "captured" | "refunded" => 0,
            "authorized" => 1,
            _ => 2,
        });
        Ok(items.into_iter().next())
    }
}

#[async_trait]
impl Provider for Razorpay {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now_s: i64,
    ) -> Result<ProviderEvent, WebhookError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let sig = header("x-razorpay-signature")
            .ok_or_else(|| WebhookError::Signature("missing X-Razorpay-Signature header".into()))?;
        if !verify_webhook(self.webhook_secret.expose(), body, sig) {
            return Err(WebhookError::Signature(
                "no signature matches the payload".into(),
            ));
        }
        self.read_stored(headers, body)
            .map_err(WebhookError::Malformed)
    }

    fn read_stored(&self, headers: &HeaderMap, body: &[u8]) -> Result<ProviderEvent, String> {
        let event_id = headers
            .get("x-razorpay-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= 255)
            .ok_or_else(|| "missing x-razorpay-event-id header".to_owned())?;
        normalize(event_id, body)
    }

    fn wire_money(&self, c: &Currency) -> Option<Wire> {
        wire_money(c)
    }

    /// "A Razorpay Order ID can be mapped to any number of payment attempts" and an order
    /// has no expiry of its own (<https://razorpay.com/docs/api/orders/create/>): ours ends
    /// with the reservation.
    fn checkout_expires(&self) -> bool {
        false
    }

    fn client_claim(&self, payload: &Value) -> Result<ClientClaim, ClaimError> {
        let field = |name: &'static str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 255)
                .ok_or_else(|| {
                    Invalid::new(
                        format!("payload.{name}"),
                        "required, as Razorpay's checkout returned it",
                    )
                })
        };
        let order_id = field("razorpay_order_id")?;
        let payment_id = field("razorpay_payment_id")?;
        let signature = field("razorpay_signature")?;
        // The order id is looked up among this order's own checkouts before anything is
        // applied, so a signature over someone else's order id changes nothing either.
        if !verify_payment(self.key_secret.expose(), order_id, payment_id, signature) {
            return Err(ClaimError::Signature(
                "razorpay_signature does not match".into(),
            ));
        }
        Ok(ClientClaim {
            provider_order_id: order_id.to_owned(),
            provider_payment_id: Some(payment_id.to_owned()),
            field: "payload.razorpay_order_id",
        })
    }

    /// Checkout.js's key and where the page loads Checkout.js from.
    fn checkout_params(&self) -> Value {
        json!({ "key_id": self.key_id, "script": checkout_script(&self.base) })
    }

    /// `POST /v1/orders`; `receipt` is our order id, `notes` carry both our ids.
    async fn create_checkout(&self, r: &CheckoutRequest) -> Result<Checkout, ProviderError> {
        let amount: i64 = r.lines.iter().map(|l| l.qty * l.unit_amount_minor).sum();
        let body = json!({
            "amount": razorpay_amount(&r.currency, amount)?,
            "currency": r.currency.to_ascii_uppercase(),
            "receipt": r.order_id,
            "notes": { "order_id": r.order_id, "payment_id": r.payment_id },
        });
        let o: wire::Order = self
            .call(
                self.http
                    .post(format!("{}/v1/orders", self.base))
                    .json(&body),
            )
            .await?;
        Ok(Checkout {
            provider_order_id: o.id,
            url: None,
            amount_minor: o.amount,
        })
    }

    /// Reads the payment (the one named, or the order's), capturing it first when it is
    /// only authorized (accounts that capture manually).
    async fn payment_state(&self, p: &PaymentRef<'_>) -> Result<PaymentState, ProviderError> {
        let payment = match p.provider_payment_id {
            Some(id) => Some(self.get_payment(id).await?),
            None => self.order_payment(p.provider_order_id).await?,
        };
        let Some(mut payment) = payment else {
            return Ok(PaymentState {
                change: PaymentChange::Ignored,
                paid: false,
                state: "no payment attempt yet".into(),
                amount_minor: 0,
                currency: String::new(),
                provider_payment_id: None,
            });
        };
        if payment.order_id.as_deref() != Some(p.provider_order_id) {
            return Err(ProviderError::Unusable {
                provider: NAME,
                message: format!(
                    "payment {} does not belong to order {}",
                    payment.id, p.provider_order_id
                ),
            });
        }
        if payment.status == "authorized" {
            let body = json!({ "amount": payment.amount, "currency": payment.currency });
            let url = format!("{}/v1/payments/{}/capture", self.base, payment.id);
            payment = match self.call(self.http.post(url).json(&body)).await {
                Ok(captured) => captured,
                // Captured by someone else since we read it: the account's automatic capture,
                // or a verify call, a webhook's step and `confirm_capture` racing. Razorpay
                // captures a payment once and answers the others with this error (Capture API,
                // <https://razorpay.com/docs/api/payments/capture>, "This payment has already
                // been captured"): read it again and go on.
                Err(ProviderError::Status {
                    status: 400,
                    message,
                    ..
                }) if message.contains("already been captured") => {
                    self.get_payment(&payment.id).await?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(state_of(payment))
    }

    /// `GET /v1/payments?from=…`, newest first, page by page.
    async fn recent_payments(&self, since_s: i64) -> Result<Vec<RecentPayment>, ProviderError> {
        let mut out = Vec::new();
        loop {
            let q = [
                ("from", since_s.to_string()),
                ("count", "100".to_owned()),
                ("skip", out.len().to_string()),
            ];
            let page: wire::Collection<wire::Payment> = self
                .call(
                    self.http
                        .get(format!("{}/v1/payments", self.base))
                        .query(&q),
                )
                .await?;
            let n = page.items.len();
            out.extend(page.items.into_iter().map(|p| RecentPayment {
                returned: false,
                provider_order_id: p.order_id.clone(),
                payment_ref: None,
                created_s: p.created_at,
                state: state_of(p),
            }));
            if n < 100 || out.len() >= super::RECENT_LIMIT {
                return Ok(out);
            }
        }
    }

    /// `GET /v1/payments/{payment}/refunds/{id}`
    /// (<https://razorpay.com/docs/api/refunds/fetch-specific-refund-payment/>).
    async fn refund_state(
        &self,
        p: &PaymentRef<'_>,
        provider_refund_id: &str,
    ) -> Result<RefundState, ProviderError> {
        let payment = super::payment_id_for(p, NAME, "payment")?;
        let url = format!(
            "{}/v1/payments/{payment}/refunds/{provider_refund_id}",
            self.base
        );
        let r: wire::Refund = self.call(self.http.get(url)).await?;
        Ok(RefundState::of(&r.status))
    }

    async fn refund(
        &self,
        p: &PaymentRef<'_>,
        req: &RefundRequest<'_>,
    ) -> Result<Refund, ProviderError> {
        let id = super::payment_id_for(p, NAME, "payment")?;
        let req = self
            .http
            .post(format!("{}/v1/payments/{id}/refund", self.base))
            .header("X-Refund-Idempotency", refund_key(req.idempotency_key))
            .json(&json!({
                "amount": razorpay_amount(req.currency, req.amount_minor)?,
                "notes": { "refund_id": req.refund_id, "payment_id": req.payment_id },
            }));
        let r: wire::Refund = self.call(req).await?;
        Ok(Refund {
            id: r.id,
            amount_minor: r.amount,
            status: r.status,
        })
    }
}

/// Where a shop page loads Checkout.js from: Razorpay's own
/// (<https://razorpay.com/docs/payments/payment-gateway/web-integration/standard/>) with
/// Razorpay's API, else the sandbox's stand-in beside the API base it doubles.
pub fn checkout_script(api_base: &str) -> String {
    if api_base.trim_end_matches('/') == "https://api.razorpay.com" {
        "https://checkout.razorpay.com/v1/checkout.js".to_owned()
    } else {
        format!(
            "{}/sandbox/razorpay/checkout.js",
            api_base.trim_end_matches('/')
        )
    }
}

/// Whether Razorpay takes `key` as an `X-Refund-Idempotency`: at least 10 characters, each a
/// letter, a digit, `-` or `_` (razorpay.com/docs/api/refunds/normal-refunds-idempotent).
pub fn refund_key_ok(key: &str) -> bool {
    key.len() >= 10
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Our refund idempotency key in Razorpay's charset: every other character becomes `-`
/// (`fulfilld-refund:rf_…` → `fulfilld-refund-rf_…`), so the key stays one per refund and
/// the same on every retry. Stripe and PayPal take the key as it is.
fn refund_key(key: &str) -> String {
    let mut k: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while k.len() < 10 {
        k.push('_');
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_js_comes_from_razorpay_with_razorpays_api() {
        assert_eq!(
            checkout_script("https://api.razorpay.com/"),
            "https://checkout.razorpay.com/v1/checkout.js"
        );
        assert_eq!(
            checkout_script("http://127.0.0.1:8099"),
            "http://127.0.0.1:8099/sandbox/razorpay/checkout.js"
        );
    }

    #[test]
    fn refund_keys_are_in_razorpays_charset() {
        let k = refund_key("fulfilld-refund:rf_01JX5Q");
        assert_eq!(k, "fulfilld-refund-rf_01JX5Q");
        assert!(refund_key_ok(&k));
        assert!(!refund_key_ok("fulfilld-refund:rf_01JX5Q"));
        assert!(!refund_key_ok("short-key"));
        assert!(refund_key_ok(&refund_key("x")));
        assert!(refund_key_ok(&refund_key("ключ:é/ü")));
    }

    #[test]
    fn a_payment_without_created_at_is_still_read() {
        let body = serde_json::json!({
            "entity": "event", "account_id": "acc_1", "event": "payment.captured",
            "contains": ["payment"],
            "payload": {"payment": {"entity": {
                "id": "pay_1", "entity": "payment", "amount": 50000, "currency": "INR",
                "status": "captured", "order_id": "order_1", "method": "upi",
                "captured": true, "notes": []
            }}}
        });
        let ev = normalize("evt_1", body.to_string().as_bytes()).expect("read without created_at");
        assert!(matches!(ev.change, PaymentChange::Paid { .. }), "{ev:?}");
        assert_eq!(ev.provider_order_id.as_deref(), Some("order_1"));
    }

    #[test]
    fn signatures_round_trip_and_refuse_tampering() {
        let body = br#"{"entity":"event"}"#;
        let sig = sign_webhook("whsec", body);
        assert!(verify_webhook("whsec", body, &sig));
        assert!(!verify_webhook("other", body, &sig));
        assert!(!verify_webhook("whsec", br#"{"entity":"evil"}"#, &sig));
        assert!(!verify_webhook("whsec", body, "zz"));
        let ps = sign_payment("secret", "order_1", "pay_1");
        assert!(verify_payment("secret", "order_1", "pay_1", &ps));
        assert!(!verify_payment("secret", "order_2", "pay_1", &ps));
        assert!(!verify_payment("secret", "order_1", "pay_2", &ps));
    }
}
