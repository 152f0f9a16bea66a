//! The intake: axum routes for provider webhooks, the shop's API and health, and the event
//! applier beside them. Thin by design: a webhook is verified, normalized, appended and
//! answered; `applier` applies it after the 200. No provider calls except creating a
//! checkout, no email, no stock work in a webhook's request path.
//!
//! Each resource file ends in `pub fn router()`; they are merged here, with the admin's
//! routes (`crate::admin`). `idempotency` wraps every `POST /api/…`; `openapi` documents
//! them all.

pub(crate) mod applier;
mod entitlements;
mod idempotency;
pub mod limits;
pub mod openapi;
mod orders;
mod payments;
mod proof;
mod shop;
pub(crate) mod webhooks;

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tracing::Instrument;

pub use crate::api::{ApiError, Param};
pub use payments::VerifyReads;

use crate::Engine;

pub fn router(engine: Arc<Engine>) -> Router {
    let limit = engine.config.http.max_body_bytes;
    Router::new()
        .merge(crate::admin::router(engine.clone()))
        .merge(orders::router())
        .merge(openapi::router())
        .merge(entitlements::router())
        .merge(shop::router())
        .merge(payments::router())
        .merge(webhooks::router())
        .merge(health())
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            idempotency::layer,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            limits::public,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            observed,
        ))
        .layer(cors(&engine.config.http.cors_origins))
        .with_state(engine)
}

/// CORS for the configured browser origins only (none: no CORS headers at all).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            // The buyer's proof: reading an order and opening its checkout from the shop's
            // own origin.
            header::HeaderName::from_static(proof::BUYER_TOKEN_HEADER),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static(REQUEST_ID),
        ])
        // The access cookie (`/api/entitlements/…`) goes with cross-origin calls.
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}

/// Every routed request: its request id — the `X-Request-Id` it came with (1-64 of
/// `A-Za-z0-9._-`), or a new one — on each of its log lines, on the response, and on the
/// events and steps it causes (`store::CAUSE`), whose runs log it in turn; and its
/// latency, by route template (never the raw path: its ids would make a series each).
async fn observed(
    State(e): State<Arc<Engine>>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    let id = match given {
        Some(v) => v.to_owned(),
        None => new_request_id(),
    };
    let method = request.method().as_str().to_owned();
    // At error level so that it is on whenever any line is: RUST_LOG=warn still ties each
    // warning to its request.
    let span = tracing::error_span!("request", request_id = %id, %method, route = route.as_str());
    // What this request causes — an event, a capture, an admin's retry — keeps its id.
    let mut response = crate::store::CAUSE
        .scope(Some(id.clone()), next.run(request).instrument(span))
        .await;
    e.metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            route: route.as_str().to_owned(),
            method,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

const REQUEST_ID: &str = "x-request-id";

/// `req_` and this process's random prefix, then a counter: unique across processes without
/// a random draw per request.
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use rand::Rng;
        hex::encode(rand::rng().random::<[u8; 6]>())
    });
    format!("req_{prefix}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `fulfilld work`'s whole HTTP surface: health only.
pub fn health_router(engine: Arc<Engine>) -> Router {
    health().with_state(engine)
}

/// `/healthz`: the process is up. `/readyz`: the store and the queue answer now (503 naming
/// what is down otherwise), so a load balancer stops sending work while a dependency is away.
fn health() -> Router<Arc<Engine>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// `/metrics`: this process's counters and timings, and the queue's state from the store
/// (see [`crate::metrics`]). A store that does not answer leaves the queue gauges as they
/// were at the last scrape.
async fn metrics(State(e): State<Arc<Engine>>, headers: axum::http::HeaderMap) -> Response {
    let token = &e.config.metrics.token;
    if !token.is_empty() && !crate::admin::bearer_is(&headers, token.expose()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs Authorization: Bearer <metrics.token>",
        )
        .into_response();
    }
    let queues = match tokio::time::timeout(Duration::from_secs(2), e.store.queue_overview()).await
    {
        Ok(Ok(q)) => q,
        _ => Vec::new(),
    };
    let parked = match tokio::time::timeout(Duration::from_secs(2), e.store.parked_events()).await {
        Ok(Ok(n)) => Some(n),
        _ => None,
    };
    let text = e.metrics.render(&queues, parked);
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn readyz(State(e): State<Arc<Engine>>) -> (StatusCode, Json<Value>) {
    const WAIT: Duration = Duration::from_secs(2);
    let (store, queue) = tokio::join!(
        tokio::time::timeout(WAIT, e.store.ping()),
        tokio::time::timeout(WAIT, e.queue.ping()),
    );
    let word = |up: Result<bool, _>| if up == Ok(true) { "up" } else { "down" };
    let (store, queue) = (word(store), word(queue));
    let status = if store == "up" && queue == "up" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "store": store, "queue": queue })))
}
