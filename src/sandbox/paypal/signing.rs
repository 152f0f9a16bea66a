//! How the PayPal sandbox signs its webhooks (SHA256withRSA with a key made at start-up,
//! its self-signed certificate served at each delivery's `paypal-cert-url`), and PayPal's
//! `verify-webhook-signature` API.

use super::*;

/// The sandbox's signing key and its self-signed certificate (PEM), made once per process:
/// an RSA key takes a moment to generate.
pub(super) fn signing_identity() -> anyhow::Result<&'static (RsaPrivateKey, String)> {
    static IDENTITY: OnceLock<(RsaPrivateKey, String)> = OnceLock::new();
    if let Some(id) = IDENTITY.get() {
        return Ok(id);
    }
    let made = make_identity()?;
    Ok(IDENTITY.get_or_init(|| made))
}

pub(super) fn make_identity() -> anyhow::Result<(RsaPrivateKey, String)> {
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::EncodePem;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let subject =
        Name::from_str("CN=messageverificationcerts.sandbox.fulfilld,O=fulfilld sandbox")?;
    let builder = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        Validity::from_now(std::time::Duration::from_secs(10 * 365 * 86_400))?,
        subject,
        spki,
        &signer,
    )?;
    let cert = builder.build::<rsa::pkcs1v15::Signature>()?;
    let pem = cert.to_pem(x509_cert::der::pem::LineEnding::LF)?;
    Ok((key, pem))
}

/// The headers PayPal sends with a delivery of `body`, signed with `key`: a fresh
/// transmission id (first), the time, the signature, the certificate URL and the algorithm.
pub fn signature_headers(
    key: &RsaPrivateKey,
    webhook_id: &str,
    cert_url: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    signature_headers_at(
        key,
        webhook_id,
        cert_url,
        body,
        &uuid_like(),
        &rfc3339_now(),
    )
}

/// [`signature_headers`] with a given transmission id and time (to build a replay, or a
/// message from the past).
pub fn signature_headers_at(
    key: &RsaPrivateKey,
    webhook_id: &str,
    cert_url: &str,
    body: &[u8],
    id: &str,
    time: &str,
) -> Vec<(&'static str, String)> {
    let (id, time) = (id.to_owned(), time.to_owned());
    let message = signed_message(&id, &time, webhook_id, body);
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let sig = BASE64.encode(signer.sign(message.as_bytes()).to_bytes());
    vec![
        ("paypal-transmission-id", id),
        ("paypal-transmission-time", time),
        ("paypal-transmission-sig", sig),
        ("paypal-cert-url", cert_url.to_owned()),
        ("paypal-auth-algo", "SHA256withRSA".to_owned()),
        ("paypal-auth-version", "v2".to_owned()),
    ]
}

/// The sandbox's signing key (made on first use, shared by every sandbox in the process).
pub fn signing_key() -> anyhow::Result<&'static RsaPrivateKey> {
    Ok(&signing_identity()?.0)
}

/// `POST /v1/notifications/verify-webhook-signature`: checks the signature against the
/// body this sandbox delivered under that transmission id (PayPal, too, needs the event
/// exactly as delivered).
pub(super) async fn verify_webhook_signature(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<wire::VerifyRequest>(&body) else {
        return invalid_request(
            "MISSING_REQUIRED_PARAMETER",
            "",
            "A required field / parameter is missing.",
        );
    };
    let delivered = sb
        .inner
        .transmissions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&req.transmission_id)
        .cloned();
    let ok = delivered.is_some_and(|raw| {
        // The text delivered, byte for byte (bar surrounding whitespace): PayPal checks
        // the signature against the JSON exactly as sent, so a re-serialized event fails.
        let same_event = req.webhook_event.get().as_bytes() == raw.trim_ascii();
        let message = signed_message(
            &req.transmission_id,
            &req.transmission_time,
            &req.webhook_id,
            &raw,
        );
        same_event
            && req.auth_algo == "SHA256withRSA"
            && crate::providers::paypal::verify_signature(
                &sb.inner.key.to_public_key(),
                &message,
                &req.transmission_sig,
            )
    });
    let status = if ok { "SUCCESS" } else { "FAILURE" };
    Json(wire::VerifyResponse {
        verification_status: status.into(),
    })
    .into_response()
}

pub(super) async fn cert(State(sb): State<Sandbox>) -> Response {
    (
        [("content-type", "application/x-pem-file")],
        sb.inner.cert_pem.to_owned(),
    )
        .into_response()
}
