//! The buyer's access cookie: a paid order is exchanged for it, it reads back on the next
//! visit and at any intake with the same key, a cookie the client altered is refused, and a
//! refund revokes access at the next read. On another device the buyer signs in with an
//! emailed link, which works once.

use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    a_paid_order_buys_a_cookie_that_a_refund_empties,
    a_buyer_signs_in_on_another_device,
    another_buyers_access_takes_more_than_their_order_id_or_address,
    an_order_reads_by_proof,
    buyers_data_files_are_the_engines_alone,
    only_the_buyer_opens_a_checkout_and_its_redirect_proves_the_order,
);

async fn activate(app: &TestApp, order_id: &str) -> (u16, Option<String>, Value) {
    activate_with(app, order_id, &app.buyer_token(order_id), None).await
}

/// `POST /api/entitlements/activate` with this token, and this cookie already held.
async fn activate_with(
    app: &TestApp,
    order_id: &str,
    token: &str,
    cookie: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut r = app
        .http
        .post(format!("{}/api/entitlements/activate", app.url))
        .json(&json!({"order_id": order_id, "buyer_token": token}));
    if let Some(c) = cookie {
        r = r.header("cookie", c);
    }
    let r = r.send().await.expect("activate");
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
    // The order was proven, not the address.
    assert_eq!(mine["customer_email"], Value::Null, "{mine}");
    assert_eq!(mine["orders"], json!([order]));
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

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = app
        .http
        .post(format!("{}{path}", app.url))
        .json(&body)
        .send()
        .await
        .expect(path);
    let status = r.status().as_u16();
    let set = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, set, r.json().await.unwrap_or(Value::Null))
}

