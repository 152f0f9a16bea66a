//! Webhook intake: signatures, limits, and duplicates.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::harness::{Backend, TestApp, WEBHOOK_SECRET, event_id_of, s, signature, spawn};
use crate::on_both_stores;
use fulfilld::domain::PaymentStatus;

on_both_stores!(
    same_event_five_times_concurrently_has_one_effect,
    forged_stale_and_oversized_webhooks_are_refused,
    sandbox_double_delivery_is_harmless,
    event_that_overtakes_the_checkout_commit_is_not_lost,
    unhandled_event_types_are_stored_and_acknowledged,
    stored_event_is_replayed_once_with_a_dry_run_first,
    one_batch_of_mixed_events_is_recorded_as_if_one_by_one,
    events_left_unapplied_are_applied_by_a_running_intake,
    live_stripe_with_the_sandbox_secret_refuses_to_start,
    signed_webhooks_of_any_shape_are_kept,
);

/// A live key with the public `whsec_sandbox` would let anyone sign a paid checkout: neither
/// `serve` nor `intake` starts, and the error names the setting.
async fn live_stripe_with_the_sandbox_secret_refuses_to_start(backend: Backend) {
    let app = crate::harness::spawn_bare(backend, &[]).await;
    let mut live = app.config.clone();
    live.providers.stripe.secret_key = "sk_live_51Hsomething".into();
    live.providers.stripe.webhook_secrets = vec!["whsec_sandbox".into()];
    for role in [fulfilld::Role::Serve, fulfilld::Role::Intake] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let err = fulfilld::run_role(role, live.clone(), listener, std::future::pending())
            .await
            .expect_err("refuses to start");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("providers.stripe.webhook_secrets")
                && msg.contains("FULFILLD__PROVIDERS__STRIPE__WEBHOOK_SECRETS"),
            "{role:?}: {msg}"
        );
    }
    app.finish().await;
}

/// A paid checkout whose completion event was not delivered; returns (order id, event body).
async fn paid_without_webhook(app: &TestApp, email: &str) -> (String, Vec<u8>) {
    let order = app
        .create_order(email, json!([{"sku": "SEAT", "qty": 2}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let co = app.checkout(&id).await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
        .await;
    assert_eq!(paid["deliveries"].as_array().map(Vec::len), Some(0));
    (id, serde_json::to_vec(&paid["event"]).expect("event bytes"))
}

async fn same_event_five_times_concurrently_has_one_effect(backend: Backend) {
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 1000, 10).await;
    let (id, body) = paid_without_webhook(&app, "dup@example.com").await;

    let barrier = Arc::new(Barrier::new(5));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (app, barrier, body) = (app.clone(), barrier.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let sig = signature(WEBHOOK_SECRET, &body, 0);
            barrier.wait().await;
            let r = app.post_webhook(body, Some(sig)).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        let answer = t.await.expect("task");
        if answer["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery is the first");
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "stripe"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM steps WHERE order_id = $1", &id)
            .await,
        5
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM entitlements WHERE order_id = $1", &id)
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1",
            "dup@example.com"
        )
        .await,
        1
    );
    assert_eq!(app.outbox_files().len(), 1);
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        8
    );
    assert_eq!(
        app.count(
            "SELECT last_number FROM invoice_counters WHERE series = $1",
            "INV"
        )
        .await,
        1
    );
    TestApp::finish_shared(app).await;
}

