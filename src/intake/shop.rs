//! The reference checkout pages, compiled into the binary like the dashboard: `/checkout`
//! (pick products, pay at the provider: Stripe's and PayPal's hosted pages, or Razorpay's
//! Checkout.js over the page), `/checkout/success` (where the provider sends the
//! buyer back: "Processing payment…" until the order is paid — polling every 2 s, and asking
//! the engine to verify with the provider when the webhook is late — then the buyer's access
//! activated as a cookie; after 30 s a clear message and a button to check again, never an
//! endless spinner), `/checkout/cancel`, and `/checkout/sign-in` (a buyer on another device
//! asks for an emailed link here, and the link opens it again to trade its token for the
//! access cookie). A shop's own frontend does the same through the
//! public API; these pages are what `checkout.success_url` points at by default.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
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

fn html(body: &'static str) -> Response {
    with_csp(body, CSP.to_owned())
}

fn with_csp(body: &'static str, csp: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (header::REFERRER_POLICY, "no-referrer".to_owned()),
        ],
        body,
    )
        .into_response()
}

/// The checkout page's policy: with Razorpay on, also its Checkout.js and the frame it opens
/// (Razorpay's script from checkout.razorpay.com, its form from api.razorpay.com; the
/// sandbox serves both itself).
fn checkout_csp(e: &Engine) -> String {
    let r = &e.config.providers.razorpay;
    let origin = r
        .enabled
        .then(|| url::Url::parse(&crate::providers::razorpay::checkout_script(&r.api_base)).ok())
        .flatten()
        .map(|u| u.origin().ascii_serialization());
    match origin {
        Some(o) => format!(
            "default-src 'none'; script-src 'self' {o}; style-src 'self' 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-src {o} https://api.razorpay.com; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
        None => CSP.to_owned(),
    }
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route(
            "/checkout",
            get(|State(e): State<Arc<Engine>>| async move { with_csp(CHECKOUT, checkout_csp(&e)) }),
        )
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
