use super::*;

#[test]
fn next_pages_are_followed_on_paypals_api_hosts_only() {
    let live = "https://api-m.paypal.com";
    let page = "/v1/notifications/webhooks-events?page=2";
    assert!(next_link_allowed(
        live,
        &format!("https://api.paypal.com{page}")
    ));
    assert!(next_link_allowed(
        live,
        &format!("https://api-m.paypal.com{page}")
    ));
    for refused in [
        format!("https://api.sandbox.paypal.com{page}"),
        format!("https://evil.example{page}"),
        format!("http://api.paypal.com{page}"),
        format!("https://api.paypal.com:8443{page}"),
        format!("https://user:pw@api.paypal.com{page}"),
        format!("https://api.paypal.com.evil.example{page}"),
    ] {
        assert!(!next_link_allowed(live, &refused), "{refused}");
    }
    let sandbox = "https://api-m.sandbox.paypal.com";
    assert!(next_link_allowed(
        sandbox,
        &format!("https://api.sandbox.paypal.com{page}")
    ));
    assert!(!next_link_allowed(
        sandbox,
        &format!("https://api.paypal.com{page}")
    ));
    // Our own sandbox: its own origin only.
    let local = "http://127.0.0.1:8099";
    assert!(next_link_allowed(
        local,
        &format!("http://127.0.0.1:8099{page}")
    ));
    assert!(!next_link_allowed(
        local,
        &format!("http://127.0.0.1:9999{page}")
    ));
    // … or another loopback name for it, as the sandbox's links are.
    assert!(next_link_allowed(
        local,
        &format!("http://localhost:8099{page}")
    ));
    for refused in [
        format!("https://localhost:8099{page}"),
        format!("http://localhost:9999{page}"),
        format!("http://10.0.0.1:8099{page}"),
        format!("http://api.paypal.com:8099{page}"),
    ] {
        assert!(!next_link_allowed(local, &refused), "{refused}");
    }
}

