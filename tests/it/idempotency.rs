//! `Idempotency-Key` on `POST /api/…`, with Stripe's semantics: replay, 422 on a different
//! request, 409 while the first is in flight, keys per proven caller, expiry.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::harness::{ADMIN_TOKEN, Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    same_key_same_request_replays_the_first_answer,
    same_key_other_request_is_refused,
    each_caller_has_keys_of_its_own,
    concurrent_duplicates_create_one_order,
    duplicate_while_the_first_is_in_flight_gets_409,
    keys_expire,
);

async fn create_with_key(app: &TestApp, key: &str, body: &Value) -> (u16, Option<String>, Value) {
    let r = app
        .http
        .post(format!("{}/api/orders", app.url))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("create order");
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, replayed, r.json().await.expect("json"))
}

fn order_body(email: &str) -> Value {
    json!({"customer_email": email, "items": [{"sku": "SEAT", "qty": 1}]})
}

async fn orders_of(app: &TestApp, email: &str) -> i64 {
    app.count(
        "SELECT COUNT(*) FROM orders WHERE customer_email = $1",
        email,
    )
    .await
}

async fn same_key_same_request_replays_the_first_answer(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let body = order_body("replay@example.com");
    let (status, replayed, first) = create_with_key(&app, "order-1", &body).await;
    assert_eq!((status, replayed), (201, None), "{first}");
    let (status, replayed, again) = create_with_key(&app, "order-1", &body).await;
    assert_eq!(status, 201, "the same status: {again}");
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(again, first, "the same body");
    assert_eq!(orders_of(&app, "replay@example.com").await, 1);
    // A validation error is an answer too, and is replayed as such.
    let bad = json!({"customer_email": "nope", "items": []});
    let (status, _, e) = create_with_key(&app, "order-bad", &bad).await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "customer_email"));
    let (status, replayed, e2) = create_with_key(&app, "order-bad", &bad).await;
    assert_eq!((status, replayed.as_deref()), (422, Some("true")));
    assert_eq!(e2, e);
    // Without a key, each request is its own.
    app.post_api("/api/orders", body.clone()).await;
    app.post_api("/api/orders", body).await;
    assert_eq!(orders_of(&app, "replay@example.com").await, 3);
    app.finish().await;
}

/// A key is the proven caller's: an admin reusing one for another request is refused
/// (422); an anonymous caller's key covers only its own exact request, so nobody squats or
/// replays someone else's; a caller whose credentials fail leaves nothing behind.
async fn same_key_other_request_is_refused(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let admin_post = |path: &'static str, token: &'static str, key: String| {
        app.http
            .post(format!("{}{path}", app.url))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({}))
            .send()
    };
    let r = admin_post("/api/admin/dead-letters/retry", ADMIN_TOKEN, "k".into())
        .await
        .expect("admin");
    assert_eq!(r.status(), 200);
    let r = admin_post("/api/payments/verify", ADMIN_TOKEN, "k".into())
        .await
        .expect("admin");
    assert_eq!(r.status(), 422, "another request under the admin's key");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "idempotency_key_reused", "{e}");
    // Anonymous callers: B uses the key A used, with B's own request, and gets B's own
    // answer, not A's and not a refusal; A's retry still replays A's.
    let (status, _, a) = create_with_key(&app, "k", &order_body("a@example.com")).await;
    assert_eq!(
        status, 201,
        "the admin's \"k\" is not the anonymous caller's: {a}"
    );
    let (status, replayed, b) = create_with_key(&app, "k", &order_body("b@example.com")).await;
    assert_eq!((status, replayed), (201, None), "{b}");
    assert_ne!(a["id"], b["id"]);
    assert_eq!(orders_of(&app, "b@example.com").await, 1);
    let (status, replayed, a2) = create_with_key(&app, "k", &order_body("a@example.com")).await;
    assert_eq!((status, replayed.as_deref(), &a2), (201, Some("true"), &a));
    // A wrong admin token, with a new key each time: 401, and no key is stored.
    let kept = || {
        app.count(
            "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE $1",
            "forged-%",
        )
    };
    for i in 0..50 {
        let r = admin_post(
            "/api/admin/dead-letters/retry",
            "not-the-token",
            format!("forged-{i}"),
        )
        .await
        .expect("admin");
        assert_eq!(r.status(), 401);
    }
    assert_eq!(kept().await, 0, "auth failures are not kept");
    // A buyer token that does not open the order: 403, not kept either.
    let order = app
        .create_order("c@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let r = app
        .http
        .post(format!("{}/api/entitlements/activate", app.url))
        .header("Idempotency-Key", "forged-buyer")
        .header("x-buyer-token", "bt_wrong")
        .json(&json!({"order_id": order["id"], "buyer_token": "bt_wrong"}))
        .send()
        .await
        .expect("activate");
    assert_eq!(r.status(), 403);
    assert_eq!(kept().await, 0, "a refused buyer token is not kept");
    // A key must be sensible.
    let (status, _, e) =
        create_with_key(&app, &"x".repeat(256), &order_body("c@example.com")).await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "Idempotency-Key"));
    app.finish().await;
}

