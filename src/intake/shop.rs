//! The reference checkout pages, compiled into the binary like the dashboard: `/checkout`
//! (pick products, pay at the provider), `/checkout/success` (where the provider sends the
//! buyer back: "Processing payment…" until the order is paid — polling every 2 s, and asking
//! the engine to verify with the provider when the webhook is late — then the buyer's access
//! activated as a cookie; after 30 s a clear message and a button to check again, never an
//! endless spinner), `/checkout/cancel`, and `/checkout/sign-in` (a buyer on another device
//! asks for an emailed link here, and the link opens it again to trade its token for the
//! access cookie). A shop's own frontend does the same through the
//! public API; these pages are what `checkout.success_url` points at by default.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Engine;

const CHECKOUT: &str = include_str!("shop/checkout.html");
const SUCCESS: &str = include_str!("shop/success.html");
const CANCEL: &str = include_str!("shop/cancel.html");
const SIGN_IN: &str = include_str!("shop/sign-in.html");
const SCRIPT: &str = include_str!("shop/shop.js");
const STYLE: &str = include_str!("shop/shop.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

fn html(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/checkout", get(|| async { html(CHECKOUT) }))
        .route("/checkout/success", get(|| async { html(SUCCESS) }))
        .route("/checkout/cancel", get(|| async { html(CANCEL) }))
        .route("/checkout/sign-in", get(|| async { html(SIGN_IN) }))
        .route(
            "/checkout/shop.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    STYLE,
                )
            }),
        )
        .route(
            "/checkout/shop.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    SCRIPT,
                )
            }),
        )
}
