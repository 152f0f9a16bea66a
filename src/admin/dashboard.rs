//! `/admin`: the operators' dashboard, a page and its script compiled into the binary (no
//! CDN, works offline). The page asks for the admin token and keeps it in the tab's session
//! storage only; everything it shows comes from the admin API with that token: each step
//! kind's queue (every 2 s), the last hour's throughput and failures, dead letters with
//! retry and discard, the webhook log with replay, and an order's timeline.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Engine;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// Only this page's own script and styles; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/app.js", get(script))
}
