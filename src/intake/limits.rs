//! Per-client limits on what anyone on the internet can send: the public `POST` endpoints
//! (create an order, create a checkout, verify a payment) and webhooks that fail
//! verification. A webhook whose signature checks on its own bytes is always checked, so
//! no budget can turn a provider's genuine webhook away; a client whose webhooks keep
//! failing is only refused (429) verification that would fetch what it names (a PayPal
//! certificate), so a flood of forged requests costs little.
//!
//! A client is its address, or with `http.client_ip_header` set (behind a proxy that sets
//! it) the rightmost address in that header that `http.trusted_proxies` does not stand for.
//! Each client has a token bucket per limit, in this process's memory: several intakes each
//! enforce their own.

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
use crate::config::TrustedProxies;

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
        let client = bucket_of(client);
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

/// Whose bucket an address spends: an IPv4 address its own; an IPv6 address its /64, the
/// least a site is given, so one client cannot hop between 2^64 addresses of its own.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
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

/// Who sent the request: with `http.client_ip_header` set, the rightmost address in it that
/// no trusted proxy stands for ([`client_behind`]); else the peer's.
pub fn client(e: &Engine, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
    let header = e.config.http.client_ip_header.as_str();
    if header.is_empty()
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
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    if header.is_empty() {
        return peer.to_canonical();
    }
    client_behind(
        peer,
        forwarded(headers, header).into_iter(),
        &e.config.http.trusted_proxies,
    )
}

/// The entries of a forwarding header, left to right: every instance of it, in order, is
/// one list (RFC 9110 §5.3). Split on the raw bytes, so bytes that are not text in an entry
/// a client wrote (`obs-text`) spoil that entry only — never the addresses our proxies
/// appended to its right. A spoiled entry reads as empty (not an address).
fn forwarded<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|entry| std::str::from_utf8(entry).unwrap_or(""))
        .collect()
}

/// The client behind the proxies: walking from the peer leftwards through the addresses
/// each proxy appended, the first one not trusted (or, with a count, the one that many hops
/// away). An entry that is not an address ends the walk at the hop that wrote it; when every
/// hop is trusted, the leftmost is the client. Entries to the left of the client are the
/// client's own words and never read.
pub fn client_behind<'a>(
    peer: IpAddr,
    chain: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut at = peer.to_canonical();
    let trusts = |ip: IpAddr, hop: usize| match trusted {
        // `hop` 0 is the peer: with a count of n, hops 0 to n-1 are proxies.
        TrustedProxies::Count(n) => hop < *n,
        TrustedProxies::Nets(nets) => nets.iter().any(|n| n.contains(&ip)),
    };
    for (hop, entry) in chain.rev().enumerate() {
        if !trusts(at, hop) {
            return at;
        }
        match parse_entry(entry) {
            Some(ip) => at = ip,
            None => return at,
        }
    }
    at
}

/// One entry of a forwarding header: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]:443` or
/// `192.0.2.1:443` (some proxies add the port).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .or_else(|_| e.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
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
    fn bytes_a_client_wrote_spoil_only_its_own_entry() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").expect("obs-text is allowed"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        let entries = forwarded(&h, "x-forwarded-for");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], "", "the client's junk");
        let peer = ip("10.0.0.2");
        // One trusted proxy: the client is the entry it appended, whatever came before.
        let client = client_behind(peer, entries.into_iter(), &TrustedProxies::Count(1));
        assert_eq!(client, ip("198.51.100.7"));
        let two = client_behind(
            peer,
            forwarded(&h, "x-forwarded-for").into_iter(),
            &TrustedProxies::Count(2),
        );
        assert_eq!(two, ip("203.0.113.9"));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_stands_for() {
        let proxy = ip("10.0.0.2");
        let one = TrustedProxies::Count(1);
        let two = TrustedProxies::Count(2);
        let nets = TrustedProxies::Nets(vec![
            "10.0.0.0/8".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ]);
        let behind =
            |chain: &str, trusted: &TrustedProxies| client_behind(proxy, chain.split(','), trusted);
        // Whatever a client writes on the left, it is not what the proxy appended.
        for spoofed in [
            "",
            "1.1.1.1, ",
            "1.1.1.1, 2.2.2.2, ",
            "not-an-ip, ",
            "10.0.0.9, ",
        ] {
            let chain = format!("{spoofed}203.0.113.5");
            assert_eq!(behind(&chain, &one), ip("203.0.113.5"), "{chain:?}");
            assert_eq!(behind(&chain, &nets), ip("203.0.113.5"), "{chain:?}");
        }
        // Two proxies: the second appended what the first was sent from.
        assert_eq!(
            behind("1.1.1.1, 203.0.113.5, 10.0.0.7", &two),
            ip("203.0.113.5")
        );
        assert_eq!(
            behind("1.1.1.1, 203.0.113.5, 10.0.0.7", &nets),
            ip("203.0.113.5")
        );
        // Ports, brackets and IPv4-mapped IPv6 are read as the address.
        assert_eq!(behind("203.0.113.5:4711", &one), ip("203.0.113.5"));
        assert_eq!(behind("[2001:db9::1]:443", &one), ip("2001:db9::1"));
        assert_eq!(behind("::ffff:203.0.113.5", &one), ip("203.0.113.5"));
        // Every hop trusted: the leftmost. A garbled entry: the hop that wrote it.
        assert_eq!(behind("10.1.1.1, 10.0.0.7", &nets), ip("10.1.1.1"));
        assert_eq!(behind("garbage", &one), proxy);
        assert_eq!(behind("203.0.113.5, garbage", &nets), proxy);
        // A peer that is no trusted proxy is the client, whatever it sends.
        let direct = client_behind(ip("198.51.100.1"), "1.1.1.1".split(','), &nets);
        assert_eq!(direct, ip("198.51.100.1"));
    }

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
        // One IPv6 /64 is one client, whichever of its addresses it sends from.
        let l = Limiter::new(60, 1);
        assert!(l.take("2001:db8:1:2::1".parse().expect("v6")).is_ok());
        assert!(l.take("2001:db8:1:2:ffff::9".parse().expect("v6")).is_err());
        assert!(l.take("2001:db8:1:3::1".parse().expect("v6")).is_ok());
        // 0 per minute: no limit at all.
        let off = Limiter::new(0, 1);
        for _ in 0..100 {
            assert!(off.take(a).is_ok());
        }
    }
}
