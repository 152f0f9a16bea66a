use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_load_and_env_overrides_nest() {
    let c = Config::load_from(None, &[], false).expect("defaults are valid");
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:8080");
    assert!(c.store.url.starts_with("sqlite://data/"));
    let c = Config::load_from(
        None,
        &env(&[
            ("FULFILLD__HTTP__ADDR", "127.0.0.1:9000"),
            (
                "FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS",
                "whsec_new,whsec_old",
            ),
            ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_test_x"),
            ("FULFILLD__QUEUE__CONCURRENCY", "3"),
        ]),
        false,
    )
    .expect("valid overrides");
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:9000");
    assert_eq!(
        c.providers.stripe.webhook_secrets,
        vec!["whsec_new", "whsec_old"]
    );
    assert_eq!(c.providers.stripe.secret_key, "sk_test_x");
    assert_eq!(c.queue.concurrency, 3);
}

#[test]
fn named_admin_tokens_are_checked() {
    let load = |pairs: &[(&str, &str)]| Config::load_from(None, &env(pairs), false);
    let c = load(&[
        (
            "FULFILLD__ADMIN__TOKENS__OPS__TOKEN",
            "ops-token-0123456789",
        ),
        ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "read"),
    ])
    .expect("a named token");
    assert_eq!(c.admin.tokens["ops"].role, AdminRole::Read);
    assert!(!format!("{c:?}").contains("ops-token"), "never printed");
    for (pairs, key) in [
        (
            vec![
                ("FULFILLD__ADMIN__TOKENS__OPS__TOKEN", "short"),
                ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "read"),
            ],
            "admin.tokens.ops.token",
        ),
        (
            vec![
                (
                    "FULFILLD__ADMIN__TOKENS__ADMIN__TOKEN",
                    "ops-token-0123456789",
                ),
                ("FULFILLD__ADMIN__TOKENS__ADMIN__ROLE", "read"),
            ],
            "admin.tokens.admin",
        ),
        (
            vec![
                ("FULFILLD__ADMIN__TOKEN", "ops-token-0123456789"),
                (
                    "FULFILLD__ADMIN__TOKENS__OPS__TOKEN",
                    "ops-token-0123456789",
                ),
                ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "operate"),
            ],
            "admin.tokens.ops.token",
        ),
        (
            vec![
                (
                    "FULFILLD__ADMIN__TOKENS__OPS__TOKEN",
                    "ops-token-0123456789",
                ),
                ("FULFILLD__ADMIN__TOKENS__OPS__ROLE", "root"),
            ],
            "role",
        ),
    ] {
        let err = load(&pairs).expect_err(key).to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn trusted_proxies_are_a_count_or_networks() {
    let load = |v: &str| {
        Config::load_from(None, &env(&[("FULFILLD__HTTP__TRUSTED_PROXIES", v)]), false)
            .map(|c| c.http.trusted_proxies)
    };
    let defaults = Config::load_from(None, &[], false).expect("defaults");
    assert_eq!(defaults.http.trusted_proxies, TrustedProxies::Count(1));
    assert_eq!(load("2").expect("a count"), TrustedProxies::Count(2));
    let nets = load("10.0.0.0/8, 192.0.2.7,2001:db8::/32").expect("networks");
    assert_eq!(
        nets,
        TrustedProxies::Nets(vec![
            "10.0.0.0/8".parse().expect("net"),
            "192.0.2.7/32".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ])
    );
    for bad in ["0", "33", "proxy.example", "10.0.0.0/99", "1,10.0.0.0/8"] {
        let err = load(bad).expect_err(bad).to_string();
        assert!(
            err.contains("trusted_proxies") || err.contains("count"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn bad_settings_name_their_key() {
    for (k, v, key) in [
        ("FULFILLD__HTTP__ADDR", "nonsense", "http.addr"),
        ("FULFILLD__QUEUE__CONCURRENCY", "many", "concurrency"),
        ("FULFILLD__STORE__URL", "mysql://x", "store.url"),
        ("FULFILLD__EMAIL__TRANSPORT", "pigeon", "email.transport"),
        (
            "FULFILLD__PROVIDERS__STRIPE__SECRET_KEY",
            "",
            "providers.stripe.secret_key",
        ),
        (
            "FULFILLD__PROVIDERS__RAZORPAY__WEBHOOK_SECRET",
            "",
            "providers.razorpay.webhook_secret",
        ),
        (
            "FULFILLD__PROVIDERS__RAZORPAY__API_BASE",
            "nowhere",
            "providers.razorpay.api_base",
        ),
        (
            "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_ID",
            "",
            "providers.paypal.webhook_id",
        ),
        (
            "FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_VERIFICATION",
            "trust_me",
            "webhook_verification",
        ),
        (
            "FULFILLD__PROVIDERS__PAYPAL__API_BASE",
            "https://api-m.paypal.com",
            "providers.paypal.webhook_cert_file",
        ),
    ] {
        let err = Config::load_from(None, &env(&[(k, v)]), false)
            .expect_err(k)
            .to_string();
        assert!(err.contains(key), "{k}={v}: {err}");
    }
}

#[test]
fn merchant_webhook_settings_are_checked() {
    for (k, v, key) in [
        (
            "FULFILLD__MERCHANT_WEBHOOKS__TIMEOUT",
            "soon",
            "merchant_webhooks.timeout",
        ),
        (
            "FULFILLD__MERCHANT_WEBHOOKS__TIMEOUT",
            "0s",
            "merchant_webhooks.timeout",
        ),
        (
            "FULFILLD__MERCHANT_WEBHOOKS__RETRY_SCHEDULE",
            "5s 1w",
            "retry_schedule",
        ),
        (
            "FULFILLD__MERCHANT_WEBHOOKS__DISABLE_AFTER",
            "5",
            "disable_after",
        ),
    ] {
        let err = Config::load_from(None, &env(&[(k, v)]), false)
            .expect_err(k)
            .to_string();
        assert!(err.contains(key), "{k}={v}: {err}");
    }
    let endpoint = |url: &str, types: &str, secret: &str| {
        let e = env(&[
            ("FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__URL", url),
            (
                "FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__EVENT_TYPES",
                types,
            ),
            (
                "FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__SECRET",
                secret,
            ),
        ]);
        Config::load_from(None, &e, false).map_err(|e| e.to_string())
    };
    let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let c = endpoint(
        "https://erp.example.com/h",
        "order.paid order.refunded",
        good,
    )
    .expect("a good endpoint");
    let erp = &c.merchant_webhooks.endpoints["erp"];
    assert_eq!(erp.event_types.items(), ["order.paid", "order.refunded"]);
    assert!(!format!("{c:?}").contains(good), "the secret in Debug");
    for (url, types, secret, key) in [
        ("http://127.0.0.1/h", "*", good, "endpoints.erp.url"),
        (
            "https://erp.example.com/h",
            "order.shipped",
            good,
            "endpoints.erp.event_types",
        ),
        ("https://erp.example.com/h", "*", "", "endpoints.erp.secret"),
        (
            "https://erp.example.com/h",
            "*",
            "whsec_c2hvcnQ=",
            "endpoints.erp.secret",
        ),
    ] {
        let err = endpoint(url, types, secret).expect_err(key);
        assert!(err.contains(key), "{err}");
        assert!(!err.contains(good), "the secret in {err}");
    }
}

#[test]
fn no_sandbox_secret_works_live() {
    let sandbox = Config::load_from(None, &[], false).expect("defaults");
    sandbox
        .refuse_sandbox_secrets_live()
        .expect("the sandbox runs on its own secrets");
    let strong = "0123456789abcdef0123456789abcdef";
    let others = [
        ("FULFILLD__PROVIDERS__RAZORPAY__ENABLED", "false"),
        ("FULFILLD__PROVIDERS__PAYPAL__ENABLED", "false"),
        ("FULFILLD__ADMIN__TOKEN", strong),
        ("FULFILLD__ENTITLEMENTS__COOKIE_SECRET", strong),
    ];
    let live = |extra: &[(&str, &str)]| {
        let mut pairs: Vec<(&str, &str)> = others.to_vec();
        pairs.extend_from_slice(extra);
        Config::load_from(None, &env(&pairs), false)
            .expect("loads")
            .refuse_sandbox_secrets_live()
            .map_err(|e| e.to_string())
    };
    // A live key or a real API base, each with the public sandbox signing secret.
    for extra in [
        &[("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x")][..],
        &[
            ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_test_x"),
            (
                "FULFILLD__PROVIDERS__STRIPE__API_BASE",
                "https://api.stripe.com",
            ),
        ][..],
    ] {
        let err = live(extra).expect_err("whsec_sandbox live");
        assert!(
            err.contains("providers.stripe.webhook_secrets")
                && err.contains("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS"),
            "{err}"
        );
    }
    let stripe_ok = [
        ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x"),
        ("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS", "whsec_real"),
    ];
    live(&stripe_ok).expect("real secrets");
    // The admin token and the cookie secret, each unset, generated or short.
    for (k, v, key) in [
        ("FULFILLD__ADMIN__TOKEN", "", "admin.token"),
        ("FULFILLD__ADMIN__TOKEN", "short", "admin.token"),
        (
            "FULFILLD__ENTITLEMENTS__COOKIE_SECRET",
            "",
            "entitlements.cookie_secret",
        ),
    ] {
        let mut extra = stripe_ok.to_vec();
        extra.push((k, v));
        let err = live(&extra).expect_err(key);
        assert!(err.starts_with(&format!("configuration: {key}")), "{err}");
    }
    let mut off = stripe_ok.to_vec();
    off.extend([
        ("FULFILLD__ADMIN__TOKEN", ""),
        ("FULFILLD__ADMIN__GENERATE_TOKEN", "false"),
    ]);
    live(&off).expect("admin API off is allowed");
    // Razorpay and PayPal, live by key or by host.
    let rzp = Config::load_from(
        None,
        &env(&[
            ("FULFILLD__PROVIDERS__RAZORPAY__KEY_ID", "rzp_live_x"),
            ("FULFILLD__PROVIDERS__STRIPE__ENABLED", "false"),
            ("FULFILLD__PROVIDERS__PAYPAL__ENABLED", "false"),
        ]),
        false,
    )
    .expect("loads")
    .refuse_sandbox_secrets_live()
    .expect_err("rzp_whsec_sandbox live")
    .to_string();
    assert!(rzp.contains("providers.razorpay.webhook_secret"), "{rzp}");
    let pp = Config::load_from(
        None,
        &env(&[
            (
                "FULFILLD__PROVIDERS__PAYPAL__API_BASE",
                "https://api-m.paypal.com",
            ),
            ("FULFILLD__PROVIDERS__PAYPAL__WEBHOOK_CERT_FILE", ""),
            ("FULFILLD__PROVIDERS__STRIPE__ENABLED", "false"),
            ("FULFILLD__PROVIDERS__RAZORPAY__ENABLED", "false"),
        ]),
        false,
    )
    .expect("loads")
    .refuse_sandbox_secrets_live()
    .expect_err("sandbox webhook id live")
    .to_string();
    assert!(pp.contains("providers.paypal.webhook_id"), "{pp}");
    assert!(
        providers::is_loopback_url("http://127.0.0.5:8099")
            && providers::is_loopback_url("http://[::1]:1")
    );
    assert!(!providers::is_loopback_url("http://127.0.0.1.evil.example"));
}

#[test]
fn production_overlay_demands_secrets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.toml");
    let err = Config::load_from(Some(&path), &[], false)
        .expect_err("no secrets")
        .to_string();
    assert!(err.contains("providers.stripe.secret_key"), "{err}");
    let secrets = [
        ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x"),
        ("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS", "whsec_x"),
        ("FULFILLD__EMAIL__SMTP_URL", "smtps://u:p@mail.example:465"),
    ];
    // Without an admin token it starts with the admin API off (nothing generated).
    let off = Config::load_from(Some(&path), &env(&secrets), false).expect("admin off");
    assert!(off.admin.token.is_empty() && !off.admin.generate_token);
    let ok = Config::load_from(
        Some(&path),
        &env(&[
            ("FULFILLD__ADMIN__TOKEN", "t"),
            ("FULFILLD__PROVIDERS__STRIPE__SECRET_KEY", "sk_live_x"),
            ("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS", "whsec_x"),
            ("FULFILLD__EMAIL__SMTP_URL", "smtps://u:p@mail.example:465"),
        ]),
        false,
    )
    .expect("complete production config");
    assert!(ok.sandboxed_providers().is_empty());
    let dbg = format!("{ok:?}");
    assert!(
        !dbg.contains("sk_live_x") && !dbg.contains("u:p@"),
        "secrets leak in Debug"
    );
}