async fn forged_stale_and_oversized_webhooks_are_refused(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let (id, body) = paid_without_webhook(&app, "forged@example.com").await;

    let mut tampered = body.clone();
    let text = String::from_utf8(tampered.clone()).expect("utf-8");
    tampered = text.replacen("\"paid\"", "\"PAID\"", 1).into_bytes();
    assert_ne!(tampered, body);
    let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        (
            "tampered body",
            tampered.clone(),
            Some(signature(WEBHOOK_SECRET, &body, 0)),
        ),
        (
            "wrong secret",
            body.clone(),
            Some(signature("whsec_attacker", &body, 0)),
        ),
        ("missing header", body.clone(), None),
        (
            "stale timestamp",
            body.clone(),
            Some(signature(WEBHOOK_SECRET, &body, 301)),
        ),
        (
            "timestamp an hour ahead",
            body.clone(),
            Some(signature(WEBHOOK_SECRET, &body, -3600)),
        ),
        (
            "timestamp ten years ahead",
            body.clone(),
            Some(signature(WEBHOOK_SECRET, &body, -10 * 365 * 86400)),
        ),
        ("garbage header", body.clone(), Some("v1=deadbeef".into())),
    ];
    for (what, b, sig) in cases {
        let r = app.post_webhook(b, sig).await;
        assert_eq!(r.status(), 400, "{what}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], "invalid_signature", "{what}: {e}");
    }
    let mut big = vec![b' '; 1024 * 1024];
    big[..body.len()].copy_from_slice(&body);
    let sig = signature(WEBHOOK_SECRET, &big, 0);
    // On a connection of its own: the server answers 413 without reading the body and
    // closes the connection, which a pooled client could otherwise reuse for the next
    // request and see cut off.
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.url))
        .header("content-type", "application/json")
        .header("stripe-signature", sig)
        .body(big)
        .send()
        .await
        .expect("post webhook");
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "payload_too_large");

    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "stripe"
        )
        .await,
        0,
        "nothing stored"
    );
    let o = app.order(&id).await;
    assert_eq!(o["status"], "pending_payment");
    assert_eq!(o["payment"]["status"], "created");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM steps WHERE order_id = $1", &id)
            .await,
        0
    );

    // The genuine event, signed with a rotated-in secret, still goes through.
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 5)))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.wait_for(&id, &["fulfilled", "needs_review"]).await["status"],
        "fulfilled"
    );
    app.finish().await;
}

