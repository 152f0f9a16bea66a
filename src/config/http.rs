//! `[http]` and `[api]`: where the engine listens, who its clients are, and the public API's
//! limits.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::{ConfigError, bad};

#[derive(Debug, Clone, Deserialize)]
pub struct Http {
    #[serde(deserialize_with = "super::values::parsed")]
    pub addr: SocketAddr,
    pub max_body_bytes: usize,
    /// Browser origins (`https://shop.example`) allowed to call the API cross-origin.
    pub cors_origins: Vec<String>,
    /// The header a trusted proxy puts the client's address in (`x-forwarded-for`); empty:
    /// the peer's address is the client.
    pub client_ip_header: String,
    /// Which proxies' entries in `client_ip_header` are believed.
    pub trusted_proxies: TrustedProxies,
}

impl Http {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return bad("http.max_body_bytes", "must be positive");
        }
        for o in &self.cors_origins {
            let ok = url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !o.ends_with('/')
            });
            if !ok {
                return bad(
                    "http.cors_origins",
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                );
            }
        }
        Ok(())
    }
}

/// The proxies in front of the engine, whose entries in `http.client_ip_header` are
/// believed: `1` (a count: that many hops, the nearest being the peer) or a list of
/// networks (`["10.0.0.0/8", "192.0.2.7"]`: a hop is trusted when its address is in one).
/// The client is the rightmost address that no trusted proxy stands for, as with nginx's
/// `real_ip_recursive` or Express's `trust proxy`: a value the client wrote to the left of
/// it is never read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawProxies")]
pub enum TrustedProxies {
    Count(usize),
    Nets(Vec<ipnet::IpNet>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProxies {
    One(RawProxy),
    List(Vec<RawProxy>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawProxy {
    Count(u64),
    Text(String),
}

impl TryFrom<RawProxies> for TrustedProxies {
    type Error = String;

    fn try_from(raw: RawProxies) -> std::result::Result<TrustedProxies, String> {
        let list = match raw {
            RawProxies::One(one) => vec![one],
            RawProxies::List(list) => list,
        };
        // A count, written as a number or (from the environment) as text.
        let as_count = |p: &RawProxy| match p {
            RawProxy::Count(n) => Some(*n),
            RawProxy::Text(t) => t.trim().parse::<u64>().ok(),
        };
        match list.as_slice() {
            [] => return Err("name at least one proxy network, or a count".into()),
            [one] => {
                if let Some(n) = as_count(one) {
                    return usize::try_from(n)
                        .ok()
                        .filter(|n| (1..=32).contains(n))
                        .map(TrustedProxies::Count)
                        .ok_or_else(|| format!("a count of proxies is 1 to 32, not {n}"));
                }
            }
            _ => {}
        }
        list.iter()
            .map(|p| {
                let text = match p {
                    RawProxy::Text(t) if as_count(p).is_none() => t.trim(),
                    _ => return Err("a count stands alone, not in a list of networks".into()),
                };
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| format!("{text:?} is neither an address nor a network (CIDR)"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(TrustedProxies::Nets)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Api {
    pub idempotency_ttl_secs: u64,
    pub idempotency_lock_ms: u64,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub forged_webhooks_per_minute: u32,
}

impl Api {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.idempotency_ttl_secs == 0 {
            return bad("api.idempotency_ttl_secs", "must be positive");
        }
        Ok(())
    }
}
