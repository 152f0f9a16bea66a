//! The intake: axum routes for provider webhooks, the shop's API and health. Thin by design:
//! verify, normalize, commit one transaction, wake the pipeline, answer. No provider calls
//! except creating a checkout, no email, no stock work in a webhook's request path.
//!
//! Each resource file ends in `pub fn router()`; they are merged here. Admin routes live in
//! `admin` (catalogue), `queue_admin` (dead letters, attempts, queue), `events_admin`
//! (webhook log and replay) and `reconcile_admin`; `idempotency` wraps every `POST /api/…`.

mod admin;
mod error;
mod events_admin;
mod idempotency;
mod orders;
mod payments;
mod queue_admin;
mod reconcile_admin;
mod refunds;
pub(crate) mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

pub use error::ApiError;
pub use payments::VerifyReads;

use crate::Engine;

pub fn router(engine: Arc<Engine>) -> Router {
    let limit = engine.config.http.max_body_bytes;
    Router::new()
        .merge(admin::router())
        .merge(events_admin::router())
        .merge(queue_admin::router())
        .merge(reconcile_admin::router())
        .merge(orders::router())
        .merge(payments::router())
        .merge(refunds::router())
        .merge(webhooks::router())
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            idempotency::layer,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(engine)
}