/// The sandbox's own "twice" delivery (as a provider retry would): one fulfilment.
async fn sandbox_double_delivery_is_harmless(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let order = app
        .create_order("twice@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "twice"}))
        .await;
    let statuses: Vec<&Value> = paid["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| &d["status"])
        .collect();
    assert_eq!(statuses, vec![&json!(200), &json!(200)]);
    assert_eq!(
        app.wait_for(id, &["fulfilled", "needs_review"]).await["status"],
        "fulfilled"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE to_addr = $1",
            "twice@example.com"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        9
    );
    app.finish().await;
}

/// A buyer fast enough that `checkout.session.completed` arrives before create-order has
/// recorded the session id: the event finds the payment by the id we put in the session's
/// metadata, and the late bookkeeping does not undo the payment.
async fn event_that_overtakes_the_checkout_commit_is_not_lost(backend: Backend) {
    use fulfilld::providers::{PaymentChange, ProviderEvent};
    use fulfilld::store::payments::BeginCheckout;
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let order = app
        .create_order("fast@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let BeginCheckout::Started { payment_id, .. } = app
        .store
        .begin_checkout(id, "stripe", 60_000)
        .await
        .expect("begin")
    else {
        panic!("checkout did not start");
    };
    let ev = ProviderEvent {
        provider: "stripe",
        event_id: "evt_fast".into(),
        event_type: "checkout.session.completed".into(),
        provider_order_id: Some("cs_test_fast".into()),
        provider_payment_id: None,
        payment_ref: Some(payment_id.clone()),
        change: PaymentChange::Paid {
            provider_payment_id: Some("pi_fast".into()),
        },
    };
    let rec = fulfilld::core::events::record(&app.store, &ev, b"{}", "{}", false)
        .await
        .expect("record");
    assert_eq!(rec.outcome, "paid");
    assert_eq!(rec.wake.len(), 1, "the pipeline starts");
    let p = app
        .store
        .checkout_created(&payment_id, "cs_test_fast", Some("http://x/pay"))
        .await
        .expect("created");
    assert_eq!(
        p.status,
        PaymentStatus::Paid,
        "recording the checkout later does not undo the payment"
    );
    assert_eq!(app.order(id).await["status"], "paid");
    // An unrelated session's event (not ours) is stored and ignored.
    let foreign = ProviderEvent {
        event_id: "evt_other".into(),
        provider_order_id: Some("cs_other".into()),
        payment_ref: None,
        ..ev
    };
    assert!(
        fulfilld::core::events::record(&app.store, &foreign, b"{}", "{}", false)
            .await
            .expect("record")
            .outcome
            .starts_with("ignored")
    );
    app.finish().await;
}

async fn unhandled_event_types_are_stored_and_acknowledged(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let body = serde_json::to_vec(&json!({
        "id": "evt_customer_1", "object": "event", "api_version": "2024-06-20", "created": 1,
        "type": "customer.created", "livemode": false, "pending_webhooks": 1,
        "data": {"object": {"id": "cus_1", "object": "customer"}}
    }))
    .expect("json");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["duplicate"], false);
    let outcome = app.event_outcome("evt_customer_1").await;
    assert!(outcome.starts_with("ignored"), "{outcome}");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT raw_body FROM webhook_events WHERE event_id = $1")
            .bind("evt_customer_1")
            .fetch_one(&app.store.pool)
            .await
            .expect("stored");
    assert_eq!(stored, body, "the raw bytes are kept as received");
    // Signed but not a Stripe event at all: kept and answered 200 (Stripe would retry for
    // three days, then disable the endpoint), not applied, with the reason; once only.
    let junk = b"[1,2,3]".to_vec();
    for _ in 0..2 {
        let r = app
            .post_webhook(junk.clone(), Some(signature(WEBHOOK_SECRET, &junk, 0)))
            .await;
        assert_eq!(r.status(), 200);
    }
    let outcome = app.unreadable_outcome("stripe").await;
    assert!(outcome.starts_with("not applied: "), "{outcome}");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE provider = $1",
            "stripe"
        )
        .await,
        2
    );
    app.finish().await;
}

/// An event that found no payment when it arrived (the checkout's commit had not landed) is
/// stored and ignored. An admin's dry run re-verifies it and lists what a replay would do,
/// changing nothing; the replay fulfils the order; a second replay changes nothing and says
/// so; a stored body altered since no longer verifies.
async fn stored_event_is_replayed_once_with_a_dry_run_first(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let (id, body) = paid_without_webhook(&app, "replay@example.com").await;
    let session: String =
        sqlx::query_scalar("SELECT provider_order_id FROM payments WHERE order_id = $1")
            .bind(&id)
            .fetch_one(&app.store.pool)
            .await
            .expect("session");
    let rename = |from: &str, to: &str| {
        sqlx::query("UPDATE payments SET provider_order_id = $1 WHERE provider_order_id = $2")
            .bind(to.to_owned())
            .bind(from.to_owned())
    };
    rename(&session, "cs_not_yet")
        .execute(&app.store.pool)
        .await
        .expect("hide");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(r.status(), 200);
    let outcome = app.event_outcome(&event_id_of(&body)).await;
    assert!(outcome.starts_with("ignored"), "{outcome}");
    rename("cs_not_yet", &session)
        .execute(&app.store.pool)
        .await
        .expect("restore");

    let (status, list) = app
        .admin("GET", "/api/admin/events?provider=stripe", None)
        .await;
    assert_eq!(status, 200, "{list}");
    let event_id = list["events"][0]["id"].as_i64().expect("event id");
    let path = format!("/api/admin/events/{event_id}/replay");
    let (status, dry) = app
        .admin("POST", &path, Some(json!({"dry_run": true})))
        .await;
    assert_eq!(status, 200, "{dry}");
    let replay = &dry["replay"];
    assert_eq!(
        (replay["dry_run"].clone(), replay["changed"].clone()),
        (json!(true), json!(true))
    );
    let moved: Vec<(String, String)> = replay["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| {
            let what = s(&t["what"]);
            (
                what.split(' ').take(2).collect::<Vec<_>>().join(" "),
                s(&t["to"]).to_owned(),
            )
        })
        .collect();
    assert!(
        moved
            .iter()
            .any(|(w, t)| w.starts_with("order") && t == "paid"),
        "{dry:#}"
    );
    assert!(
        moved
            .iter()
            .any(|(w, t)| w.starts_with("payment") && t == "paid"),
        "{dry:#}"
    );
    assert!(
        moved
            .iter()
            .any(|(w, t)| w == "step confirm_capture" && t == "pending"),
        "{dry:#}"
    );
    assert_eq!(
        app.order(&id).await["status"],
        "pending_payment",
        "a dry run changes nothing"
    );

    let (status, real) = app.admin("POST", &path, None).await;
    assert_eq!(status, 200, "{real}");
    assert_eq!(real["replay"]["changed"], true);
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    let (_, again) = app.admin("POST", &path, None).await;
    assert_eq!(again["replay"]["changed"], false, "{again:#}");
    assert_eq!(again["replay"]["transitions"], json!([]));
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    sqlx::query("UPDATE webhook_events SET raw_body = $1 WHERE id = $2")
        .bind(tampered)
        .bind(event_id)
        .execute(&app.store.pool)
        .await
        .expect("tamper");
    let (status, e) = app
        .admin("POST", &path, Some(json!({"dry_run": true})))
        .await;
    assert_eq!(status, 422, "{e}");
    assert_eq!(e["error"]["code"], "invalid_signature");
    let (status, _) = app
        .admin("POST", "/api/admin/events/999999/replay", None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM admin_actions WHERE action = $1",
            "event.replay"
        )
        .await,
        2
    );
    app.finish().await;
}

