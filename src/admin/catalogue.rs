//! The catalogue: `PUT /api/admin/skus/{sku}` sets a SKU's name, price and stock.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use serde::Deserialize;

use super::Actor;
use crate::Engine;
use crate::api::{ApiError, Param};
use crate::domain::{Currency, Invalid, Sku};
use crate::store::catalogue::SkuRow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutSku {
    name: String,
    price_minor: i64,
    currency: String,
    stock: i64,
}

async fn put_sku(
    State(e): State<Arc<Engine>>,
    Actor(who): Actor,
    Param(sku): Param<String>,
    body: Result<Json<PutSku>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SkuRow>, ApiError> {
    let Json(b) = body?;
    let sku = Sku::parse("sku", &sku)?;
    let name = b.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Invalid::new("name", "must be 1-200 characters").into());
    }
    if b.price_minor < 0 {
        return Err(Invalid::new("price_minor", "must not be negative").into());
    }
    if !(0..=1_000_000_000).contains(&b.stock) {
        return Err(Invalid::new("stock", "must be between 0 and 1000000000").into());
    }
    let currency = Currency::parse("currency", &b.currency)?;
    chargeable(&e, &currency, b.price_minor)?;
    Ok(Json(
        e.store
            .put_sku(&sku, name, b.price_minor, &currency, b.stock, &who)
            .await?,
    ))
}

/// A price every enabled provider that takes `currency` can charge (Stripe takes ISK only
/// in whole krónur and MGA in whole ariary, PayPal HUF in whole forints, three-decimal
/// amounts end in 0 at Stripe and Razorpay: see each provider's `wire_money`), in a currency
/// at least one of them takes. A provider that does not take the currency refuses a checkout
/// in it (422 `not_chargeable`), not the price.
fn chargeable(e: &Engine, currency: &Currency, price_minor: i64) -> Result<(), ApiError> {
    let mut takers = 0;
    for p in e.providers.enabled() {
        let Some(wire) = p.wire_money(currency) else {
            continue;
        };
        takers += 1;
        wire.to_wire(p.name(), currency, price_minor)
            .map_err(|m| Invalid::new("price_minor", m))?;
    }
    if takers == 0 {
        return Err(Invalid::new(
            "currency",
            format!("no enabled payment provider takes {currency}"),
        )
        .into());
    }
    Ok(())
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/skus/{sku}", put(put_sku))
}
