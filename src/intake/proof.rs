//! What proves a buyer's claim to an order, checked in one place for every buyer endpoint.
//!
//! - The buyer token: `POST /api/orders` answers it once to whoever created the order (as
//!   Stripe answers a PaymentIntent's `client_secret`); only its hash is kept. It is sent as
//!   `X-Buyer-Token`, or as `buyer_token` in a body.
//! - The provider's redirect proof, for a browser that lost the token (another tab's storage
//!   cleared, an in-app browser handing over to the system one). Opening a checkout needs the
//!   buyer token, so the provider's checkout id only ever reaches the token's holder and the
//!   provider, which then hands it back to the buyer's browser:
//!   - Stripe: the Checkout Session id in the success URL (`session_id={CHECKOUT_SESSION_ID}`,
//!     <https://docs.stripe.com/payments/checkout/custom-success-page>);
//!   - Razorpay: `razorpay_order_id`, `razorpay_payment_id` and `razorpay_signature`, the
//!     signature checked with our key secret
//!     (<https://razorpay.com/docs/payments/server-integration/nodejs/integration-steps/#verify-payment-signature>);
//!   - PayPal: the approved order's id (`orderID` from `onApprove`, or `token` in the
//!     return URL, <https://developer.paypal.com/docs/api/orders/v2/#orders_create>).
//!
//! A read (`GET /api/orders/{id}` and its documents) carries the buyer token as
//! `X-Buyer-Token`, or the redirect proof in its query: `provider` names the provider and every
//! other parameter is the payload, as the provider put it in the success URL
//! (`?provider=stripe&session_id=cs_…`, `?provider=paypal&orderID=…`,
//! `?provider=razorpay&razorpay_order_id=…&razorpay_payment_id=…&razorpay_signature=…`).
//!
//! A proof that does not match answers the same whether the order exists or not.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::ApiError;
use crate::Engine;
use crate::domain::{Invalid, OrderId, token_hash};
use crate::providers::ClaimError;

/// The header a buyer proves an order with.
pub const BUYER_TOKEN_HEADER: &str = "x-buyer-token";

/// A buyer's proof of an order, as a request carried it.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    BuyerToken(&'a str),
    /// What the provider's checkout handed the buyer's browser (the verify call's payload).
    Redirect {
        provider: &'a str,
        payload: &'a Value,
    },
}

/// The `X-Buyer-Token` a request carries, if any.
pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(BUYER_TOKEN_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim())
}

/// The proof a read carries, owned (see the module's note).
#[derive(Debug)]
pub enum Carried {
    None,
    BuyerToken(String),
    Redirect { provider: String, payload: Value },
}

impl Carried {
    /// What `headers` and the raw `query` carry. A query names a proof only with `provider`,
    /// so other parameters (a cache buster) are no proof and no error; sending the token and a
    /// redirect proof at once is an error, not a guess at which one counts.
    pub fn from_request(headers: &HeaderMap, query: Option<&str>) -> Result<Carried, ApiError> {
        let mut provider = None;
        let mut payload = serde_json::Map::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k == "provider" {
                if provider.replace(v.into_owned()).is_some() {
                    return Err(Invalid::new("provider", "named twice").into());
                }
            } else if payload.len() < 8 {
                payload.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        match (header_token(headers), provider) {
            (Some(_), Some(_)) => Err(Invalid::new(
                "provider",
                "send either X-Buyer-Token or a provider's proof in the query, not both",
            )
            .into()),
            (Some(token), None) => Ok(Carried::BuyerToken(token.to_owned())),
            (None, Some(provider)) => Ok(Carried::Redirect {
                provider,
                payload: Value::Object(payload),
            }),
            (None, None) => Ok(Carried::None),
        }
    }

    pub fn proof(&self) -> Option<Proof<'_>> {
        match self {
            Carried::None => None,
            Carried::BuyerToken(t) => Some(Proof::BuyerToken(t)),
            Carried::Redirect { provider, payload } => Some(Proof::Redirect { provider, payload }),
        }
    }
}

/// Whether `proof` proves `order`; a proof that does not is [`wrong_proof`].
pub async fn check(e: &Engine, order: &OrderId, proof: Proof<'_>) -> Result<(), ApiError> {
    let proven = match proof {
        Proof::BuyerToken(token) => {
            e.store
                .buyer_token_matches(order.as_str(), &token_hash(token.trim()))
                .await?
        }
        Proof::Redirect { provider, payload } => {
            let provider = e.providers.get("provider", provider)?;
            let claim = match provider.client_claim(payload) {
                Ok(claim) => claim,
                Err(ClaimError::Invalid(i)) => return Err(i.into()),
                Err(ClaimError::Signature(_)) => return Err(wrong_proof()),
            };
            e.store
                .payment_by_provider_order(provider.name(), &claim.provider_order_id)
                .await?
                .is_some_and(|p| p.order_id == order.as_str())
        }
    };
    if proven { Ok(()) } else { Err(wrong_proof()) }
}

/// [`check`] of the buyer token in `X-Buyer-Token`, which must be there.
pub async fn require_header(
    e: &Engine,
    headers: &HeaderMap,
    order: &OrderId,
) -> Result<(), ApiError> {
    let token = header_token(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "buyer_token_required",
            "send X-Buyer-Token: the buyer_token POST /api/orders answered for this order",
        )
    })?;
    check(e, order, Proof::BuyerToken(token)).await
}

/// The answer to a proof that does not match: the same whether the order exists or not.
pub fn wrong_proof() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "invalid_proof",
        "that proof is not this order's: send the buyer_token POST /api/orders answered, or what \
         the provider's checkout handed back (on another device, sign in with \
         POST /api/entitlements/sign-in)",
    )
}

/// The proof in an activation body: exactly one of `buyer_token`, or `provider` with
/// `payload`.
pub fn from_body<'a>(
    buyer_token: Option<&'a str>,
    provider: Option<&'a str>,
    payload: Option<&'a Value>,
) -> Result<Proof<'a>, ApiError> {
    match (buyer_token, provider, payload) {
        (Some(t), None, None) => Ok(Proof::BuyerToken(t)),
        (None, Some(provider), Some(payload)) => Ok(Proof::Redirect { provider, payload }),
        (None, None, None) => Err(Invalid::new(
            "buyer_token",
            "required: the order's buyer_token, or provider and payload from the provider's checkout",
        )
        .into()),
        _ => Err(Invalid::new(
            "buyer_token",
            "send either buyer_token, or provider with payload, not both or a half",
        )
        .into()),
    }
}