/// What the group-commit writer hands the store when webhooks arrive together: one batch
/// with a delivery repeated inside it, two paid events for one payment, a payment that is
/// not ours and an unhandled type. Each gets what it would have got alone.
async fn one_batch_of_mixed_events_is_recorded_as_if_one_by_one(backend: Backend) {
    use fulfilld::core::events::record_batch;
    use fulfilld::providers::{PaymentChange, ProviderEvent};
    use fulfilld::store::events::Incoming;

    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let (a, co_a) = app.seat_checkout("batch-a@example.com", 1, "stripe").await;
    let (b, co_b) = app.seat_checkout("batch-b@example.com", 1, "stripe").await;
    // Paid at the provider (its webhooks held back), so the pipelines that follow agree.
    for co in [&co_a, &co_b] {
        app.pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
            .await;
    }
    let paid = |id: &str, poid: &str| ProviderEvent {
        provider: "stripe",
        event_id: id.to_owned(),
        event_type: "checkout.session.completed".to_owned(),
        provider_order_id: Some(poid.to_owned()),
        provider_payment_id: None,
        payment_ref: None,
        change: PaymentChange::Paid {
            provider_payment_id: None,
        },
    };
    let events = [
        paid("evt_batch_1", s(&co_a["provider_order_id"])),
        paid("evt_batch_1", s(&co_a["provider_order_id"])),
        paid("evt_batch_2", s(&co_a["provider_order_id"])),
        paid("evt_batch_3", s(&co_b["provider_order_id"])),
        paid("evt_batch_4", "cs_not_ours"),
        ProviderEvent {
            change: PaymentChange::Ignored,
            event_type: "customer.created".to_owned(),
            ..paid("evt_batch_5", "cs_none")
        },
    ];
    let batch: Vec<Incoming<'_>> = events
        .iter()
        .map(|ev| Incoming {
            ev,
            raw: b"{}",
            headers: "{}",
            restock_default: true,
            request_id: None,
        })
        .collect();
    let mut tx = app.store.begin().await.expect("begin");
    let got = record_batch(&mut tx, &batch).await.expect("record batch");
    tx.commit().await.expect("commit");

    let outcomes: Vec<(&str, bool, usize)> = got
        .iter()
        .map(|r| (r.outcome.as_str(), r.duplicate, r.wake.len()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("paid", false, 1),
            ("duplicate", true, 0),
            ("no change: payment is paid", false, 0),
            ("paid", false, 1),
            ("ignored: no payment of ours matches", false, 0),
            ("ignored: event type not handled", false, 0),
        ]
    );
    // Stored once each, with the outcome each was answered with.
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_id, outcome FROM webhook_events WHERE event_id LIKE 'evt_batch_%' ORDER BY event_id",
    )
    .fetch_all(&app.store.pool)
    .await
    .expect("events");
    let want = [
        ("evt_batch_1", "paid"),
        ("evt_batch_2", "no change: payment is paid"),
        ("evt_batch_3", "paid"),
        ("evt_batch_4", "ignored: no payment of ours matches"),
        ("evt_batch_5", "ignored: event type not handled"),
    ];
    assert_eq!(
        stored,
        want.map(|(e, o)| (e.to_owned(), o.to_owned())).to_vec()
    );
    // One pipeline per paid order, each payment paid once.
    for order in [&a, &b] {
        assert_eq!(
            app.count("SELECT COUNT(*) FROM steps WHERE order_id = $1", order)
                .await,
            5
        );
        assert_eq!(
            app.count(
                "SELECT COUNT(*) FROM payments WHERE order_id = $1 AND status = 'paid'",
                order
            )
            .await,
            1
        );
    }
    app.finish().await;
}

