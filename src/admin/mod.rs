//! The admin's room: the admin API, the dashboard over it, and `fulfilld admin …`.
//!
//! Every admin route sits behind one gate ([`auth::layer`]): a proven admin token whose role
//! allows the request. Handlers take the [`Actor`] it proved, and each change writes its
//! audit row with that name in the same transaction as the change.
//!
//! - [`catalogue`]: SKUs, prices and stock;
//! - [`queues`]: queues, steps, dead letters, attempts, the audit log;
//! - [`events`]: the webhook log and replay;
//! - [`orders`]: an order's record and timeline, resolve, recheck;
//! - [`refunds`]: `POST /api/payments/refund`;
//! - [`reconcile`]: reconciliation runs;
//! - [`merchant`]: merchant webhook endpoints and deliveries;
//! - [`dashboard`]: the page at `/admin` (its calls carry the token, the page does not);
//! - [`cli`]: `fulfilld admin …`, a client of this API.

pub mod auth;
mod catalogue;
pub mod cli;
mod dashboard;
mod events;
mod merchant;
mod orders;
mod queues;
mod reconcile;
mod refunds;

use std::sync::Arc;

use axum::Router;

pub use auth::{Actor, Admins, Caller, authorize, bearer_is};
pub use refunds::refund_json;

use crate::Engine;

/// The admin API under `/api/admin`, `POST /api/payments/refund`, behind the gate; and the
/// dashboard's page, which is not.
pub fn router(engine: Arc<Engine>) -> Router<Arc<Engine>> {
    let api = Router::new()
        .merge(catalogue::router())
        .merge(queues::router())
        .merge(events::router())
        .merge(orders::router())
        .merge(reconcile::router())
        .merge(merchant::router());
    Router::new()
        .nest("/api/admin", api)
        .merge(refunds::router())
        .route_layer(axum::middleware::from_fn_with_state(engine, auth::layer))
        .merge(dashboard::router())
}
