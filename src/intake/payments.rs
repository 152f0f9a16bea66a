//! `POST /api/payments/create-order`: open a provider checkout for an order, reserving its
//! stock; the order's buyer token must come with it (`X-Buyer-Token`). Calling it again for
//! an order with an open checkout returns the same checkout.
//!
//! `POST /api/payments/verify`: the browser's way in. The success page hands over what the
//! provider's checkout gave it; we never trust that payload's claims, but ask the provider's
//! API, and apply the same idempotent transition a webhook would. Whichever of webhook and
//! verify comes first wins; the other changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::Engine;
use crate::domain::PaymentStatus;
use crate::domain::{Invalid, OrderId};
use crate::providers::{CheckoutLine, CheckoutRequest, ClaimError, Provider, ProviderError};
use crate::store::payments::{BeginCheckout, PaymentRow};

#[derive(Debug, Deserialize)]
struct CreatePayment {
    order_id: String,
    provider: String,
}

async fn create_order(
    State(e): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Result<Json<CreatePayment>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let order_id = OrderId::parse("order_id", &b.order_id)?;
    let provider = e.providers.get("provider", &b.provider)?;
    // Only the order's buyer opens its checkout: the provider's checkout id is then a
    // redirect proof of the order (see `proof`), and nobody else reserves its stock.
    super::proof::require_header(&e, &headers, &order_id).await?;
    let ttl_ms = e.config.checkout.reservation_ttl_secs as i64 * 1000;
    let (payment_id, order, items) = match e
        .store
        .begin_checkout(order_id.as_str(), &b.provider, ttl_ms)
        .await?
    {
        BeginCheckout::Started {
            payment_id,
            order,
            items,
        } => (payment_id, order, items),
        BeginCheckout::Existing(p) if p.provider == provider.name() => {
            return Ok((StatusCode::OK, Json(checkout_json(&p, provider))));
        }
        BeginCheckout::Existing(p) => {
            return Err(ApiError::conflict(
                "checkout_open",
                format!(
                    "the order already has an open {} checkout ({}); pay that one, or wait for it to expire",
                    p.provider, p.provider_order_id
                ),
            ));
        }
        BeginCheckout::NotFound => return Err(ApiError::not_found("order")),
        BeginCheckout::InProgress => {
            return Err(ApiError::conflict(
                "checkout_in_progress",
                "a checkout for this order is being created; retry in a moment",
            ));
        }
        BeginCheckout::OutOfStock { sku } => {
            return Err(ApiError::conflict(
                "out_of_stock",
                format!("not enough stock of {sku:?} to reserve for this order"),
            ));
        }
        BeginCheckout::NotPayable { status } => {
            return Err(ApiError::conflict(
                "order_not_payable",
                format!("the order is {status}; only a created order can be paid"),
            ));
        }
    };
    let fill = |t: &str| t.replace("{order_id}", &order.id);
    let req = CheckoutRequest {
        order_id: order.id.clone(),
        payment_id: payment_id.clone(),
        customer_email: order.customer_email.clone(),
        currency: order.currency.clone(),
        lines: items
            .iter()
            .map(|i| CheckoutLine {
                name: i.name.clone(),
                qty: i.qty,
                unit_amount_minor: i.unit_price_minor,
            })
            .collect(),
        success_url: fill(&e.config.checkout.success_url),
        cancel_url: fill(&e.config.checkout.cancel_url),
        // Computed once: a retried request must carry the same parameters.
        reserved_until_s: (crate::clock::now_ms() + ttl_ms) / 1000,
    };
    let checkout = match provider.create_checkout(&req).await {
        Ok(c) => c,
        // Refused before any call to the provider, in our own words (a currency or an
        // amount the provider does not take): the buyer may pay another way.
        Err(ProviderError::Unusable { message, .. }) => {
            e.store.checkout_failed(&payment_id, &order.id).await?;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_chargeable",
                message,
            ));
        }
        Err(err) => {
            tracing::warn!(order_id = %order.id, error = %err, "checkout creation failed");
            e.store.checkout_failed(&payment_id, &order.id).await?;
            return Err(provider_error(
                "the payment provider refused or did not answer; try again",
            ));
        }
    };
    if checkout.amount_minor != order.total_minor {
        tracing::warn!(order_id = %order.id, provider = checkout.amount_minor, ours = order.total_minor,
            "provider computed a different total; confirm_capture will refuse to fulfil");
    }
    let p = e
        .store
        .checkout_created(
            &payment_id,
            &checkout.provider_order_id,
            checkout.url.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(checkout_json(&p, provider))))
}