#[test]
fn a_token_answer_needs_only_the_token_and_its_type() {
    let t: wire::Token = serde_json::from_str(r#"{"access_token":"A21AAx","token_type":"Bearer"}"#)
        .expect("the required fields are enough");
    assert_eq!((t.access_token.as_str(), t.expires_in), ("A21AAx", 0));
}

#[test]
fn a_reversed_transaction_is_not_a_payment() {
    let listed = |status: &str| wire::TransactionInfo {
        transaction_id: "9XL12345AB678901C".into(),
        transaction_event_code: "T0006".into(),
        transaction_initiation_date: "2026-12-07T01:00:00+0000".into(),
        transaction_amount: wire::Money {
            currency_code: "USD".into(),
            value: "10.00".into(),
        },
        transaction_status: status.into(),
        custom_field: None,
    };
    let reversed = recent_of(listed("V")).expect("readable");
    assert!(!reversed.state.paid);
    assert!(reversed.returned, "a reversal is told, not ignored");
    assert_eq!(reversed.state.change, PaymentChange::Ignored);
    let completed = recent_of(listed("S")).expect("readable");
    assert!(completed.state.paid);
    assert!(!completed.returned);
    assert_eq!(completed.state.amount_minor, 1000);
}

#[test]
fn a_declined_capture_is_known_by_its_issue() {
    let refused = |issue: &str| ProviderError::Status {
        provider: NAME,
        status: 422,
        message: format!(
            "UNPROCESSABLE_ENTITY: The requested action could not be performed. [{issue}]"
        ),
        should_retry: None,
    };
    assert_eq!(
        declined_issue(&refused("INSTRUMENT_DECLINED")),
        Some("INSTRUMENT_DECLINED")
    );
    assert_eq!(
        declined_issue(&refused("PAYER_CANNOT_PAY")),
        Some("PAYER_CANNOT_PAY")
    );
    assert_eq!(declined_issue(&refused("ORDER_NOT_APPROVED")), None);
    let unavailable = ProviderError::Status {
        provider: NAME,
        status: 503,
        message: "INSTRUMENT_DECLINED".into(),
        should_retry: None,
    };
    assert_eq!(declined_issue(&unavailable), None, "only a 422 says so");
}

#[test]
fn only_an_uncached_paypal_certificate_counts_as_a_fetch() {
    use crate::providers::VerifyCost;
    let c = cert_config();
    let pp = PayPal::new(&c, reqwest::Client::new());
    let with = |url: &str| {
        let mut h = HeaderMap::new();
        h.insert("paypal-cert-url", url.parse().expect("header"));
        h
    };
    let genuine = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594";
    assert_eq!(pp.verification_cost(&with(genuine)), VerifyCost::Fetch);
    // Refused by its URL before any fetch, or no URL at all: nothing is fetched.
    assert_eq!(
        pp.verification_cost(&with("https://evil.example/v1/notifications/certs/X")),
        VerifyCost::Local
    );
    assert_eq!(pp.verification_cost(&HeaderMap::new()), VerifyCost::Local);
    // Once its key is cached, the same certificate costs nothing.
    let key = crate::sandbox::paypal::signing_key()
        .expect("sandbox key")
        .to_public_key();
    pp.keys.lock().expect("keys").insert(
        genuine.to_owned(),
        TrustedKey {
            key,
            not_after_s: i64::MAX,
            stamp: None,
        },
    );
    assert_eq!(pp.verification_cost(&with(genuine)), VerifyCost::Local);
    // A configured certificate file is read, never fetched.
    let file = PayPal::new(
        &config::PayPal {
            webhook_cert_file: "cert.pem".into(),
            ..c.clone()
        },
        reqwest::Client::new(),
    );
    assert_eq!(file.verification_cost(&with(genuine)), VerifyCost::Local);
    // Asking PayPal's API is remote, whatever the headers.
    let api = PayPal::new(
        &config::PayPal {
            webhook_verification: PayPalVerification::Api,
            ..c.clone()
        },
        reqwest::Client::new(),
    );
    assert_eq!(api.verification_cost(&HeaderMap::new()), VerifyCost::Remote);
}

#[test]
fn transmission_time_must_be_fresh_and_not_from_the_future() {
    // 2026-11-22T10:00:00Z
    let now = 1_795_341_600;
    let ok = |t: &str| transmission_fresh(t, now, 300);
    assert_eq!(ok("2026-11-22T10:00:00Z"), Ok(()));
    assert_eq!(ok("2026-11-22T09:55:00Z"), Ok(()), "exactly the tolerance");
    assert_eq!(ok("2026-11-22T10:01:00Z"), Ok(()), "a minute of skew");
    assert_eq!(ok("2026-11-22T11:55:00+02:00"), Ok(()), "any offset");
    for stale in [
        "2026-11-22T09:54:59Z",
        "2016-11-22T10:00:00Z",
        "2026-11-22T10:01:01Z",
        "2036-11-22T10:00:00Z",
        "yesterday",
        "",
        "1795341600",
    ] {
        assert!(ok(stale).is_err(), "{stale:?} is refused");
    }
}

#[test]
fn signed_message_uses_the_decimal_crc32_of_the_raw_body() {
    // crc32("hello world") = 0x0d4a1185 = 222957957.
    assert_eq!(
        signed_message("id-1", "2026-11-22T10:00:00Z", "WH-1", b"hello world"),
        "id-1|2026-11-22T10:00:00Z|WH-1|222957957"
    );
}

/// Key, certificate and signature made with the openssl command line (`openssl req
/// -x509 -newkey rsa:2048`, `openssl dgst -sha256 -sign`); the CRC with Python's zlib.
/// Only the public half is kept.
#[test]
fn known_vector_made_with_openssl_verifies() {
    let cert = include_bytes!("../../../tests/fixtures/paypal/cert.pem");
    let body = include_bytes!("../../../tests/fixtures/paypal/body.json");
    let sig = include_str!("../../../tests/fixtures/paypal/sig.b64");
    let now = 1_800_000_000;
    let key = key_from_pem(cert, now).expect("certificate").key;
    let (id, time, webhook) = (
        "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
        "2016-02-18T20:01:35Z",
        "1JE4291016473214C",
    );
    let message = signed_message(id, time, webhook, body);
    assert_eq!(message, format!("{id}|{time}|{webhook}|1038609229"));
    assert!(verify_signature(&key, &message, sig));
    let tampered = signed_message(id, time, webhook, &body[1..]);
    assert!(!verify_signature(&key, &tampered, sig));
    let other_hook = signed_message(id, time, "WH-OTHER", body);
    assert!(!verify_signature(&key, &other_hook, sig));
    assert!(!verify_signature(&key, &message, "not base64!"));
    // Past its notAfter (2126) the certificate is refused.
    assert!(key_from_pem(cert, 5_000_000_000).is_err());
    assert!(key_from_pem(b"garbage", now).is_err());
}

#[test]
fn cert_urls_outside_paypal_are_refused() {
    for ok in [
        "https://api.paypal.com/v1/notifications/certs/CERT-360caa42",
        "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        "https://api-m.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77",
    ] {
        assert!(cert_url_allowed(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://api.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com.evil.example/v1/notifications/certs/CERT-1",
        "https://evilpaypal.com/v1/notifications/certs/CERT-1",
        "https://paypal.com@evil.example/v1/notifications/certs/CERT-1",
        "https://user:pw@api.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
        "https://www.paypal.com/signin",
        "https://127.0.0.1/v1/notifications/certs/CERT-1",
        "file:///etc/passwd",
        "not a url",
        "https://slow.paypal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com/v1/notifications/certs/CERT-1?n=2",
        "https://api.paypal.com/v1/notifications/certs/CERT-1#x",
        "https://api.paypal.com/v1/notifications/certs/",
        "https://api.paypal.com/v1/notifications/certs/a/../../../x",
    ] {
        assert!(cert_url_allowed(bad).is_err(), "{bad}");
    }
}

/// A local stand-in for PayPal's certificate host: `/cert` serves a certificate, `/moved`
/// redirects to it, `/big` is larger than any chain, `/hang` never answers, `/broken` fails.
/// Answers its base URL and how many requests each of `/cert` and `/broken` got.
async fn cert_host() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (certs, broken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, b) = (certs.clone(), broken.clone());
    let app = axum::Router::new()
        .route(
            "/cert",
            get(move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { include_str!("../../../tests/fixtures/paypal/cert.pem") }
            }),
        )
        .route(
            "/moved",
            get(|| async { axum::response::Redirect::temporary("/cert") }),
        )
        .route("/big", get(|| async { "A".repeat(CERT_MAX_BYTES + 1) }))
        .route("/hang", get(std::future::pending::<&'static str>))
        .route(
            "/broken",
            get(move || {
                b.fetch_add(1, Ordering::SeqCst);
                async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), certs, broken)
}

/// A client that checks signatures with certificates fetched from their URL.
fn cert_config() -> config::PayPal {
    config::PayPal {
        enabled: true,
        client_id: "id".into(),
        client_secret: "secret".into(),
        webhook_id: "WH-1".into(),
        api_base: "https://api-m.sandbox.paypal.com".into(),
        webhook_verification: PayPalVerification::Certificate,
        webhook_cert_file: String::new(),
        webhook_tolerance_secs: 300,
    }
}

fn cert_client() -> PayPal {
    PayPal::new(&cert_config(), reqwest::Client::new())
}

fn url(base: &str, path: &str) -> url::Url {
    url::Url::parse(&format!("{base}{path}")).expect("url")
}

/// Issue 20.3: a certificate fetch follows no redirect, reads at most [`CERT_MAX_BYTES`] and
/// gives up after its timeout.
#[tokio::test]
async fn a_certificate_fetch_is_bounded() {
    use std::sync::atomic::Ordering;
    let (base, certs, _) = cert_host().await;
    let mut pp = cert_client();
    let now = 1_800_000_000;
    assert!(pp.key_at(&url(&base, "/cert"), now).await.is_ok());
    assert_eq!(certs.load(Ordering::SeqCst), 1);

    let moved = pp.fetch_cert(&url(&base, "/moved")).await;
    assert!(
        moved.as_ref().is_err_and(|e| e.contains("307")),
        "{moved:?}"
    );
    assert_eq!(
        certs.load(Ordering::SeqCst),
        1,
        "the redirect is not followed"
    );

    let big = pp.fetch_cert(&url(&base, "/big")).await;
    assert!(
        big.as_ref()
            .is_err_and(|e| e.contains(&format!("larger than {CERT_MAX_BYTES} bytes"))),
        "{big:?}"
    );

    // The engine's timeout is seconds; this client's is short so the test is too. The host
    // never answers, so only the timeout can end the fetch.
    pp.cert_http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let hung = tokio::time::timeout(Duration::from_secs(30), pp.fetch_cert(&url(&base, "/hang")))
        .await
        .expect("the fetch's own timeout ends it");
    assert!(hung.is_err(), "{hung:?}");
}

/// Issue 20.3: a failed fetch is answered from memory for a while (a burst of forged
/// webhooks naming a broken URL costs one request), then tried again.
#[tokio::test]
async fn a_failed_certificate_fetch_is_remembered_briefly() {
    use std::sync::atomic::Ordering;
    let (base, _, broken) = cert_host().await;
    let pp = cert_client();
    let at = url(&base, "/broken");
    let first = pp.key_at(&at, 1_800_000_000).await;
    let again = pp.key_at(&at, 1_800_000_000).await;
    for r in [&first, &again] {
        assert!(
            matches!(r, Err(WebhookError::Unavailable(why)) if why.contains("HTTP 500")),
            "{r:?}"
        );
    }
    assert_eq!(
        broken.load(Ordering::SeqCst),
        1,
        "the failure was remembered"
    );
    // Once the memory has lapsed, the next webhook fetches again.
    pp.failed_fetches
        .lock()
        .expect("failures")
        .values_mut()
        .for_each(|(until, _)| *until = Instant::now());
    assert!(pp.key_at(&at, 1_800_000_000).await.is_err());
    assert_eq!(broken.load(Ordering::SeqCst), 2);
}

/// Issue 20.3: many webhooks naming one new certificate at once download it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_certificate_fetch_at_a_time() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let (base, certs, _) = cert_host().await;
    let pp = Arc::new(cert_client());
    let at = url(&base, "/cert");
    let n = 16;
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (pp, gate, at) = (pp.clone(), gate.clone(), at.clone());
            tokio::spawn(async move {
                gate.wait().await;
                pp.key_at(&at, 1_800_000_000).await
            })
        })
        .collect();
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.expect("task").expect("key"));
    }
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        certs.load(Ordering::SeqCst),
        1,
        "fetched once for {n} webhooks"
    );
}
