//! Who is an admin: the tokens in force (`admin.token`, `admin.tokens`), each with a name
//! and a role. [`layer`] is the admin API's one gate — every route under it has a proven
//! [`Caller`] whose role allows the request — and handlers take the [`Actor`] it proved.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use std::collections::BTreeMap;

use crate::Engine;
use crate::api::ApiError;
use crate::config::{AdminRole, NamedToken};
use crate::domain::Invalid;

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
            v.push((name.clone(), t.role, digest(t.token.trimmed())));
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
/// enforced for every admin route by [`layer`].
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

/// The admin API's gate, on every admin route: the caller must prove an admin token (401,
/// or 403 when none is configured), a `read` token gets 403 for anything that changes state
/// or reads a secret, and an unusable `X-Fulfilld-Actor` is 422. The person it names is kept
/// for the audit rows the request writes, and the [`Caller`] for the handler ([`Actor`]).
pub async fn layer(
    State(e): State<Arc<Engine>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = match authorize(&e, req.headers()) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
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
    let said_by = match said_by(req.headers()) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    req.extensions_mut().insert(caller);
    crate::store::audit::SAID_BY
        .scope(said_by, next.run(req))
        .await
}

/// Who acts, as a handler behind [`layer`] takes it: the admin token's name, which the
/// audit log records.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        // Only a route mounted outside the gate has no caller: refuse rather than act
        // for nobody.
        parts
            .extensions
            .get::<Caller>()
            .map(|c| Actor(c.name.clone()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "admin endpoints need Authorization: Bearer <admin token>",
                )
            })
    }
}

/// Whether `Authorization: Bearer …` carries `expected` (never an empty one). Both sides are
/// hashed first, so the comparison takes the same time whatever is sent.
pub fn bearer_is(headers: &HeaderMap, expected: &str) -> bool {
    let given = bearer(headers);
    !given.is_empty() && !expected.is_empty() && same(&digest(given), &digest(expected))
}