/// The text of a message as written by the file transport: its body after the headers,
/// quoted-printable undone (long lines are folded with `=` and `=3D` stands for `=`).
fn eml_text(raw: &str) -> String {
    let body = raw.split_once("\r\n\r\n").map_or(raw, |(_, b)| b);
    let unfolded = body.replace("=\r\n", "");
    let mut out = Vec::new();
    let bytes = unfolded.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the one sign-in email the engine sends after answering; its link's token.
async fn sign_in_token(app: &TestApp, before: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mail = loop {
        let found: Vec<_> = app
            .outbox_files()
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("sign-in-"))
            .collect();
        if found.len() > before {
            assert_eq!(found.len(), before + 1, "{found:?}");
            let newest = found
                .iter()
                .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                .expect("one");
            break std::fs::read_to_string(newest).expect("read eml");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sign-in email arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let text = eml_text(&mail);
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/checkout/sign-in?token="))
        .unwrap_or_else(|| panic!("no link in\n{text}"));
    link.split_once("token=").expect("token").1.to_owned()
}

/// A buyer who paid on one device asks for a link on another (typing the address in another
/// case); an address with no purchases gets the same answer and no link; the link's token
/// buys the access cookie once, and neither a used, an expired nor a made-up token does;
/// an address gets at most `entitlements.sign_in_per_hour` links an hour.
async fn a_buyer_signs_in_on_another_device(backend: Backend) {
    let app = spawn(
        backend,
        &[("FULFILLD__ENTITLEMENTS__SIGN_IN_PER_HOUR", "3")],
    )
    .await;
    app.put_sku("SEAT", 1000, 5).await;
    let (order, co) = app.seat_checkout("Pass@Example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&order, &["fulfilled"]).await;
    let links = "SELECT COUNT(*) FROM sign_in_links WHERE email = $1";

    let (status, _, nobody) = post(
        &app,
        "/api/entitlements/sign-in",
        json!({"email": "nobody@example.com"}),
    )
    .await;
    assert_eq!(status, 202, "{nobody}");
    assert_eq!(
        app.count(links, "nobody@example.com").await,
        0,
        "no link for no purchase"
    );
    let (status, _, asked) = post(
        &app,
        "/api/entitlements/sign-in",
        json!({"email": "pass@example.COM"}),
    )
    .await;
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked, nobody, "the answer tells nobody who bought");
    let (status, _, bad) = post(
        &app,
        "/api/entitlements/sign-in",
        json!({"email": "not an address"}),
    )
    .await;
    assert_eq!(
        (status, s(&bad["error"]["code"])),
        (422, "invalid_field"),
        "{bad}"
    );

    let token = sign_in_token(&app, 0).await;
    let (status, set, body) = post(
        &app,
        "/api/entitlements/sign-in/confirm",
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let set = set.expect("Set-Cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax"] {
        assert!(set.split("; ").any(|a| a == attr), "{attr} in {set}");
    }
    let cookie = set.split(';').next().expect("name=value").to_owned();
    let (status, mine) = me(&app, &app.url, Some(&cookie)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["customer_email"], "pass@example.com");
    assert_eq!(features(&mine), ["conference-pass"]);

    // Used once: never again. Made up: never.
    for t in [token.as_str(), "made-up-token"] {
        let (status, set, e) = post(
            &app,
            "/api/entitlements/sign-in/confirm",
            json!({"token": t}),
        )
        .await;
        assert_eq!(
            (status, s(&e["error"]["code"])),
            (400, "invalid_token"),
            "{e}"
        );
        assert!(set.is_none());
    }
    // A link that has expired.
    post(
        &app,
        "/api/entitlements/sign-in",
        json!({"email": "pass@example.com"}),
    )
    .await;
    let late = sign_in_token(&app, 1).await;
    sqlx::query("UPDATE sign_in_links SET expires_at = 0 WHERE used_at IS NULL")
        .execute(&app.store.pool)
        .await
        .expect("expire links");
    let (status, _, e) = post(
        &app,
        "/api/entitlements/sign-in/confirm",
        json!({"token": late}),
    )
    .await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (400, "invalid_token"),
        "{e}"
    );

    // Two links so far this hour; the cap is 3, however many are asked for.
    for _ in 0..4 {
        let (status, _, _) = post(
            &app,
            "/api/entitlements/sign-in",
            json!({"email": "pass@example.com"}),
        )
        .await;
        assert_eq!(status, 202);
    }
    assert_eq!(app.count(links, "pass@example.com").await, 3);
    app.finish().await;
}

/// The attack of issue 20: an attacker who knows the victim's address and order id buys the
/// cheapest thing under the victim's address in another letter case and activates. The
/// cookie covers the attacker's own order only; the victim's order needs its token; and the
/// address is proven only by the emailed link, which goes to the victim.
async fn another_buyers_access_takes_more_than_their_order_id_or_address(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    app.put_sku("STICKER", 100, 100).await;
    let (victim, co) = app.seat_checkout("victim@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&victim, &["fulfilled"]).await;

    let cheap = app
        .create_order("VICTIM@Example.com", json!([{"sku": "STICKER", "qty": 1}]))
        .await;
    let cheap = s(&cheap["id"]).to_owned();
    let co = app.checkout(&cheap).await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&cheap, &["fulfilled"]).await;

    let (status, set, body) = activate(&app, &cheap).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(features(&body), Vec::<String>::new(), "{body}");
    assert_eq!(body["customer_email"], Value::Null, "{body}");
    let cookie = set.expect("Set-Cookie");
    let cookie = cookie.split(';').next().expect("name=value").to_owned();
    let (_, mine) = me(&app, &app.url, Some(&cookie)).await;
    assert_eq!(features(&mine), Vec::<String>::new(), "{mine}");

    // The victim's order id with the attacker's token, a made-up one, or none.
    let attacker = app.buyer_token(&cheap);
    for token in [attacker.as_str(), "bt_madeup", ""] {
        let (status, set, e) = activate_with(&app, &victim, token, Some(&cookie)).await;
        assert_eq!(
            (status, s(&e["error"]["code"])),
            (403, "invalid_proof"),
            "{token:?}: {e}"
        );
        assert!(set.is_none(), "no cookie for a wrong proof");
    }
    let r = app
        .http
        .post(format!("{}/api/entitlements/activate", app.url))
        .json(&json!({"order_id": victim}))
        .send()
        .await
        .expect("activate");
    assert!(
        r.status().is_client_error(),
        "no proof at all: {}",
        r.status()
    );
    assert!(r.headers().get("set-cookie").is_none());

    // The victim's own token works, and adds to a cookie already held.
    let (status, set, body) =
        activate_with(&app, &victim, &app.buyer_token(&victim), Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(features(&body), ["conference-pass"]);
    assert_eq!(body["orders"], json!([cheap, victim]));
    assert!(set.is_some());
    app.finish().await;
}

/// Without a proof an order answers its status only; with its buyer token or its redirect
/// proof, what a buyer may see and the links to its documents, which answer the same proofs;
/// never the address, the provider's ids or internal errors but to an admin.
async fn an_order_reads_by_proof(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (order, co) = app.seat_checkout("reader@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&order, &["fulfilled"]).await;
    let get = |headers: Vec<(&'static str, String)>| {
        let mut r = app.http.get(format!("{}/api/orders/{order}", app.url));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let r = r.send().await.expect("get order");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, anyone) = get(vec![]).await;
    assert_eq!(status, 200);
    let mut keys: Vec<&str> = anyone
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "status", "waiting_on"], "{anyone}");
    assert_eq!(anyone["status"], "fulfilled");

    let (status, buyer) = get(vec![("x-buyer-token", app.buyer_token(&order))]).await;
    assert_eq!(status, 200, "{buyer}");
    assert_eq!(buyer["total_minor"], 1000);
    assert_eq!(buyer["items"][0]["sku"], "SEAT");
    assert_eq!(buyer["payment"]["status"], "paid");
    let text = buyer.to_string();
    for secret in [
        "reader@example.com",
        s(&co["provider_order_id"]),
        "last_error",
        "provider_order_id",
        "customer_email",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} shown to the buyer: {buyer}"
        );
    }
    assert_eq!(buyer["links"]["activate"], "/api/entitlements/activate");
    assert_eq!(buyer["links"]["credit_notes"], json!([]));
    let invoice = &buyer["links"]["invoice"];
    assert!(s(&invoice["number"]).starts_with("INV-"), "{buyer}");
    let doc = |path: String, token: Option<String>| {
        let mut r = app.http.get(format!("{}{path}", app.url));
        if let Some(t) = token {
            r = r.header("x-buyer-token", t);
        }
        async move { r.send().await.expect("document") }
    };
    let href = s(&invoice["href"]).to_owned();
    let r = doc(href.clone(), Some(app.buyer_token(&order))).await;
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("sandbox") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let html = r.text().await.expect("html");
    assert!(html.contains(s(&invoice["number"])), "{html}");
    // The redirect proof in the query proves the order as the token does.
    let session = s(&co["provider_order_id"]);
    let by_redirect = format!("?provider=stripe&session_id={session}");
    let r = doc(format!("{href}{by_redirect}"), None).await;
    assert_eq!(r.status().as_u16(), 200);
    for (path, token, want) in [
        (href.clone(), None, (401, "proof_required")),
        (
            href.clone(),
            Some("bt_wrong".to_owned()),
            (403, "invalid_proof"),
        ),
        (
            format!("{href}?provider=stripe&session_id=cs_not_this_one"),
            None,
            (403, "invalid_proof"),
        ),
        (
            format!("{href}{by_redirect}"),
            Some(app.buyer_token(&order)),
            (422, "invalid_field"),
        ),
        (
            format!("/api/orders/{order}/documents/inv_unknown"),
            Some(app.buyer_token(&order)),
            (404, "not_found"),
        ),
        (
            format!("/api/orders/{order}/documents/..%2Fetc"),
            Some(app.buyer_token(&order)),
            (404, "not_found"),
        ),
    ] {
        let r = doc(path.clone(), token).await;
        let status = r.status().as_u16();
        let e: Value = r.json().await.expect("json");
        assert_eq!((status, s(&e["error"]["code"])), want, "{path}: {e}");
    }
    // Another order's token does not open this order's invoice.
    let (other, _) = app.seat_checkout("other@example.com", 1, "stripe").await;
    let r = doc(href.clone(), Some(app.buyer_token(&other))).await;
    assert_eq!(r.status().as_u16(), 403);
    let r = app
        .http
        .get(format!("{}/api/orders/{order}{by_redirect}", app.url))
        .send()
        .await
        .expect("get order");
    assert_eq!(r.status().as_u16(), 200);
    let redirect_reader: Value = r.json().await.expect("json");
    assert_eq!(
        redirect_reader["items"], buyer["items"],
        "{redirect_reader}"
    );
    assert!(!redirect_reader.to_string().contains("reader@example.com"));

    let (status, e) = get(vec![("x-buyer-token", "bt_wrong".into())]).await;
    assert_eq!((status, s(&e["error"]["code"])), (403, "invalid_proof"));
    let (status, e) = get(vec![("authorization", "Bearer wrong".into())]).await;
    assert_eq!((status, s(&e["error"]["code"])), (401, "unauthorized"));
    let admin = app.order(&order).await;
    assert_eq!(admin["customer_email"], "reader@example.com");
    assert_eq!(
        admin["payment"]["provider_order_id"],
        co["provider_order_id"]
    );
    app.finish().await;
}

