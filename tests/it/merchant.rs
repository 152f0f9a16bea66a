//! Webhooks to the merchant's systems, received by a real HTTP server in the test that
//! checks every signature with its own HMAC code (the walk-through checks them with the
//! Standard Webhooks library from PyPI too): each event reaches each subscribed, enabled
//! endpoint under one `webhook-id`; a receiver that is down gets it later under the same id;
//! a rotated secret signs beside the new one; a delivery out of retries is dead until an
//! admin retries it; an endpoint failing too long is disabled; targets the guard refuses are
//! never reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::harness::{Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    each_event_reaches_each_subscriber_once_signed,
    a_receiver_down_three_times_gets_the_fourth_under_the_same_id,
    a_rotated_secret_signs_beside_the_new_one,
    a_delivery_out_of_retries_is_dead_until_an_admin_retries_it,
    an_endpoint_failing_too_long_is_disabled_until_enabled,
    a_dead_step_and_its_review_are_told,
    targets_the_guard_refuses_are_never_reached,
    a_configured_endpoint_follows_its_configuration,
    the_cli_manages_endpoints_and_shows_deliveries,
    a_failed_payment_is_told,
    a_delivery_whose_sender_died_is_sent_again,
    endpoint_changes_secret_reads_and_purges_are_audited,
);

/// What the receiver got: `webhook-id`, `webhook-timestamp`, `webhook-signature`, body.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }

    /// Whether one of the `v1` signatures is `secret`'s, computed here.
    fn signed_by(&self, secret: &str) -> bool {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64 secret");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        self.signature
            .split(' ')
            .any(|v| v.strip_prefix("v1,") == Some(want.as_str()))
    }
}

/// A merchant's receiver on a free local port: answers the first `fail_first` requests with
/// `status` (and `Location: /elsewhere`, which counts what reaches it), then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    redirected: Arc<AtomicUsize>,
}

async fn receiver(fail_first: usize, status: StatusCode) -> Receiver {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let fail = Arc::new(AtomicUsize::new(fail_first));
    let (g, f) = (got.clone(), fail.clone());
    let redirected = Arc::new(AtomicUsize::new(0));
    let r = redirected.clone();
    let app = axum::Router::new()
        .route(
            "/elsewhere",
            axum::routing::post(move || {
                r.fetch_add(1, Ordering::SeqCst);
                async { "followed" }
            }),
        )
        .route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, f) = (g.clone(), f.clone());
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    g.lock().await.push(Got {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let failing = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        (status, [("location", "/elsewhere")], "not now")
                    } else {
                        (StatusCode::OK, [("cache-control", "no-store")], "ok")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        got,
        redirected,
    }
}

impl Receiver {
    async fn got(&self) -> Vec<Got> {
        self.got.lock().await.clone()
    }

