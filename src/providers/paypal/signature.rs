//! What makes a PayPal webhook authentic: the signed message, its SHA256withRSA
//! signature, the certificate it names (fetched only from PayPal's hosts), the transmission's
//! freshness; and which of PayPal's hosts a `next` link may point at.

use super::*;

/// The string PayPal signs for a webhook delivery.
pub fn signed_message(
    transmission_id: &str,
    transmission_time: &str,
    webhook_id: &str,
    body: &[u8],
) -> String {
    format!(
        "{transmission_id}|{transmission_time}|{webhook_id}|{}",
        crc32fast::hash(body)
    )
}

/// Checks a base64 SHA256withRSA (PKCS#1 v1.5) signature of `message`.
pub fn verify_signature(key: &RsaPublicKey, message: &str, signature_b64: &str) -> bool {
    let Ok(bytes) = BASE64.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone())
        .verify(message.as_bytes(), &sig)
        .is_ok()
}

/// A certificate's RSA key, and when the certificate stops being valid.
#[derive(Debug, Clone)]
pub(super) struct TrustedKey {
    pub(super) key: RsaPublicKey,
    pub(super) not_after_s: i64,
    /// The file's modification time, for a configured certificate file.
    pub(super) stamp: Option<SystemTime>,
}

/// Reads the first certificate of a PEM chain; refuses one that is not valid at `now_s` or
/// whose key is not RSA.
pub(super) fn key_from_pem(pem: &[u8], now_s: i64) -> Result<TrustedKey, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the certificate is not PEM text")?;
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or("no PEM certificate found")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[begin..]
        .find(end_marker)
        .ok_or("unterminated PEM certificate")?
        + begin
        + end_marker.len();
    let cert = x509_cert::Certificate::from_pem(&text[begin..end])
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let validity = &cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs() as i64;
    let not_after = validity.not_after.to_unix_duration().as_secs() as i64;
    if now_s < not_before || now_s > not_after {
        return Err("the certificate is not valid at this time".into());
    }
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("unreadable certificate key: {e}"))?;
    let key = RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| format!("the certificate's key is not RSA: {e}"))?;
    Ok(TrustedKey {
        key,
        not_after_s: not_after,
        stamp: None,
    })
}

/// PayPal's REST API hosts (<https://developer.paypal.com/api/rest/requests/>): `api-m` is
/// the one to call, and PayPal's own links (certificates, `next` pages) name either.
pub(super) const LIVE_HOSTS: [&str; 2] = ["api.paypal.com", "api-m.paypal.com"];
pub(super) const SANDBOX_HOSTS: [&str; 2] = ["api.sandbox.paypal.com", "api-m.sandbox.paypal.com"];

/// Whether a `next` link PayPal answered may be followed with our token: on our API base's
/// origin, or on another of PayPal's API hosts of the same environment (PayPal's list pages
/// link to `api.paypal.com` when called on `api-m.paypal.com`), over https, without
/// credentials in it. A base on this machine (the sandbox) may likewise link to another
/// loopback name on its own port and scheme.
pub(super) fn next_link_allowed(base: &str, link: &str) -> bool {
    let (Ok(base), Ok(next)) = (url::Url::parse(base), url::Url::parse(link)) else {
        return false;
    };
    if !next.username().is_empty() || next.password().is_some() {
        return false;
    }
    if next.origin() == base.origin() {
        return true;
    }
    let host = |u: &url::Url| u.host_str().unwrap_or_default().to_ascii_lowercase();
    let (ours, theirs) = (host(&base), host(&next));
    let loopback = |h: &str| matches!(h, "127.0.0.1" | "localhost" | "[::1]");
    if loopback(&ours) {
        return loopback(&theirs)
            && next.scheme() == base.scheme()
            && next.port_or_known_default() == base.port_or_known_default();
    }
    let same_env =
        |hosts: &[&str]| hosts.contains(&ours.as_str()) && hosts.contains(&theirs.as_str());
    next.scheme() == "https"
        && next.port().is_none()
        && (same_env(&LIVE_HOSTS) || same_env(&SANDBOX_HOSTS))
}

/// A certificate URL is followed only to PayPal's own hosts, over https on the default port,
/// without credentials, and only to its certificate path: anything else could serve a key
/// of the sender's choosing, or make every forged webhook fetch a page of its choosing.
pub fn cert_url_allowed(raw: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|_| format!("paypal-cert-url {raw:?} is not a URL"))?;
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    // PayPal's REST API hosts, live and sandbox, which serve the certificates; nothing
    // else under paypal.com (a host that never answers would hold a fetch for its timeout).
    let paypal_host = LIVE_HOSTS.contains(&host.as_str()) || SANDBOX_HOSTS.contains(&host.as_str());
    // One certificate, one URL: no query or fragment to vary (each would be fetched and
    // cached anew).
    let name = u
        .path()
        .strip_prefix("/v1/notifications/certs/")
        .unwrap_or("");
    if u.scheme() != "https"
        || !paypal_host
        || u.port().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
        || name.is_empty()
        || name.len() > 100
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "paypal-cert-url {raw:?} is not an https URL of a certificate on PayPal's API host \
             (api.paypal.com, api-m.paypal.com or their sandbox twins)"
        ));
    }
    Ok(u)
}

/// The largest certificate chain read from PayPal.
pub(super) const CERT_MAX_BYTES: usize = 64 * 1024;
/// How long a failed certificate fetch is answered from memory.
pub(super) const CERT_FAILURE_TTL: Duration = Duration::from_secs(30);
/// How far ahead of our clock a `paypal-transmission-time` may be (clock skew).
pub const TRANSMISSION_SKEW_S: i64 = 60;

/// Whether a `paypal-transmission-time` is fresh at `now_s`: not older than `tolerance_s`,
/// not ahead by more than [`TRANSMISSION_SKEW_S`]. PayPal signs each delivery attempt anew
/// (its own transmission id and time: the event's `transmissions` list shows one per
/// attempt), so a retry hours later is fresh; a captured message replayed later is not.
pub fn transmission_fresh(time: &str, now_s: i64, tolerance_s: i64) -> Result<(), String> {
    let t = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("paypal-transmission-time {time:?} is not an RFC 3339 time"))?
        .unix_timestamp();
    if t < now_s.saturating_sub(tolerance_s) {
        return Err(format!(
            "paypal-transmission-time {time} is more than {tolerance_s} s old"
        ));
    }
    if t > now_s.saturating_add(TRANSMISSION_SKEW_S) {
        return Err(format!(
            "paypal-transmission-time {time} is ahead of this server's clock"
        ));
    }
    Ok(())
}