/// Issue 20.5: keys belong to the proven caller. Two named admins sending the very same
/// request under one key each get their own answer (the second is no replay of the
/// first's); a buyer who sends another buyer's very request with the same key gets that
/// request judged for their own token (403), never the other buyer's stored answer.
async fn each_caller_has_keys_of_its_own(backend: Backend) {
    let app = spawn(
        backend,
        &[
            (
                "FULFILLD__ADMIN__TOKENS__ALICE__TOKEN",
                "alice-token-0123456789abcdef",
            ),
            ("FULFILLD__ADMIN__TOKENS__ALICE__ROLE", "operate"),
            (
                "FULFILLD__ADMIN__TOKENS__BOB__TOKEN",
                "bob-token-0123456789abcdefgh",
            ),
            ("FULFILLD__ADMIN__TOKENS__BOB__ROLE", "operate"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 5).await;
    let as_admin = |token: &'static str| {
        app.http
            .post(format!("{}/api/admin/dead-letters/retry", app.url))
            .bearer_auth(token)
            .header("Idempotency-Key", "shared")
            .json(&json!({}))
            .send()
    };
    let replayed = |r: &reqwest::Response| r.headers().get("idempotent-replayed").is_some();
    let alice = as_admin("alice-token-0123456789abcdef")
        .await
        .expect("alice");
    assert_eq!(alice.status(), 200);
    assert!(!replayed(&alice));
    let bob = as_admin("bob-token-0123456789abcdefgh").await.expect("bob");
    assert_eq!(bob.status(), 200);
    assert!(!replayed(&bob), "bob's answer is his own, not alice's");
    let again = as_admin("alice-token-0123456789abcdef")
        .await
        .expect("alice again");
    assert!(replayed(&again), "alice's own key does replay");

    // Two buyers, and the first one's checkout request.
    let first = app
        .create_order("first@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let second = app
        .create_order("second@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let checkout = |order: &Value, token: String| {
        app.http
            .post(format!("{}/api/payments/create-order", app.url))
            .header("Idempotency-Key", "checkout-1")
            .header("x-buyer-token", token)
            .json(&json!({"order_id": order["id"], "provider": "stripe"}))
            .send()
    };
    let r = checkout(&first, app.buyer_token(s(&first["id"])))
        .await
        .expect("first buyer");
    assert_eq!(r.status(), 201);
    let r = checkout(&first, app.buyer_token(s(&second["id"])))
        .await
        .expect("second buyer");
    assert_eq!(r.status(), 403, "judged for the second buyer's token");
    assert!(!replayed(&r), "never the first buyer's stored answer");
    app.finish().await;
}

/// Sixteen identical requests with one key, released at once: one order exists, and every
/// answer is that order (the first, or a replay of it) or "in flight".
async fn concurrent_duplicates_create_one_order(backend: Backend) {
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 1000, 5).await;
    let barrier = Arc::new(Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            create_with_key(&app, "race", &order_body("race@example.com")).await
        }));
    }
    let mut created = Vec::new();
    let mut in_flight = 0;
    for t in tasks {
        let (status, _, body) = t.await.expect("task");
        match status {
            201 => created.push(s(&body["id"]).to_owned()),
            409 => {
                assert_eq!(body["error"]["code"], "idempotency_key_in_use");
                in_flight += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created.len() + in_flight, 16);
    assert!(!created.is_empty());
    assert!(created.iter().all(|id| *id == created[0]), "{created:?}");
    assert_eq!(orders_of(&app, "race@example.com").await, 1);
    TestApp::finish_shared(app).await;
}

/// The first refund request is held up inside the provider call; duplicates sent while it
/// runs (seen by the sandbox first) are told it is in flight, and the provider is asked
/// once.
async fn duplicate_while_the_first_is_in_flight_gets_409(backend: Backend) {
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 1000, 5).await;
    let (id, co) = app.seat_checkout("inflight@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&id, &["fulfilled"]).await;
    // The sandbox holds the next Stripe API call 3 s before answering.
    app.sandbox_post("/sandbox/stripe/faults", json!({"api_errors": ["timeout"]}))
        .await;
    let body = json!({"order_id": id});
    let first = tokio::spawn({
        let (app, body) = (app.clone(), body.clone());
        async move { refund_with_key(&app, "refund-1", &body).await }
    });
    // The refund is made; its answer is what the sandbox holds back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.sandbox_get("/sandbox/stripe/refunds").await["data"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the refund never reached the sandbox"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let barrier = Arc::new(Barrier::new(4));
    let mut dups = Vec::new();
    for _ in 0..4 {
        let (app, body, barrier) = (app.clone(), body.clone(), barrier.clone());
        dups.push(tokio::spawn(async move {
            barrier.wait().await;
            refund_with_key(&app, "refund-1", &body).await
        }));
    }
    for d in dups {
        let (status, e) = d.await.expect("task");
        assert_eq!(status, 409, "{e}");
        assert_eq!(e["error"]["code"], "idempotency_key_in_use");
    }
    let (status, r) = first.await.expect("task");
    assert_eq!(status, 201, "{r}");
    let (status, again) = refund_with_key(&app, "refund-1", &body).await;
    assert_eq!((status, &again), (201, &r), "finished: replayed");
    let made = app.sandbox_get("/sandbox/stripe/refunds").await;
    assert_eq!(made["data"].as_array().map(Vec::len), Some(1), "{made}");
    TestApp::finish_shared(app).await;
}

async fn refund_with_key(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/api/payments/refund", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("refund");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// A key past `api.idempotency_ttl_secs` is removed by housekeeping, and the same key is
/// then a new request.
async fn keys_expire(backend: Backend) {
    let app = spawn(
        backend,
        &[("FULFILLD__QUEUE__HOUSEKEEPING_INTERVAL_MS", "100")],
    )
    .await;
    app.put_sku("SEAT", 1000, 5).await;
    let (status, _, _) = create_with_key(&app, "old", &order_body("old@example.com")).await;
    assert_eq!(status, 201);
    // Age the key by a day and a second, as the clock would.
    sqlx::query("UPDATE idempotency_keys SET created_at = created_at - 86401000")
        .execute(&app.store.pool)
        .await
        .expect("age key");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app
        .count(
            "SELECT COUNT(*) FROM idempotency_keys WHERE key = $1",
            "old",
        )
        .await
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "never cleaned up");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (status, replayed, _) = create_with_key(&app, "old", &order_body("new@example.com")).await;
    assert_eq!((status, replayed), (201, None));
    assert_eq!(orders_of(&app, "new@example.com").await, 1);
    app.finish().await;
}
