//! `fulfilld sandbox`: a local emulator of the payment providers' APIs, faithful enough for
//! their official client libraries, that also plays the provider's part in delivering
//! signed webhooks — once, twice, late, or never — so every path of the engine can be
//! exercised without an account or a network.
//!
//! Provider API paths are the providers' own (`/v1/checkout/sessions` for Stripe); the
//! controls that stand in for the buyer and for the provider's whims live under
//! `/sandbox/{provider}/…`. State is in memory: a restarted sandbox forgets everything.

// Handlers bail out early with a ready error `Response`; the emulator is not a hot path, so
// the size of that `Err` does not matter.
#![allow(clippy::result_large_err)]

mod common;
pub mod paypal;
pub mod razorpay;
pub mod stripe;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

use crate::clock::now_s;
use crate::config::Config;
use common::*;

/// Serves the sandbox on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let base = format!("http://{}", listener.local_addr()?);
    // Making the PayPal signing key is CPU work: keep it off the async workers.
    let paypal = {
        let (config, base) = (config.clone(), base.clone());
        tokio::task::spawn_blocking(move || paypal::Sandbox::new(&config, &base)).await??
    };
    let app = Router::new()
        .merge(stripe::router(stripe::Sandbox::new(&config, &base)))
        .merge(razorpay::router(razorpay::Sandbox::new(&config)))
        .merge(paypal::router(paypal));
    tracing::info!(addr = %base, target = %config.sandbox.webhook_target, "sandbox serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