/// What an intake that stopped right after its commit leaves behind: events stored with
/// outcome `received`, and no applier told. A running intake applies them on its own (its
/// periodic look); one that no longer reads gets that reason as its outcome and holds up
/// nothing; the provider's retry of the good one is then a duplicate.
async fn events_left_unapplied_are_applied_by_a_running_intake(backend: Backend) {
    use fulfilld::store::events::{Incoming, append};
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let (id, body) = paid_without_webhook(&app, "left@example.com").await;
    let ev = fulfilld::providers::stripe::normalize(&body).expect("event");
    let unreadable = fulfilld::providers::ProviderEvent {
        event_id: "evt_unreadable".into(),
        ..ev.clone()
    };
    let left = [(&unreadable, &b"not json"[..]), (&ev, &body[..])].map(|(ev, raw)| Incoming {
        ev,
        raw,
        headers: "{}",
        restock_default: true,
        request_id: None,
    });
    let mut tx = app.store.begin().await.expect("begin");
    let ids = append(&mut tx, &left).await.expect("append");
    tx.commit().await.expect("commit");
    assert!(ids.iter().all(Option::is_some), "{ids:?}");

    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(app.event_outcome(&ev.event_id).await, "paid");
    let bad = app.event_outcome("evt_unreadable").await;
    assert!(bad.starts_with("not applied: "), "{bad}");
    let r = app
        .post_webhook(body.clone(), Some(signature(WEBHOOK_SECRET, &body, 0)))
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["duplicate"], true, "{answer}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    app.finish().await;
}

