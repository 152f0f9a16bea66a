//! Admin API (bearer token): the catalogue for now.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::Engine;
use crate::domain::{Currency, Invalid, Sku};
use crate::store::catalogue::SkuRow;

/// Checks `Authorization: Bearer <admin.token>`; with no token configured the admin API is
/// off (403), never open. The comparison hashes both sides first so it takes the same time
/// whatever the input (no length or prefix leak).
pub fn authorize(engine: &Engine, headers: &HeaderMap) -> Result<(), ApiError> {
    if engine.admin_token.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_off",
            "the admin API is off on this process: no admin token is configured \
             (FULFILLD__ADMIN__TOKEN)",
        ));
    }
    if !bearer_is(headers, &engine.admin_token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin endpoints need Authorization: Bearer <admin token>",
        ));
    }
    Ok(())
}

/// Whether `Authorization: Bearer …` carries `expected` (never an empty one). Both sides are
/// hashed first, so the comparison takes the same time whatever is sent.
pub(super) fn bearer_is(headers: &HeaderMap, expected: &str) -> bool {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    !given.is_empty() && !expected.is_empty() && diff == 0
}

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
    headers: HeaderMap,
    Path(sku): Path<String>,
    body: Result<Json<PutSku>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SkuRow>, ApiError> {
    authorize(&e, &headers)?;
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
    Ok(Json(
        e.store
            .put_sku(&sku, name, b.price_minor, &currency, b.stock)
            .await?,
    ))
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/api/admin/skus/{sku}", put(put_sku))
}