/// What the shop's frontend needs to send the buyer to the provider: a hosted page's URL,
/// or (Razorpay) the parameters for the provider's own checkout script.
fn checkout_json(p: &PaymentRow, provider: &dyn Provider) -> Value {
    json!({
        "provider": p.provider,
        "provider_order_id": p.provider_order_id,
        "checkout_url": p.checkout_url,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "client": provider.checkout_params(),
    })
}

#[derive(Debug, Deserialize)]
struct VerifyPayment {
    order_id: String,
    provider: String,
    payload: Value,
}

async fn verify(
    State(e): State<Arc<Engine>>,
    body: Result<Json<VerifyPayment>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body?;
    let order_id = OrderId::parse("order_id", &b.order_id)?;
    let provider = e.providers.get("provider", &b.provider)?;
    let claim = provider.client_claim(&b.payload).map_err(|err| match err {
        ClaimError::Invalid(i) => ApiError::from(i),
        ClaimError::Signature(m) => {
            tracing::warn!(order_id = %order_id, provider = provider.name(), "verify: bad signature");
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", m)
        }
    })?;
    // The checkout must be one this order opened: a payload naming someone else's checkout
    // changes nothing.
    let payment = e
        .store
        .payment_by_provider_order(provider.name(), &claim.provider_order_id)
        .await?
        .filter(|p| p.order_id == order_id.as_str())
        .ok_or_else(|| Invalid::new(claim.field, "no checkout of this order has that id"))?;
    // A settled payment needs no provider call; an open one is asked about at most once per
    // `checkout.verify_min_interval_ms`, however fast the success page polls.
    let settled = payment.status.captured();
    let min_interval = Duration::from_millis(e.config.checkout.verify_min_interval_ms);
    let outcome = if settled {
        format!("no change: payment is {}", payment.status)
    } else if !e.verify_reads.may_read(&payment.id, min_interval) {
        format!("no change: {} was asked a moment ago", payment.provider)
    } else {
        let mut at = payment.provider_ref();
        // A payment id the provider's own signature vouches for, when we have none yet.
        at.provider_payment_id = at
            .provider_payment_id
            .or(claim.provider_payment_id.as_deref());
        let state = provider.payment_state(&at).await.map_err(|err| {
            tracing::warn!(order_id = %order_id, error = %err, "verify: provider lookup failed");
            provider_error(
                "the payment provider did not answer; try again, or keep polling the order",
            )
        })?;
        let (outcome, wake) =
            crate::core::payments::apply_change(&e.store, &payment.id, &state.change).await?;
        e.queue.wake(&wake);
        outcome
    };
    let now = e
        .store
        .get_payment(&payment.id)
        .await?
        .ok_or_else(|| ApiError::internal("payment vanished"))?;
    let order = e
        .store
        .get_order(order_id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    // The buyer's page needs three words, not the payment's life.
    let status = if now.status.captured() {
        "paid"
    } else if now.status.gone() || now.status == PaymentStatus::Error {
        "failed"
    } else {
        "pending"
    };
    tracing::info!(order_id = %order_id, %outcome, "payment verified by the browser");
    Ok(Json(json!({
        "order_id": order.id,
        "provider": payment.provider,
        "status": status,
        "order_status": order.status,
        "outcome": outcome,
    })))
}

/// When each open payment was last read from its provider by the verify call (this
/// process only: with several intake processes each keeps its own, which bounds the calls
/// per process).
#[derive(Debug, Default)]
pub struct VerifyReads(std::sync::Mutex<HashMap<String, Instant>>);

impl VerifyReads {
    /// Whether the payment may be read now (and notes that it is).
    fn may_read(&self, payment_id: &str, min_interval: Duration) -> bool {
        let now = Instant::now();
        let mut reads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if reads
            .get(payment_id)
            .is_some_and(|last| now.duration_since(*last) < min_interval)
        {
            return false;
        }
        if reads.len() >= 100_000 {
            reads.retain(|_, last| now.duration_since(*last) < min_interval);
        }
        reads.insert(payment_id.to_owned(), now);
        true
    }
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/payments/create-order", post(create_order))
        .route("/api/payments/verify", post(verify))
}

/// A 502 for a provider's failure, in generic words: what the provider said (its URLs and
/// ids) goes to the log only, and the buyer gets the request id that finds it there.
fn provider_error(what: &str) -> ApiError {
    let request = crate::store::CAUSE
        .try_with(Clone::clone)
        .ok()
        .flatten()
        .unwrap_or_default();
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "provider_error",
        format!("{what} (request {request}: the details are in the engine's log)"),
    )
}
