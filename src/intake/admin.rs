//! Admin API (bearer token): the catalogue for now.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use std::collections::BTreeMap;

use super::{ApiError, Param};
use crate::Engine;
use crate::config::{AdminRole, NamedToken};
use crate::domain::{Currency, Invalid, Sku};
use crate::store::catalogue::SkuRow;

/// The admin tokens in force, each kept as its SHA-256 with its name and role.
#[derive(Default)]
pub struct Admins(Vec<(String, AdminRole, [u8; 32])>);

impl std::fmt::Debug for Admins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, role, _)| (name, role)))
            .finish()
    }
}

/// An admin proven by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: who acted, in the audit log.
    pub name: String,
    pub role: AdminRole,
}

impl Admins {
    /// `single` (admin.token, may be empty) as `admin`, which may operate, and the named ones.
    pub fn new(single: &str, named: &BTreeMap<String, NamedToken>) -> Admins {
        let mut v = Vec::new();
        if !single.is_empty() {
            v.push(("admin".to_owned(), AdminRole::Operate, digest(single)));
        }
        for (name, t) in named {
            v.push((name.clone(), t.role, digest(t.token.trim())));
        }
        Admins(v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The admin whose token `given` is. Every token is compared, each in constant time, so
    /// the answer's timing tells nothing about which (or how much of one) matched.
    pub fn find(&self, given: &str) -> Option<Caller> {
        if given.is_empty() {
            return None;
        }
        let g = digest(given);
        let mut found = None;
        for (name, role, d) in &self.0 {
            if same(&g, d) {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether two digests are equal, in the same time wherever they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// Checks `Authorization: Bearer <an admin token>`: the admin it proves. With no token
/// configured the admin API is off (403), never open. What the token may do (its role) is
/// enforced for every route by [`roles`].
pub fn authorize(engine: &Engine, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if engine.admins.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_off",
            "the admin API is off on this process: no admin token is configured \
             (FULFILLD__ADMIN__TOKEN)",
        ));
    }
    engine.admins.find(bearer(headers)).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin endpoints need Authorization: Bearer <admin token>",
        )
    })
}

/// Who is acting: the admin token's name (checked). `X-Fulfilld-Actor`, when sent, must be
/// sensible; the person it names is recorded beside the name (see [`roles`]).
pub(super) fn actor(e: &Engine, headers: &HeaderMap) -> Result<String, ApiError> {
    let caller = authorize(e, headers)?;
    said_by(headers)?;
    Ok(caller.name)
}

/// The person `X-Fulfilld-Actor` names, if it is sent; 422 if it is not 1-100 visible
/// characters.
fn said_by(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("x-fulfilld-actor") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.trim().is_empty() && s.len() <= 100 => Ok(Some(s.trim().to_owned())),
        _ => Err(Invalid::new("X-Fulfilld-Actor", "must be 1-100 visible ASCII characters").into()),
    }
}

/// Whether a `read` token may make this request: reads, except an endpoint's secret.
fn reads(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::GET || method == axum::http::Method::HEAD)
        && !path.ends_with("/secret")
}

/// Every request with an admin token: a `read` token gets 403 for anything that changes
/// state or reads a secret; the person named in `X-Fulfilld-Actor` (an unusable one is
/// refused by the handlers, through [`actor`]) is kept for the audit rows the request
/// writes.
pub async fn roles(
    State(e): State<Arc<Engine>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(caller) = e.admins.find(bearer(req.headers())) else {
        return next.run(req).await;
    };
    if caller.role == AdminRole::Read && !reads(req.method(), req.uri().path()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            format!(
                "the admin token {:?} may read, not change things or read secrets",
                caller.name
            ),
        )
        .into_response();
    }
    let said_by = said_by(req.headers()).ok().flatten();
    crate::store::audit::SAID_BY
        .scope(said_by, next.run(req))
        .await
}

/// Whether `Authorization: Bearer …` carries `expected` (never an empty one). Both sides are
/// hashed first, so the comparison takes the same time whatever is sent.
pub(super) fn bearer_is(headers: &HeaderMap, expected: &str) -> bool {
    let given = bearer(headers);
    !given.is_empty() && !expected.is_empty() && same(&digest(given), &digest(expected))
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
    Param(sku): Param<String>,
    body: Result<Json<PutSku>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SkuRow>, ApiError> {
    let who = actor(&e, &headers)?;
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
    Router::new().route("/api/admin/skus/{sku}", put(put_sku))
}
