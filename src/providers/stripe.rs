//! Stripe: webhook signatures, event normalization, and the API client (Checkout Sessions
//! and Refunds).
//!
//! Signature scheme (`Stripe-Signature: t=…,v1=…[,v1=…]`): HMAC-SHA256 over
//! `"{t}.{raw body}"`, hex encoded. The event is genuine if any `v1` matches under any of our
//! configured secrets (several during a secret rotation); it is refused if `t` is older than
//! the tolerance (replay protection). Comparison is constant-time (`Mac::verify_slice`).

pub mod wire;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use async_trait::async_trait;
use axum::http::HeaderMap;

use super::money::{self, Wire};
use super::{
    Checkout, CheckoutRequest, ClaimError, ClientClaim, PaymentChange, PaymentRef, PaymentState,
    Provider, ProviderError, ProviderEvent, RecentPayment, Refund, RefundNotice, RefundRequest,
    RefundState, WebhookError,
};
use crate::config;
use crate::domain::{Currency, Invalid};

const NAME: &str = "stripe";

/// How Stripe writes amounts (<https://docs.stripe.com/currencies#minor-units>): an integer
/// of the currency's minor unit, as ISO counts it, but for
/// - its zero-decimal currencies (#zero-decimal), MGA among them although ISO gives MGA two
///   digits;
/// - ISK, which Stripe writes with two digits whose last two must be 0 (#special-cases, and
///   "Currency ISK has become effectively zero-decimal and charged amounts must be evenly
///   divisible by 100");
/// - its three-decimal currencies (#three-decimal), whose last digit must be 0.
///
/// HUF and TWD are charged with two digits (only their payouts are whole, #special-cases).
/// Stripe takes every other ISO code it lists as two-decimal.
pub fn wire_money(c: &Currency) -> Option<Wire> {
    Some(match c.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => Wire {
            exponent: 0,
            step: 1,
        },
        "ISK" => Wire {
            exponent: 2,
            step: 100,
        },
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => Wire {
            exponent: 3,
            step: 10,
        },
        _ => Wire {
            exponent: 2,
            step: 1,
        },
    })
}

/// Stripe's amount of `currency` (its lower-case code) in our minor units.
fn minor(currency: &str, amount: i64) -> Result<i64, String> {
    money::from_provider(NAME, wire_money, currency, amount)
}

/// Our minor units of `currency` as Stripe writes them.
fn stripe_amount(currency: &str, minor: i64) -> Result<i64, ProviderError> {
    money::to_provider(NAME, wire_money, currency, minor).map_err(|message| {
        ProviderError::Unusable {
            provider: NAME,
            message,
        }
    })
}

/// Why a webhook was refused. The message is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("timestamp outside the tolerance window")]
    Stale,
    #[error("no signature matches the payload")]
    Mismatch,
}

