//! `Idempotency-Key` on every `POST /api/…`, with Stripe's semantics (store side:
//! [`crate::store::idempotency`]): the same key and the same request → the first response
//! again, status and body, marked `Idempotent-Replayed: true`; the same key with another
//! request (method, path or body) → 422; while the first request still runs → 409.
//!
//! Keys belong to a proven caller, checked before anything is stored: an admin (a valid
//! `Authorization` bearer token), a buyer (by the `X-Buyer-Token` it sends), or — with
//! neither — the request itself, so an anonymous caller's key covers only that exact
//! request: nobody can replay another's answer without sending the very same request, or
//! squat a key so that someone else's request is refused. A request whose `Authorization`
//! is not a valid admin token is run without a key (the admin routes answer it 401), and
//! nothing is kept for it. Answers that say "try again" — 409, 429, 5xx — or that refuse
//! the caller's credentials (401, 403) are not kept.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::Engine;
use crate::domain::Invalid;
use crate::store::idempotency::Begin;

pub async fn layer(State(e): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str().map(str::trim) {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return ApiError::from(Invalid::new(
                "Idempotency-Key",
                "must be 1-255 visible ASCII characters",
            ))
            .into_response();
        }
    };
    let admin = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(_) => match crate::admin::authorize(&e, req.headers()) {
            Ok(caller) => Some(caller.name),
            // Not a credential we know: no key is taken, nothing is stored.
            Err(_) => return next.run(req).await,
        },
    };
    let buyer = req
        .headers()
        .get("x-buyer-token")
        .map(|t| hex::encode(&Sha256::digest(t.as_bytes())[..16]));
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, e.config.http.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is larger than {} bytes",
                    e.config.http.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update(b"\n");
    h.update(parts.uri.to_string());
    h.update(b"\n");
    h.update(&bytes);
    let fingerprint = hex::encode(h.finalize());
    // The scope is part of the stored key: changing it forgets keys already taken (kept
    // `api.idempotency_ttl_secs` at most), never mixes two callers'.
    // Each admin token its own: one admin never gets another's answer (a secret it holds).
    let scope = if let Some(name) = admin {
        format!("admin:{name}")
    } else if let Some(buyer) = buyer {
        format!("buyer:{buyer}")
    } else {
        format!("request:{}", &fingerprint[..32])
    };
    let api = &e.config.api;
    let begun = e
        .store
        .idempotency_begin(
            &scope,
            &key,
            &fingerprint,
            api.idempotency_lock_ms as i64,
            api.idempotency_ttl_secs.saturating_mul(1000) as i64,
        )
        .await;
    match begun {
        Err(err) => return ApiError::from(err).into_response(),
        Ok(Begin::Run) => {}
        Ok(Begin::Replay {
            status,
            body,
            content_type,
        }) => return replay(status, body, content_type),
        Ok(Begin::Mismatch) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key for a new request",
            )
            .into_response();
        }
        Ok(Begin::InFlight) => {
            return ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .into_response();
        }
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = resp.status();
    let not_kept = status.is_server_error()
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN;
    if not_kept {
        if let Err(err) = e.store.idempotency_release(&scope, &key).await {
            tracing::warn!(error = %err, "could not release an idempotency key; it unlocks when its lock expires");
        }
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("reading a response body").into_response();
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Err(err) = e
        .store
        .idempotency_complete(&scope, &key, status.as_u16(), &bytes, content_type)
        .await
    {
        // The effect is committed; only the replay copy is missing. The lock expires and a
        // retry runs the handler again, which finds the effect done.
        tracing::warn!(error = %err, "could not keep an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(status: u16, body: Vec<u8>, content_type: Option<String>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}