/// The SQLite store (with its -wal file) and the outbox's receipts hold buyers' addresses
/// and orders: only the engine's user may read them (0600), whatever the umask.
async fn buyers_data_files_are_the_engines_alone(backend: Backend) {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (id, co) = app.seat_checkout("private@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&id, &["fulfilled"]).await;
    let mut files = app.outbox_files();
    assert!(!files.is_empty(), "a receipt was written");
    if let Some(db) = app.config.store.url.strip_prefix("sqlite://") {
        let db = std::path::PathBuf::from(db.split('?').next().unwrap_or(db));
        files.push(db.with_extension("db-wal"));
        files.push(db);
    }
    for f in files {
        let mode = std::fs::metadata(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", f.display(), mode & 0o777);
    }
    app.finish().await;
}

/// `POST /api/entitlements/activate` with the provider's redirect proof instead of a token.
async fn activate_by_redirect(
    app: &TestApp,
    order_id: &str,
    provider: &str,
    payload: Value,
) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/api/entitlements/activate", app.url))
        .json(&json!({"order_id": order_id, "provider": provider, "payload": payload}))
        .send()
        .await
        .expect("activate");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Knowing an order id opens no checkout for it (which would hand out its provider's
/// checkout id and hold its stock); what each provider hands the buyer's browser after
/// paying proves the order as its buyer token does, and only for the order it was made for.
async fn only_the_buyer_opens_a_checkout_and_its_redirect_proves_the_order(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let victim = app
        .create_order("victim@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let victim = s(&victim["id"]).to_owned();
    let (mine, mine_co) = app.seat_checkout("attacker@example.com", 1, "stripe").await;
    let open = |token: Option<String>| {
        let mut r = app
            .http
            .post(format!("{}/api/payments/create-order", app.url))
            .json(&json!({"order_id": victim, "provider": "stripe"}));
        if let Some(t) = token {
            r = r.header("x-buyer-token", t);
        }
        async move {
            let r = r.send().await.expect("create-order");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    for (token, want) in [
        (None, (401, "buyer_token_required")),
        (Some(app.buyer_token(&mine)), (403, "invalid_proof")),
        (Some("bt_madeup".to_owned()), (403, "invalid_proof")),
    ] {
        let (status, e) = open(token.clone()).await;
        assert_eq!((status, s(&e["error"]["code"])), want, "{token:?}: {e}");
    }
    // An order that does not exist answers as a wrong proof does.
    let (status, e) = app.try_checkout("ord_00000000000000000000000000").await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (401, "buyer_token_required"),
        "{e}"
    );
    // Only the attacker's own seat is held.
    assert_eq!(app.stock("SEAT").await, (5, 1));

    // Stripe sends the buyer back with the session's id in the success URL.
    let session = s(&mine_co["provider_order_id"]).to_owned();
    let sent: Value = app
        .http
        .get(format!("{}/v1/checkout/sessions/{session}", app.sandbox))
        .bearer_auth("sk_test_sandbox")
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert!(
        s(&sent["success_url"]).ends_with("&session_id={CHECKOUT_SESSION_ID}"),
        "{sent}"
    );
    let victim_co = app.checkout(&victim).await;
    let victim_session = s(&victim_co["provider_order_id"]).to_owned();
    app.pay(&victim_session, json!({})).await;
    app.pay(&session, json!({})).await;
    app.wait_for(&victim, &["fulfilled"]).await;
    app.wait_for(&mine, &["fulfilled"]).await;
    // The attacker's own session proves the attacker's order, not the victim's.
    let (status, e) =
        activate_by_redirect(&app, &victim, "stripe", json!({"session_id": session})).await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (403, "invalid_proof"),
        "{e}"
    );
    let (status, body) = activate_by_redirect(
        &app,
        &victim,
        "stripe",
        json!({"session_id": victim_session}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(features(&body), ["conference-pass"]);
    assert_eq!(body["orders"], json!([victim]));

    // Razorpay: the checkout's signed answer; a forged signature proves nothing.
    let rz = app
        .create_order("rz@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let rz = s(&rz["id"]).to_owned();
    let (status, co) = app.try_checkout_with(&rz, "razorpay").await;
    assert_eq!(status, 201, "{co}");
    let paid = app
        .sandbox_post(
            &format!(
                "/sandbox/razorpay/orders/{}/pay",
                s(&co["provider_order_id"])
            ),
            json!({}),
        )
        .await;
    app.wait_for(&rz, &["fulfilled"]).await;
    let mut payload = json!({
        "razorpay_order_id": paid["razorpay_order_id"],
        "razorpay_payment_id": paid["razorpay_payment_id"],
        "razorpay_signature": "00".repeat(32),
    });
    let (status, e) = activate_by_redirect(&app, &rz, "razorpay", payload.clone()).await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (403, "invalid_proof"),
        "{e}"
    );
    payload["razorpay_signature"] = paid["razorpay_signature"].clone();
    let (status, body) = activate_by_redirect(&app, &rz, "razorpay", payload.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["orders"], json!([rz]));
    // Signed, but for another order's checkout.
    let (status, e) = activate_by_redirect(&app, &victim, "razorpay", payload).await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (403, "invalid_proof"),
        "{e}"
    );

    // PayPal: the approved order's id.
    let pp = app
        .create_order("pp@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let pp = s(&pp["id"]).to_owned();
    let (status, co) = app.try_checkout_with(&pp, "paypal").await;
    assert_eq!(status, 201, "{co}");
    let pp_order = s(&co["provider_order_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/paypal/orders/{pp_order}/approve"),
        json!({}),
    )
    .await;
    app.wait_for(&pp, &["fulfilled"]).await;
    let (status, body) =
        activate_by_redirect(&app, &pp, "paypal", json!({"orderID": pp_order})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["orders"], json!([pp]));

    // Malformed proofs are 422 and name the field.
    for (body, field) in [
        (json!({"order_id": pp}), "buyer_token"),
        (
            json!({"order_id": pp, "buyer_token": "bt_x", "provider": "paypal", "payload": {}}),
            "buyer_token",
        ),
        (json!({"order_id": pp, "provider": "paypal"}), "buyer_token"),
        (
            json!({"order_id": pp, "provider": "square", "payload": {}}),
            "provider",
        ),
        (
            json!({"order_id": pp, "provider": "paypal", "payload": {"orderID": 7}}),
            "payload.orderID",
        ),
    ] {
        let (status, e) = app
            .post_api("/api/entitlements/activate", body.clone())
            .await;
        assert_eq!(
            (status, s(&e["error"]["field"])),
            (422, field),
            "{body}: {e}"
        );
    }
    app.finish().await;
}