/// Odd shapes of a body: fixed ones, then `n` mutations of `real` (truncated, a byte
/// changed, a byte inserted, a value nulled), from a fixed seed so a failure repeats.
fn odd_bodies(real: &[u8], n: usize, seed: u64) -> Vec<Vec<u8>> {
    use rand::{Rng, SeedableRng};
    let mut out: Vec<Vec<u8>> = [
        &b""[..],
        b"null",
        b"[]",
        b"{}",
        b"\"x\"",
        b"{\"id\": null, \"type\": null, \"data\": null}",
        b"{\"id\": 1e999, \"type\": [], \"data\": {\"object\": \"x\"}}",
        b"\xff\xfe not utf-8 \x00",
        b"{\"a\": {\"a\": {\"a\": {\"a\": {\"a\": {\"a\": {}}}}}}}",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    out.push(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes());
    let text = String::from_utf8_lossy(real).into_owned();
    // Each of the real event's values, in turn, made null.
    let mut v: Value = serde_json::from_slice(real).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        for k in obj.keys().cloned().collect::<Vec<_>>() {
            let mut copy = Value::Object(obj.clone());
            copy[&k] = Value::Null;
            out.push(serde_json::to_vec(&copy).expect("json"));
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..n {
        let mut b = real.to_vec();
        let at = rng.random_range(0..b.len().max(1));
        match i % 3 {
            0 => b.truncate(at),
            1 => {
                let last = b.len().saturating_sub(1);
                b[at.min(last)] = rng.random();
            }
            _ => b.insert(at, rng.random()),
        }
        out.push(b);
    }
    out.push(text.replace("\"", "'").into_bytes());
    out
}

/// Whatever its body, a webhook signed with the provider's own key is never a 4xx or a
/// 5xx: it is stored and answered 200 (read and applied, or kept with the reason it could
/// not be) — for each provider, the fixed odd shapes and a hundred mutations of a real
/// event.
async fn signed_webhooks_of_any_shape_are_kept(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 100).await;
    // A real event of each provider to mutate.
    let (_, co) = app.seat_checkout("shapes@example.com", 1, "stripe").await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
        .await;
    let stripe = serde_json::to_vec(&paid["event"]).expect("event");
    let (_, co) = app.seat_checkout("shapes@example.com", 1, "razorpay").await;
    let paid = app
        .sandbox_post(
            &format!(
                "/sandbox/razorpay/orders/{}/pay",
                s(&co["provider_order_id"])
            ),
            json!({"webhook": "none"}),
        )
        .await;
    let razorpay = s(&paid["events"][0]["body"]).as_bytes().to_vec();
    let (_, co) = app.seat_checkout("shapes@example.com", 1, "paypal").await;
    let approved = app
        .sandbox_post(
            &format!(
                "/sandbox/paypal/orders/{}/approve",
                s(&co["provider_order_id"])
            ),
            json!({"webhook": "none"}),
        )
        .await;
    let paypal = s(&approved["events"][0]["body"]).as_bytes().to_vec();
    let key = fulfilld::sandbox::paypal::signing_key().expect("sandbox key");
    let cert_url = format!("{}/v1/notifications/certs/CERT-sandbox", app.sandbox);
    let mut sent = 0;
    for (provider, real) in [
        ("stripe", &stripe),
        ("razorpay", &razorpay),
        ("paypal", &paypal),
    ] {
        for (n, body) in odd_bodies(real, 100, 20).into_iter().enumerate() {
            let mut req = app
                .http
                .post(format!("{}/webhooks/{provider}", app.url))
                .header("content-type", "application/json")
                .body(body.clone());
            match provider {
                "stripe" => {
                    req = req.header("stripe-signature", signature(WEBHOOK_SECRET, &body, 0))
                }
                "razorpay" => {
                    req = req
                        .header(
                            "x-razorpay-signature",
                            fulfilld::providers::razorpay::sign_webhook("rzp_whsec_sandbox", &body),
                        )
                        .header("x-razorpay-event-id", format!("evt_shape_{n}"));
                }
                _ => {
                    for (k, v) in fulfilld::sandbox::paypal::signature_headers(
                        key,
                        "WH-SANDBOX-0000000000",
                        &cert_url,
                        &body,
                    ) {
                        req = req.header(k, v);
                    }
                }
            }
            let r = req.send().await.expect("webhook");
            let status = r.status().as_u16();
            let answer = r.text().await.unwrap_or_default();
            assert_eq!(
                status,
                200,
                "{provider} body {n} {:?}: {answer}",
                String::from_utf8_lossy(&body)
            );
            sent += 1;
        }
    }
    assert!(sent > 300, "{sent}");
    app.applied().await;
    app.finish().await;
}
