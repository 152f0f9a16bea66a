//! Per-client limits on what anyone on the internet can send: the public `POST` endpoints
//! (create an order, create a checkout, verify a payment) and webhooks that fail
//! verification. A provider's verified webhooks are never limited: only a client whose
//! webhooks keep failing their signature check is turned away (429) before the check, so a
//! flood of forged requests costs little and cannot starve the real ones.
//!
//! A client is its address, or with `http.client_ip_header` set (behind a proxy that sets
//! it) the first address in that header. Each client has a token bucket per limit, in this
//! process's memory: several intakes each enforce their own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::Engine;

/// Clients remembered at most; past it, those whose buckets are full again are forgotten.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct Limiter {
    per_sec: f64,
    burst: f64,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    /// `per_minute` 0: no limit.
    pub fn new(per_minute: u32, burst: u32) -> Limiter {
        Limiter {
            per_sec: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            clients: Mutex::default(),
        }
    }

    /// Takes a token: `Err(wait)` if the client has none left.
    pub fn take(&self, client: IpAddr) -> Result<(), Duration> {
        self.spend(client, 1.0)
    }

    /// Whether the client has a token left, without taking it: `Err(wait)` if not.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.spend(client, 0.0)
    }

    /// Takes `cost` tokens (0 or 1) if the client has a whole one.
    fn spend(&self, client: IpAddr, cost: f64) -> Result<(), Duration> {
        if self.per_sec == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            clients
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let b = clients.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec));
        }
        b.tokens -= cost;
        Ok(())
    }
}

/// The limits of one engine.
#[derive(Debug)]
pub struct Limits {
    /// The public `POST` endpoints.
    pub public: Limiter,
    /// Webhooks that failed verification.
    pub forged: Limiter,
    /// Whether the warning about a proxy's header going unused was logged.
    warned: std::sync::atomic::AtomicBool,
}

impl Limits {
    pub fn from_config(c: &crate::config::Api) -> Limits {
        Limits {
            public: Limiter::new(c.rate_limit_per_minute, c.rate_limit_burst),
            forged: Limiter::new(c.forged_webhooks_per_minute, c.forged_webhooks_per_minute),
            warned: Default::default(),
        }
    }
}

/// The routes `Limits::public` applies to (their `POST`).
pub const PUBLIC_POSTS: [&str; 6] = [
    "/api/orders",
    "/api/payments/create-order",
    "/api/payments/verify",
    "/api/entitlements/activate",
    "/api/entitlements/sign-in",
    "/api/entitlements/sign-in/confirm",
];

/// Who sent the request: the first address of `http.client_ip_header` when configured and
/// parseable, else the peer's.
pub fn client(e: &Engine, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
    if e.config.http.client_ip_header.is_empty()
        && headers.contains_key("x-forwarded-for")
        && !e
            .limits
            .warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "requests come through a proxy (X-Forwarded-For) but http.client_ip_header is \
             empty: every client behind it shares one rate limit"
        );
    }
    let from_header = (!e.config.http.client_ip_header.is_empty())
        .then(|| headers.get(e.config.http.client_ip_header.as_str()))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    from_header
        .or(peer.map(|p| p.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// 429 with `Retry-After` (whole seconds, at least 1).
pub fn too_many(wait: Duration, what: &str) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what} from this client; retry after {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

/// The public `POST` endpoints' limit, as a route layer.
pub async fn public(
    State(e): State<std::sync::Arc<Engine>>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::POST && PUBLIC_POSTS.contains(&route.as_str()) {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
        let who = client(&e, request.headers(), peer.map(|c| c.0));
        if let Err(wait) = e.limits.public.take(who) {
            return too_many(wait, "requests");
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_its_burst_then_refills_at_its_rate() {
        let l = Limiter::new(60, 3);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        for _ in 0..3 {
            assert!(l.take(a).is_ok());
        }
        let wait = l.take(a).expect_err("burst spent");
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(l.check(a).is_err());
        // Another client has its own bucket.
        assert!(l.take(b).is_ok());
        // 0 per minute: no limit at all.
        let off = Limiter::new(0, 1);
        for _ in 0..100 {
            assert!(off.take(a).is_ok());
        }
    }
}
