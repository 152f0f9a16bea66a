//! Where the engine may send a request a merchant chose the target of (its webhook
//! endpoints): a guard against server-side request forgery. Only http and https; with
//! `merchant_webhooks.allowed_hosts` set, only those hosts; and unless
//! `merchant_webhooks.allow_private`, no loopback, private, link-local or other non-public
//! address — neither named in the URL ([`guard`]) nor resolved from its host ([`Guarded`]).
//! The configuration (at start-up), the admin API (when an endpoint is added) and the sender
//! (at each attempt) all ask here.

use std::net::{IpAddr, SocketAddr};

/// What the guard allows (from `merchant_webhooks`).
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    pub allowed_hosts: &'a [String],
    pub allow_private: bool,
}

/// Whether `url` may be sent to, as far as the URL alone tells (scheme, allowed hosts, a
/// literal address); names are checked again as they resolve ([`Guarded`]).
pub fn guard(c: &Reach<'_>, url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("refused: only http and https, not {}", u.scheme()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("refused: credentials in the URL".into());
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err("refused: no host".into()),
    };
    if !c.allowed_hosts.is_empty()
        && !c
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
    {
        return Err(format!(
            "refused: {host} is not in merchant_webhooks.allowed_hosts"
        ));
    }
    let literal = match u.host() {
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        _ => None,
    };
    if let Some(ip) = literal
        && !c.allow_private
        && !is_public(ip)
    {
        return Err(format!(
            "refused: {ip} is a non-public address (merchant_webhooks.allow_private is off)"
        ));
    }
    Ok(())
}

/// Whether an address is on the public internet: not loopback, private, link-local,
/// shared (CGNAT), unspecified, broadcast, multicast, documentation or unique-local — and
/// for an IPv4-mapped IPv6 address, the same of the IPv4 inside.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [o1, o2, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o1 == 0
                || (o1 == 100 && (64..128).contains(&o2))
                || (o1 == 198 && (18..20).contains(&o2))
                || o1 >= 240)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = a.segments()[0];
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && a.segments()[1] == 0x0db8)
        }
    }
}

/// Resolves names with the system's resolver, keeping only addresses that may be sent to.
pub struct Guarded {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if kept.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to non-public addresses (merchant_webhooks.allow_private is off)"
                )
                .into();
                return Err(e);
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "192.0.2.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().expect(private)), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().expect(public)), "{public}");
        }
    }
}
