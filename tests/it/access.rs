//! The buyer's access cookie: a paid order is exchanged for it, it reads back on the next
//! visit and at any intake with the same key, a cookie the client altered is refused, and a
//! refund revokes access at the next read.

use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(a_paid_order_buys_a_cookie_that_a_refund_empties);

async fn activate(app: &TestApp, order_id: &str) -> (u16, Option<String>, Value) {
    let r = app
        .http
        .post(format!("{}/api/entitlements/activate", app.url))
        .json(&json!({"order_id": order_id}))
        .send()
        .await
        .expect("activate");
    let status = r.status().as_u16();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, set, r.json().await.unwrap_or(Value::Null))
}

async fn me(app: &TestApp, url: &str, cookie: Option<&str>) -> (u16, Value) {
    let mut r = app.http.get(format!("{url}/api/entitlements/me"));
    if let Some(c) = cookie {
        r = r.header("cookie", format!("theme=dark; {c}"));
    }
    let r = r.send().await.expect("me");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn features(v: &Value) -> Vec<String> {
    v["access"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| s(&a["feature"]).to_owned())
        .collect()
}

async fn a_paid_order_buys_a_cookie_that_a_refund_empties(backend: Backend) {
    let mut app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (order, co) = app.seat_checkout("pass@example.com", 1, "stripe").await;
    let (status, _, e) = activate(&app, &order).await;
    assert_eq!((status, s(&e["error"]["code"])), (409, "not_paid"), "{e}");
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&order, &["fulfilled"]).await;

    let (status, set, body) = activate(&app, &order).await;
    assert_eq!(status, 200, "{body}");
    let set = set.expect("Set-Cookie");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=2592000",
    ] {
        assert!(set.split("; ").any(|a| a == attr), "{attr} in {set}");
    }
    assert_eq!(features(&body), ["conference-pass"]);
    let cookie = set.split(';').next().expect("name=value").to_owned();

    let (status, mine) = me(&app, &app.url, Some(&cookie)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["customer_email"], "pass@example.com");
    assert_eq!(features(&mine), ["conference-pass"]);
    // No cookie, or one the client altered (another buyer, the old signature): no access.
    let (status, e) = me(&app, &app.url, None).await;
    assert_eq!((status, s(&e["error"]["code"])), (401, "no_access"));
    let (name_payload, sig) = cookie.split_once('.').expect("payload.signature");
    let (name, _) = name_payload.split_once('=').expect("name=payload");
    use base64::Engine as _;
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"email":"someone@example.com","exp":99999999999999}"#);
    let (status, _) = me(&app, &app.url, Some(&format!("{name}={other}.{sig}"))).await;
    assert_eq!(status, 401, "a re-signed payload is refused");
    let (status, _) = me(&app, &app.url, Some(&format!("{cookie}x"))).await;
    assert_eq!(status, 401, "a changed signature is refused");

    // The next visit, after a restart; and another engine with the same key.
    app.restart_engine().await;
    let (status, mine) = me(&app, &app.url, Some(&cookie)).await;
    assert_eq!(
        (status, features(&mine)),
        (200, vec!["conference-pass".to_owned()])
    );
    let other = app.start_another_engine().await;
    let (status, _) = me(&app, &other, Some(&cookie)).await;
    assert_eq!(status, 200);

    // A refund revokes access at the next read, with the same cookie.
    let r = app
        .http
        .post(format!("{}/api/payments/refund", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"order_id": order}))
        .send()
        .await
        .expect("refund");
    assert_eq!(r.status(), 201);
    app.wait_for(&order, &["refunded"]).await;
    let (status, mine) = me(&app, &app.url, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(features(&mine), Vec::<String>::new(), "{mine}");
    let (status, _, e) = activate(&app, &order).await;
    assert_eq!((status, s(&e["error"]["code"])), (409, "not_paid"), "{e}");
    app.finish().await;
}