/// Verifies `header` for `body` against `secrets`, at time `now` (Unix seconds).
pub fn verify<S: AsRef<str>>(
    header: Option<&str>,
    body: &[u8],
    secrets: impl IntoIterator<Item = S>,
    tolerance_secs: u64,
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t: Option<i64> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => t = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            // A v1 that is not hex cannot match; skip it like Stripe's libraries do.
            "v1" => sigs.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    // Both ways: stripe-node refuses only old timestamps, but a `t` far in the future would
    // keep a captured signature replayable for as long as it is ahead of the clock.
    if t.abs_diff(now) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    for secret in secrets {
        let mac = mac(secret.as_ref(), t, body);
        if sigs.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Stripe-Signature` header Stripe would send for `body` at time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// Reads a verified event body. Unknown event types normalize to `Ignored`; a body that is
/// not a Stripe event at all is an error.
pub fn normalize(body: &[u8]) -> Result<ProviderEvent, String> {
    let ev: wire::Event =
        serde_json::from_slice(body).map_err(|e| format!("not a Stripe event: {e}"))?;
    let session = || -> Result<wire::CheckoutSession, String> {
        serde_json::from_value(ev.data.object.clone())
            .map_err(|e| format!("{}: data.object is not a checkout.session: {e}", ev.kind))
    };
    let mut payment_ref = None;
    let mut about = |s: wire::CheckoutSession| {
        payment_ref = s.metadata.get("payment_id").cloned();
        Some(s.id)
    };
    let (provider_order_id, change) = match ev.kind.as_str() {
        "checkout.session.completed" => {
            let s = session()?;
            let pi = s.payment_intent.clone();
            let change = match s.payment_status.as_str() {
                "paid" | "no_payment_required" => PaymentChange::Paid {
                    provider_payment_id: pi,
                },
                _ => PaymentChange::AwaitingSettlement {
                    provider_payment_id: pi,
                },
            };
            (about(s), change)
        }
        "checkout.session.async_payment_succeeded" => {
            let s = session()?;
            let pi = s.payment_intent.clone();
            (
                about(s),
                PaymentChange::Paid {
                    provider_payment_id: pi,
                },
            )
        }
        "checkout.session.async_payment_failed" => (about(session()?), PaymentChange::Failed),
        "checkout.session.expired" => (about(session()?), PaymentChange::Expired),
        "refund.created" | "refund.updated" | "refund.failed" => {
            let r: wire::Refund = serde_json::from_value(ev.data.object.clone())
                .map_err(|e| format!("{}: data.object is not a refund: {e}", ev.kind))?;
            let amount_minor =
                minor(&r.currency, r.amount).map_err(|e| format!("{}: {e}", ev.kind))?;
            return Ok(ProviderEvent {
                provider: NAME,
                event_id: ev.id,
                event_type: ev.kind,
                provider_order_id: None,
                provider_payment_id: r.payment_intent,
                payment_ref: r.metadata.get("payment_id").cloned(),
                change: PaymentChange::Refunded(RefundNotice {
                    state: RefundState::of(r.status.as_deref().unwrap_or("pending")),
                    provider_refund_id: r.id,
                    amount_minor,
                    currency: Some(r.currency),
                    refund_ref: r.metadata.get("refund_id").cloned(),
                }),
            });
        }
        _ => (None, PaymentChange::Ignored),
    };
    Ok(ProviderEvent {
        provider: NAME,
        event_id: ev.id,
        event_type: ev.kind,
        provider_order_id,
        provider_payment_id: None,
        payment_ref,
        change,
    })
}

/// Stripe as a [`Provider`]: Checkout Sessions, `Stripe-Signature` webhooks, and the
/// success page's `session_id`.
#[derive(Debug, Clone)]
pub struct Stripe {
    client: Client,
    webhook_secrets: Vec<config::Secret>,
    tolerance_secs: u64,
}

impl Stripe {
    pub fn new(c: &config::Stripe, http: reqwest::Client) -> Stripe {
        Stripe {
            client: Client::new(&c.api_base, c.secret_key.expose(), http),
            webhook_secrets: c.webhook_secrets.clone(),
            tolerance_secs: c.webhook_tolerance_secs,
        }
    }
}

#[async_trait]
impl Provider for Stripe {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<ProviderEvent, WebhookError> {
        let header = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        let secrets = self.webhook_secrets.iter().map(config::Secret::expose);
        verify(header, body, secrets, self.tolerance_secs, now_s)
            .map_err(|e| WebhookError::Signature(e.to_string()))?;
        self.read_stored(headers, body)
            .map_err(WebhookError::Malformed)
    }

    fn read_stored(&self, _headers: &HeaderMap, body: &[u8]) -> Result<ProviderEvent, String> {
        normalize(body)
    }

    fn wire_money(&self, c: &Currency) -> Option<Wire> {
        wire_money(c)
    }

    fn client_claim(&self, payload: &serde_json::Value) -> Result<ClientClaim, ClaimError> {
        payload
            .get("session_id")
            .and_then(serde_json::Value::as_str)
            .filter(|s| s.starts_with("cs_") && s.len() <= 255)
            .map(|s| ClientClaim {
                provider_payment_id: None,
                provider_order_id: s.to_owned(),
                field: "payload.session_id",
            })
            .ok_or_else(|| {
                ClaimError::Invalid(Invalid::new(
                    "payload.session_id",
                    "required: the Checkout Session id (cs_…) the checkout returned",
                ))
            })
    }

    async fn create_checkout(&self, r: &CheckoutRequest) -> Result<Checkout, ProviderError> {
        self.client.create_checkout(r).await
    }

    async fn payment_state(&self, p: &PaymentRef<'_>) -> Result<PaymentState, ProviderError> {
        self.client.payment_state(p.provider_order_id).await
    }

    async fn recent_payments(&self, since_s: i64) -> Result<Vec<RecentPayment>, ProviderError> {
        self.client.recent_sessions(since_s).await
    }

    async fn missed_events(
        &self,
        since_s: i64,
    ) -> Result<Vec<(ProviderEvent, Vec<u8>)>, ProviderError> {
        let listed = self.client.missed_events(since_s).await?;
        Ok(super::read_events(NAME, listed, normalize))
    }

    /// `GET /v1/refunds/{id}` (<https://docs.stripe.com/api/refunds/retrieve>).
    async fn refund_state(
        &self,
        _p: &PaymentRef<'_>,
        provider_refund_id: &str,
    ) -> Result<RefundState, ProviderError> {
        let req = self.client.http.get(format!(
            "{}/v1/refunds/{provider_refund_id}",
            self.client.base
        ));
        let r: wire::Refund = self.client.call(req).await?;
        Ok(RefundState::of(r.status.as_deref().unwrap_or("pending")))
    }

    async fn refund(
        &self,
        p: &PaymentRef<'_>,
        req: &RefundRequest<'_>,
    ) -> Result<Refund, ProviderError> {
        let pi = super::payment_id_for(p, NAME, "payment intent")?;
        let r = self.client.refund(pi, req).await?;
        Ok(Refund {
            amount_minor: minor(&r.currency, r.amount).map_err(|message| {
                ProviderError::Decode {
                    provider: NAME,
                    message,
                }
            })?,
            id: r.id,
            status: r.status.unwrap_or_default(),
        })
    }
}

/// The Stripe API client. Every POST carries an idempotency key derived from our own ids,
/// so a retry after a timeout cannot create a second session or a second refund.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    secret_key: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("stripe::Client")
            .field("base", &self.base)
            .finish()
    }
}

impl Client {
    pub fn new(base: &str, secret_key: &str, http: reqwest::Client) -> Client {
        Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        let req = req
            .bearer_auth(&self.secret_key)
            .header("Stripe-Version", "2024-06-20");
        super::send_json(NAME, req, |body| {
            serde_json::from_slice::<wire::ErrorEnvelope>(body)
                .ok()
                .map(|e| e.error.message)
        })
        .await
    }

    /// `POST /v1/checkout/sessions` (mode=payment, inline prices), ending with the
    /// reservation (see [`session_expiry`]).
    pub async fn create_checkout(&self, r: &CheckoutRequest) -> Result<Checkout, ProviderError> {
        let mut form: Vec<(String, String)> = vec![
            ("mode".into(), "payment".into()),
            ("success_url".into(), success_url(&r.success_url)),
            ("cancel_url".into(), r.cancel_url.clone()),
            ("client_reference_id".into(), r.order_id.clone()),
            ("customer_email".into(), r.customer_email.clone()),
            ("metadata[order_id]".into(), r.order_id.clone()),
            ("metadata[payment_id]".into(), r.payment_id.clone()),
            (
                "expires_at".into(),
                session_expiry(r.reserved_until_s, crate::clock::now_s()).to_string(),
            ),
        ];
        let currency = r.currency.to_ascii_lowercase();
        for (i, l) in r.lines.iter().enumerate() {
            let p = format!("line_items[{i}]");
            form.push((format!("{p}[quantity]"), l.qty.to_string()));
            form.push((format!("{p}[price_data][currency]"), currency.clone()));
            form.push((
                format!("{p}[price_data][unit_amount]"),
                stripe_amount(&r.currency, l.unit_amount_minor)?.to_string(),
            ));
            form.push((
                format!("{p}[price_data][product_data][name]"),
                l.name.clone(),
            ));
        }
        let req = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.base))
            .header(
                "Idempotency-Key",
                format!("fulfilld-checkout:{}", r.payment_id),
            )
            .form(&form);
        let s: wire::CheckoutSession = self.call(req).await?;
        let url = s.url.clone().ok_or_else(|| ProviderError::Decode {
            provider: NAME,
            message: format!("session {} has no url", s.id),
        })?;
        let amount_minor = session_amount(&s)?;
        Ok(Checkout {
            provider_order_id: s.id,
            url: Some(url),
            amount_minor,
        })
    }

    /// `GET /v1/checkout/sessions/{id}`: the session's own record of what was paid.
    pub async fn payment_state(&self, session_id: &str) -> Result<PaymentState, ProviderError> {
        let req = self
            .http
            .get(format!("{}/v1/checkout/sessions/{session_id}", self.base));
        let s: wire::CheckoutSession = self.call(req).await?;
        session_state(s)
    }

    /// `GET /v1/checkout/sessions?created[gte]=…`, newest first, page by page.
    pub async fn recent_sessions(&self, since_s: i64) -> Result<Vec<RecentPayment>, ProviderError> {
        let sessions: Vec<wire::CheckoutSession> = self
            .list_all(
                "/v1/checkout/sessions",
                since_s,
                &[],
                |s: &wire::CheckoutSession| s.id.clone(),
            )
            .await?;
        sessions
            .into_iter()
            .map(|s| {
                Ok(RecentPayment {
                    returned: false,
                    provider_order_id: Some(s.id.clone()),
                    payment_ref: s.metadata.get("payment_id").cloned(),
                    created_s: s.created,
                    state: session_state(s)?,
                })
            })
            .collect()
    }

    /// `GET /v1/events?delivery_success=false&created[gte]=…`: the events no webhook
    /// delivery of succeeded (Stripe keeps them 30 days), as raw JSON objects.
    pub async fn missed_events(
        &self,
        since_s: i64,
    ) -> Result<Vec<serde_json::Value>, ProviderError> {
        self.list_all(
            "/v1/events",
            since_s,
            &[("delivery_success", "false")],
            |v: &serde_json::Value| v["id"].as_str().unwrap_or_default().to_owned(),
        )
        .await
    }

    /// Every page of a Stripe list created since `since_s`, up to [`super::RECENT_LIMIT`]
    /// items.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        since_s: i64,
        filters: &[(&str, &str)],
        id: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q = vec![
                ("created[gte]".to_owned(), since_s.to_string()),
                ("limit".to_owned(), "100".to_owned()),
            ];
            q.extend(filters.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            if let Some(a) = &after {
                q.push(("starting_after".to_owned(), a.clone()));
            }
            let req = self.http.get(format!("{}{path}", self.base)).query(&q);
            let page: wire::List<T> = self.call(req).await?;
            after = page.data.last().map(&id).filter(|a| !a.is_empty());
            out.extend(page.data);
            if !page.has_more || after.is_none() || out.len() >= super::RECENT_LIMIT {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/refunds` on the payment intent, with our ids in `metadata`.
    pub async fn refund(
        &self,
        payment_intent: &str,
        r: &RefundRequest<'_>,
    ) -> Result<wire::Refund, ProviderError> {
        let amount = stripe_amount(r.currency, r.amount_minor)?.to_string();
        let form = [
            ("payment_intent", payment_intent),
            ("amount", amount.as_str()),
            ("reason", "requested_by_customer"),
            ("metadata[refund_id]", r.refund_id),
            ("metadata[payment_id]", r.payment_id),
        ];
        let req = self
            .http
            .post(format!("{}/v1/refunds", self.base))
            .header("Idempotency-Key", r.idempotency_key)
            .form(&form);
        self.call(req).await
    }
}

/// A session's total in our minor units (0 before Stripe has computed one).
fn session_amount(s: &wire::CheckoutSession) -> Result<i64, ProviderError> {
    match (s.amount_total, &s.currency) {
        (Some(amount), Some(c)) => minor(c, amount).map_err(|message| ProviderError::Decode {
            provider: NAME,
            message: format!("session {}: {message}", s.id),
        }),
        _ => Ok(0),
    }
}

/// What a Checkout Session says about our payment.
fn session_state(s: wire::CheckoutSession) -> Result<PaymentState, ProviderError> {
    let amount_minor = session_amount(&s)?;
    let status = s.status.clone().unwrap_or_default();
    let pi = s.payment_intent.clone();
    let change = match (status.as_str(), s.payment_status.as_str()) {
        ("complete", "paid" | "no_payment_required") => PaymentChange::Paid {
            provider_payment_id: pi,
        },
        ("complete", _) => PaymentChange::AwaitingSettlement {
            provider_payment_id: pi,
        },
        ("expired", _) => PaymentChange::Expired,
        _ => PaymentChange::Ignored,
    };
    Ok(PaymentState {
        change,
        paid: status == "complete" && s.payment_status == "paid",
        state: format!("status={status}, payment_status={}", s.payment_status),
        amount_minor,
        currency: s.currency.unwrap_or_default(),
        provider_payment_id: s.payment_intent,
    })
}

/// The shop's success URL with the Checkout Session's id added, which Stripe fills in when
/// it sends the buyer back (`{CHECKOUT_SESSION_ID}`,
/// <https://docs.stripe.com/payments/checkout/custom-success-page>): a browser that lost the
/// order's buyer token proves the order with it. A URL that names the template already is
/// left as it is.
pub fn success_url(url: &str) -> String {
    const TEMPLATE: &str = "{CHECKOUT_SESSION_ID}";
    if url.contains(TEMPLATE) {
        return url.to_owned();
    }
    // Not through a URL encoder: Stripe substitutes only the braces as written.
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}session_id={TEMPLATE}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// A Checkout Session's `expires_at` for a reservation that ends at `reserved_until_s`:
/// that moment, kept within what Stripe takes — "anywhere from 30 minutes to 24 hours after
/// Checkout Session creation" (API reference, Create a Checkout Session, `expires_at`; the
/// same words in stripe-node's `CheckoutSessionCreateParams`). Stripe's default is 24 h,
/// which would outlive a 30-minute reservation; a reservation shorter than 30 minutes
/// leaves the session open past it, and a late payment is refunded as sold out.
pub fn session_expiry(reserved_until_s: i64, now_s: i64) -> i64 {
    // A few seconds' margin over the minimum: Stripe measures from its own clock.
    reserved_until_s.clamp(now_s + 30 * 60 + 10, now_s + 24 * 3600 - 10)
}

#[cfg(test)]
mod tests;