    /// Waits until the receiver has got `n` requests.
    async fn until(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got().await;
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {n}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The settings every test here runs with: the receiver is on loopback, and retries come
/// quickly.
const FAST: [(&str, &str); 2] = [
    ("FULFILLD__MERCHANT_WEBHOOKS__ALLOW_PRIVATE", "true"),
    (
        "FULFILLD__MERCHANT_WEBHOOKS__RETRY_SCHEDULE",
        "10ms 10ms 10ms 10ms",
    ),
];

async fn app_with(backend: Backend, more: &[(&str, &str)]) -> TestApp {
    let mut extra = FAST.to_vec();
    extra.extend_from_slice(more);
    let app = spawn(backend, &extra).await;
    app.put_sku("SEAT", 1000, 10).await;
    app
}

/// Adds an endpoint; its id and secret.
async fn endpoint(app: &TestApp, url: &str, types: Value) -> (String, String) {
    let (status, ep) = app
        .admin(
            "POST",
            "/api/admin/webhook-endpoints",
            Some(json!({"url": url, "event_types": types, "description": "warehouse"})),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    (s(&ep["id"]).to_owned(), s(&ep["secret"]).to_owned())
}

/// A paid and fulfilled order.
async fn fulfilled(app: &TestApp) -> String {
    let (order, co) = app.seat_checkout("erp@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&order, &["fulfilled"]).await;
    order
}

/// Waits until every delivery is delivered or dead; all of them.
async fn settled(app: &TestApp) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, list) = app
            .admin("GET", "/api/admin/webhook-deliveries", None)
            .await;
        assert_eq!(status, 200, "{list}");
        let all = list["deliveries"].as_array().expect("deliveries").clone();
        if all
            .iter()
            .all(|d| d["status"] == "delivered" || d["status"] == "dead")
        {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never settled: {list}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn each_event_reaches_each_subscriber_once_signed(backend: Backend) {
    // One delivery in flight at a time: the others wait for its slot.
    let app = app_with(
        backend,
        &[("FULFILLD__MERCHANT_WEBHOOKS__CONCURRENCY", "1")],
    )
    .await;
    let (all, all_rx) = (receiver(0, StatusCode::OK).await, "*");
    let refunds = receiver(0, StatusCode::OK).await;
    let off = receiver(0, StatusCode::OK).await;
    let (_, all_secret) = endpoint(&app, &all.url, json!([all_rx])).await;
    let (_, refunds_secret) = endpoint(&app, &refunds.url, json!(["order.refunded"])).await;
    let (off_id, _) = endpoint(&app, &off.url, json!(["*"])).await;
    let (status, ep) = app
        .admin(
            "PATCH",
            &format!("/api/admin/webhook-endpoints/{off_id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!((status, &ep["enabled"]), (200, &json!(false)), "{ep}");

    let order = fulfilled(&app).await;
    let r = app
        .http
        .post(format!("{}/api/payments/refund", app.url))
        .bearer_auth(crate::harness::ADMIN_TOKEN)
        .json(&json!({"order_id": order, "reason": "returned"}))
        .send()
        .await
        .expect("refund");
    assert_eq!(r.status(), 201);
    app.wait_for(&order, &["refunded"]).await;

    let got = all.until(3).await;
    let settled = settled(&app).await;
    assert_eq!(
        settled.len(),
        4,
        "3 to one endpoint, 1 to the other: {settled:?}"
    );
    let mut types: Vec<String> = got
        .iter()
        .map(|g| s(&g.json()["type"]).to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["order.fulfilled", "order.paid", "order.refunded"]);
    for g in &got {
        assert!(g.signed_by(&all_secret), "{g:?}");
        assert!(!g.signed_by(&refunds_secret), "another endpoint's secret");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let age = now - g.timestamp.parse::<i64>().expect("seconds");
        assert!((0..60).contains(&age), "a timestamp of now: {g:?}");
        let v = g.json();
        assert_eq!(v["data"]["order"]["id"], order.as_str(), "{v}");
        assert!(g.id.starts_with("msg_"), "{g:?}");
    }
    let ids: std::collections::BTreeSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "one webhook-id per event");
    let paid = got
        .iter()
        .map(Got::json)
        .find(|v| v["type"] == "order.paid")
        .expect("order.paid");
    assert_eq!(paid["data"]["payment"]["provider"], "stripe", "{paid}");
    assert_eq!(paid["data"]["order"]["items"][0]["sku"], "SEAT", "{paid}");
    let refunded = got
        .iter()
        .map(Got::json)
        .find(|v| v["type"] == "order.refunded")
        .expect("order.refunded");
    assert_eq!(
        refunded["data"]["order"]["status"], "refunded",
        "{refunded}"
    );
    assert_eq!(refunded["data"]["refund"]["full"], true, "{refunded}");

    // The refunds-only endpoint heard of the refund alone, under the same webhook-id.
    let theirs = refunds.until(1).await;
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0].json()["type"], "order.refunded");
    assert!(theirs[0].signed_by(&refunds_secret));
    let same = got
        .iter()
        .find(|g| g.json()["type"] == "order.refunded")
        .expect("refund");
    assert_eq!(theirs[0].id, same.id);
    // The disabled endpoint: nothing queued, nothing sent.
    assert!(
        settled.iter().all(|d| d["endpoint_id"] != off_id.as_str()),
        "{settled:?}"
    );
    assert!(off.got().await.is_empty());
    app.finish().await;
}

async fn a_receiver_down_three_times_gets_the_fourth_under_the_same_id(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let rx = receiver(3, StatusCode::SERVICE_UNAVAILABLE).await;
    let (ep, _) = endpoint(&app, &rx.url, json!(["order.paid"])).await;
    let order = fulfilled(&app).await;
    let got = rx.until(4).await;
    let settled = settled(&app).await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0]["status"], "delivered", "{settled:?}");
    assert!(got.iter().all(|g| g.id == got[0].id), "{got:?}");
    assert!(got.iter().all(|g| g.body == got[0].body), "the same body");
    let (_, d) = app
        .admin(
            "GET",
            &format!("/api/admin/webhook-deliveries/{}", settled[0]["id"]),
            None,
        )
        .await;
    let codes: Vec<i64> = d["attempt_log"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].as_i64().expect("a status"))
        .collect();
    assert_eq!(codes, [503, 503, 503, 200], "{d}");
    assert_eq!(d["attempt_log"][0]["response"], "not now", "{d}");
    assert_eq!(d["payload"]["type"], "order.paid", "{d}");
    assert_eq!(d["attempts"], 4);
    let text = crate::observability::scrape(&app).await;
    for (outcome, n) in [("retry", 3), ("delivered", 1)] {
        let series = format!(
            "fulfilld_merchant_webhook_attempt_seconds_count{{event=\"order.paid\",outcome=\"{outcome}\"}} {n}"
        );
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
    // The order's record tells it too.
    let (_, rec) = app
        .admin("GET", &format!("/api/admin/orders/{order}"), None)
        .await;
    assert_eq!(rec["merchant_webhooks"][0]["status"], "delivered", "{rec}");
    let told = format!(
        "order.paid to {ep} ({}): delivered after 4 attempt(s)",
        got[0].id
    );
    assert!(
        rec["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|m| m["detail"] == told.as_str()),
        "{told} in {rec}"
    );
    app.finish().await;
}

async fn a_rotated_secret_signs_beside_the_new_one(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let rx = receiver(0, StatusCode::OK).await;
    let (id, old) = endpoint(&app, &rx.url, json!(["order.paid"])).await;
    let (status, r) = app
        .admin(
            "POST",
            &format!("/api/admin/webhook-endpoints/{id}/rotate-secret"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let new = s(&r["secret"]).to_owned();
    assert_ne!(new, old);
    let (_, shown) = app
        .admin(
            "GET",
            &format!("/api/admin/webhook-endpoints/{id}/secret"),
            None,
        )
        .await;
    assert_eq!(
        (s(&shown["secret"]), s(&shown["previous_secret"])),
        (new.as_str(), old.as_str())
    );
    fulfilled(&app).await;
    let got = rx.until(1).await;
    assert_eq!(got[0].signature.split(' ').count(), 2, "{got:?}");
    assert!(got[0].signed_by(&new) && got[0].signed_by(&old), "{got:?}");
    // The grace over (no grace at all): the new secret alone.
    app.admin(
        "POST",
        &format!("/api/admin/webhook-endpoints/{id}/rotate-secret"),
        Some(json!({"grace": "0s"})),
    )
    .await;
    let (_, shown) = app
        .admin(
            "GET",
            &format!("/api/admin/webhook-endpoints/{id}/secret"),
            None,
        )
        .await;
    let newest = s(&shown["secret"]).to_owned();
    assert!(shown["previous_secret"].is_null(), "{shown}");
    fulfilled(&app).await;
    let got = rx.until(2).await;
    assert_eq!(got[1].signature.split(' ').count(), 1, "{got:?}");
    assert!(got[1].signed_by(&newest) && !got[1].signed_by(&new));
    app.finish().await;
}

async fn a_delivery_out_of_retries_is_dead_until_an_admin_retries_it(backend: Backend) {
    let app = app_with(backend, &[]).await;
    // Four waits: five attempts, all answered with a redirect, which is never followed.
    let rx = receiver(5, StatusCode::TEMPORARY_REDIRECT).await;
    endpoint(&app, &rx.url, json!(["order.paid"])).await;
    fulfilled(&app).await;
    let settled_once = settled(&app).await;
    assert_eq!(settled_once[0]["status"], "dead", "{settled_once:?}");
    assert_eq!(settled_once[0]["last_error"], "answered 307");
    assert_eq!(rx.got().await.len(), 5);
    assert_eq!(
        rx.redirected.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    let id = settled_once[0]["id"].as_i64().expect("id");
    let (status, e) = app
        .admin("POST", "/api/admin/webhook-deliveries/999999/retry", None)
        .await;
    assert_eq!((status, s(&e["error"]["code"])), (404, "not_found"), "{e}");
    let (status, r) = app
        .admin(
            "POST",
            &format!("/api/admin/webhook-deliveries/{id}/retry"),
            Some(json!({"reason": "ERP back up"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let got = rx.until(6).await;
    assert!(got.iter().all(|g| g.id == got[0].id));
    let after = settled(&app).await;
    assert_eq!(after[0]["status"], "delivered", "{after:?}");
    assert_eq!(after[0]["attempts"], 6);
    let (status, e) = app
        .admin(
            "POST",
            &format!("/api/admin/webhook-deliveries/{id}/retry"),
            None,
        )
        .await;
    assert_eq!((status, s(&e["error"]["code"])), (409, "not_dead"), "{e}");
    let audited = app
        .count(
            "SELECT COUNT(*) FROM admin_actions WHERE action = 'delivery.retry' AND target = $1",
            &id.to_string(),
        )
        .await;
    assert_eq!(audited, 1);
    app.finish().await;
}

async fn an_endpoint_failing_too_long_is_disabled_until_enabled(backend: Backend) {
    // Failing "for 0 s" is failing too long: the first failure disables it.
    let app = app_with(
        backend,
        &[("FULFILLD__MERCHANT_WEBHOOKS__DISABLE_AFTER", "0s")],
    )
    .await;
    let rx = receiver(1, StatusCode::BAD_GATEWAY).await;
    let (id, _) = endpoint(&app, &rx.url, json!(["order.paid"])).await;
    fulfilled(&app).await;
    let first = settled(&app).await;
    assert_eq!(first[0]["status"], "dead", "{first:?}");
    let (_, ep) = app
        .admin("GET", &format!("/api/admin/webhook-endpoints/{id}"), None)
        .await;
    assert_eq!(ep["enabled"], false, "{ep}");
    assert!(
        s(&ep["disabled_reason"]).starts_with("every attempt failed since"),
        "{ep}"
    );
    // Disabled: the next order is not even queued for it.
    fulfilled(&app).await;
    assert_eq!(settled(&app).await.len(), 1);
    assert_eq!(rx.got().await.len(), 1);
    // Enabled again by an admin, who retries what it missed.
    let (status, ep) = app
        .admin(
            "PATCH",
            &format!("/api/admin/webhook-endpoints/{id}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{ep}");
    assert!(
        ep["disabled_reason"].is_null() && ep["failing_since"].is_null(),
        "{ep}"
    );
    let dead = first[0]["id"].as_i64().expect("id");
    app.admin(
        "POST",
        &format!("/api/admin/webhook-deliveries/{dead}/retry"),
        None,
    )
    .await;
    rx.until(2).await;
    assert_eq!(settled(&app).await[0]["status"], "delivered");
    fulfilled(&app).await;
    rx.until(3).await;
    app.finish().await;
}

async fn a_dead_step_and_its_review_are_told(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let rx = receiver(0, StatusCode::OK).await;
    endpoint(&app, &rx.url, json!(["step.dead", "order.needs_review"])).await;
    let (order, co) = app.seat_checkout("short@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({"amount_total": 999}))
        .await;
    app.wait_for(&order, &["needs_review"]).await;
    let got = rx.until(2).await;
    let by_type = |t: &str| {
        got.iter()
            .map(Got::json)
            .find(|v| v["type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {got:?}"))
    };
    let dead = by_type("step.dead");
    assert_eq!(dead["data"]["step"]["kind"], "confirm_capture", "{dead}");
    assert!(
        s(&dead["data"]["step"]["error"]).contains("amount mismatch"),
        "{dead}"
    );
    assert_eq!(
        by_type("order.needs_review")["data"]["order"]["status"],
        "needs_review"
    );
    app.finish().await;
}

async fn targets_the_guard_refuses_are_never_reached(backend: Backend) {
    // The default: no private targets.
    let app = spawn(
        backend,
        &[("FULFILLD__MERCHANT_WEBHOOKS__RETRY_SCHEDULE", "")],
    )
    .await;
    app.put_sku("SEAT", 1000, 10).await;
    let rx = receiver(0, StatusCode::OK).await;
    for (url, why) in [
        (rx.url.clone(), "non-public"),
        ("http://10.0.0.8/hooks".to_owned(), "non-public"),
        ("http://[::1]:9/hooks".to_owned(), "non-public"),
        ("ftp://example.com/hooks".to_owned(), "only http and https"),
        ("http://user:pw@example.com/hooks".to_owned(), "credentials"),
        ("not a url".to_owned(), "not a URL"),
    ] {
        let (status, e) = app
            .admin(
                "POST",
                "/api/admin/webhook-endpoints",
                Some(json!({"url": url, "event_types": ["*"]})),
            )
            .await;
        assert_eq!(
            (status, s(&e["error"]["field"])),
            (422, "url"),
            "{url}: {e}"
        );
        assert!(s(&e["error"]["message"]).contains(why), "{url}: {e}");
    }
    for (types, why) in [
        (json!([]), "at least one"),
        (json!(["order.shipped"]), "no event type"),
    ] {
        let (status, e) = app
            .admin(
                "POST",
                "/api/admin/webhook-endpoints",
                Some(json!({"url": "https://example.com/hooks", "event_types": types})),
            )
            .await;
        assert_eq!(
            (status, s(&e["error"]["field"])),
            (422, "event_types"),
            "{e}"
        );
        assert!(s(&e["error"]["message"]).contains(why), "{e}");
    }
    // A name is checked as it resolves: localhost is loopback, so nothing is sent.
    let port = rx.url.rsplit(':').next().expect("port").to_owned();
    let named = format!("http://localhost:{port}");
    endpoint(&app, &named, json!(["order.paid"])).await;
    fulfilled(&app).await;
    let settled = settled(&app).await;
    assert_eq!(
        settled[0]["status"], "dead",
        "no retries configured: {settled:?}"
    );
    let (_, d) = app
        .admin(
            "GET",
            &format!("/api/admin/webhook-deliveries/{}", settled[0]["id"]),
            None,
        )
        .await;
    let log = &d["attempt_log"][0];
    assert!(log["status_code"].is_null(), "{d}");
    assert!(s(&log["response"]).contains("non-public"), "{d}");
    assert!(rx.got().await.is_empty(), "the receiver was reached");
    app.finish().await;
}

/// An endpoint kept by configuration (its secret from the environment): sent to like any
/// other; a new secret there is a rotation, the old one signing beside it.
async fn a_configured_endpoint_follows_its_configuration(backend: Backend) {
    let rx = receiver(0, StatusCode::OK).await;
    let first = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let url = rx.url.clone();
    let mut app = app_with(
        backend,
        &[
            ("FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__URL", &url),
            (
                "FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__EVENT_TYPES",
                "order.paid,order.refunded",
            ),
            ("FULFILLD__MERCHANT_WEBHOOKS__ENDPOINTS__ERP__SECRET", first),
        ],
    )
    .await;
    let (_, ep) = app
        .admin("GET", "/api/admin/webhook-endpoints/ep_cfg_erp", None)
        .await;
    assert_eq!(
        ep["event_types"],
        json!(["order.paid", "order.refunded"]),
        "{ep}"
    );
    assert_eq!(ep["enabled"], true);
    fulfilled(&app).await;
    let got = rx.until(1).await;
    assert!(got[0].signed_by(first), "{got:?}");
    assert_eq!(got[0].json()["type"], "order.paid");

    // A new secret in the configuration, and a restart.
    let second = "whsec_c2Vjb25kLXNlY3JldC1vZi0zMi1ieXRlcy1sb25n";
    if let Some(e) = app.config.merchant_webhooks.endpoints.get_mut("erp") {
        e.secret = second.into();
    }
    app.restart_engine().await;
    // (The sandbox's webhooks still go to the old address: the browser's verify call tells.)
    let (order, co) = app.seat_checkout("erp@example.com", 1, "stripe").await;
    let session = s(&co["provider_order_id"]).to_owned();
    app.pay(&session, json!({"webhook": "none"})).await;
    let (status, v) = app.verify(&order, &session).await;
    assert_eq!(status, 200, "{v}");
    let got = rx.until(2).await;
    assert!(
        got[1].signed_by(second) && got[1].signed_by(first),
        "{got:?}"
    );
    app.finish().await;
}

async fn the_cli_manages_endpoints_and_shows_deliveries(backend: Backend) {
    use crate::admin::cli;
    let app = app_with(backend, &[]).await;
    let rx = receiver(1, StatusCode::INTERNAL_SERVER_ERROR).await;
    let added = cli(
        &app,
        &[
            "webhooks",
            "add",
            &rx.url,
            "--events",
            "order.paid,order.refunded",
        ],
    )
    .await;
    let field = |name: &str| {
        added
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in {added}"))
            .to_owned()
    };
    let (id, secret) = (field("endpoint"), field("secret"));
    let listed = cli(&app, &["webhooks", "list"]).await;
    let row = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{listed}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols[1..4],
        ["true", "order.paid,order.refunded", rx.url.as_str()],
        "{listed}"
    );
    fulfilled(&app).await;
    let got = rx.until(2).await;
    assert!(got.iter().all(|g| g.signed_by(&secret)));
    settled(&app).await;
    let shown = cli(&app, &["webhooks", "deliveries", "--status", "delivered"]).await;
    let paid = shown
        .lines()
        .find(|l| l.contains("order.paid"))
        .unwrap_or_else(|| panic!("{shown}"));
    let delivery = paid.split_whitespace().next().expect("id").to_owned();
    let log = cli(&app, &["webhooks", "show", &delivery]).await;
    let statuses: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("ATTEMPT"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(statuses, ["500", "200"], "{log}");
    cli(&app, &["webhooks", "disable", &id]).await;
    let listed = cli(&app, &["webhooks", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains(" false ")),
        "{listed}"
    );
    app.finish().await;
}

async fn a_failed_payment_is_told(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let rx = receiver(0, StatusCode::OK).await;
    endpoint(&app, &rx.url, json!(["order.payment_failed"])).await;
    let (order, co) = app.seat_checkout("gone@example.com", 1, "stripe").await;
    app.expire_session(s(&co["provider_order_id"])).await;
    app.wait_for(&order, &["payment_failed"]).await;
    let got = rx.until(1).await;
    let v = got[0].json();
    assert_eq!(v["type"], "order.payment_failed", "{v}");
    assert_eq!(v["data"]["order"]["id"], order.as_str());
    assert_eq!(v["data"]["order"]["status"], "payment_failed");
    assert_eq!(settled(&app).await.len(), 1, "nothing else was subscribed");
    app.finish().await;
}

/// A sender that died mid-send leaves its delivery `sending` under a lease; once the lease
/// runs out another look sends it again, under the same webhook-id.
async fn a_delivery_whose_sender_died_is_sent_again(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let rx = receiver(0, StatusCode::OK).await;
    endpoint(&app, &rx.url, json!(["order.paid"])).await;
    fulfilled(&app).await;
    let first = rx.until(1).await;
    let id = settled(&app).await[0]["id"].as_i64().expect("id");
    // As a sender that claimed it and died would have left it.
    sqlx::query(
        "UPDATE merchant_deliveries SET status = 'sending', lease_token = 'lease_of_the_dead',
             lease_until = $1 WHERE id = $2",
    )
    .bind(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
            - 1,
    )
    .bind(id)
    .execute(&app.store.pool)
    .await
    .expect("a lost lease");
    let again = rx.until(2).await;
    assert_eq!(again[1].id, first[0].id, "the same webhook-id");
    let after = settled(&app).await;
    assert_eq!(
        (&after[0]["status"], &after[0]["attempts"]),
        (&json!("delivered"), &json!(2))
    );
    app.finish().await;
}

/// Issue 20.6: every endpoint change, each read of its secret and a queue purge writes one
/// audit row (in the effect's own transaction), under the token's name with the caller's
/// named person beside it; a refused change writes none.
async fn endpoint_changes_secret_reads_and_purges_are_audited(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (id, _) = endpoint(&app, "http://127.0.0.1:9/hook", json!(["order.paid"])).await;
    let path = format!("/api/admin/webhook-endpoints/{id}");
    for change in [json!({"description": "erp"}), json!({"enabled": false})] {
        let (status, r) = app.admin("PATCH", &path, Some(change)).await;
        assert_eq!(status, 200, "{r}");
    }
    let (status, r) = app
        .admin(
            "POST",
            &format!("{path}/rotate-secret"),
            Some(json!({"grace": "0s"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = app.admin("GET", &format!("{path}/secret"), None).await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = app
        .admin(
            "POST",
            "/api/admin/queue/purge",
            Some(json!({"reason": "drill"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    // Refused: no such endpoint, a field it does not have. Nothing is recorded for them.
    let (status, _) = app
        .admin(
            "PATCH",
            "/api/admin/webhook-endpoints/ep_nope",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .admin("PATCH", &path, Some(json!({"colour": "red"})))
        .await;
    assert_eq!(status, 422);

    let (status, log) = app.admin("GET", "/api/admin/audit?actor=admin", None).await;
    assert_eq!(status, 200, "{log}");
    let rows: Vec<(&str, &str, &str)> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|a| s(&a["action"]).starts_with("endpoint.") || a["action"] == "queue.purge")
        .map(|a| {
            assert_eq!(a["said_by"], "test-operator", "{a}");
            (
                s(&a["action"]),
                s(&a["target"]),
                a["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("queue.purge", "queue", "drill"),
            ("endpoint.read_secret", id.as_str(), ""),
            ("endpoint.rotate_secret", id.as_str(), ""),
            ("endpoint.disable", id.as_str(), ""),
            ("endpoint.update", id.as_str(), ""),
            ("endpoint.create", id.as_str(), "http://127.0.0.1:9/hook"),
        ],
        "{log:#}"
    );
    app.finish().await;
}
