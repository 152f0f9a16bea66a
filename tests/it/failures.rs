//! When the provider fails or disagrees: retries with backoff from the store, retries that
//! survive a restart, and permanent failures that stop for a human.

use serde_json::{Value, json};

use crate::harness::{Backend, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    provider_outage_is_retried_with_backoff,
    retry_survives_an_engine_restart,
    amount_mismatch_needs_review,
    checkout_creation_failure_releases_stock,
);

fn step<'a>(order: &'a Value, kind: &str) -> &'a Value {
    order["steps"]
        .as_array()
        .and_then(|v| v.iter().find(|st| st["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} step in {order:#}"))
}

async fn provider_outage_is_retried_with_backoff(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let order = app
        .create_order("retry@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    // The capture check's first two reads of the session fail: 503, then 429.
    app.inject_api_errors(&[503, 429]).await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let done = app.wait_for(id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    let cap = step(&done, "confirm_capture");
    assert_eq!(
        cap["attempts"], 3,
        "two failed attempts, then success: {cap}"
    );
    assert!(cap["last_error"].is_null(), "a done step carries no error");
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        4
    );
    app.finish().await;
}

async fn retry_survives_an_engine_restart(backend: Backend) {
    let mut app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let order = app
        .create_order("restart@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]).to_owned();
    let co = app.checkout(&id).await;
    app.inject_api_errors(&[503; 50]).await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    // The first attempt failed and a retry is scheduled in the store.
    let o = app
        .wait_until(&id, "a failed capture attempt", |o| {
            let cap = step(o, "confirm_capture");
            cap["status"] == "pending" && cap["attempts"].as_i64() >= Some(1)
        })
        .await;
    assert!(
        step(&o, "confirm_capture")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{o:#}"
    );
    app.restart_engine().await;
    app.inject_api_errors(&[]).await;
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled", "{done:#}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", &id)
            .await,
        1
    );
    app.finish().await;
}

async fn amount_mismatch_needs_review(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 5).await;
    let order = app
        .create_order("short@example.com", json!([{"sku": "SEAT", "qty": 2}]))
        .await;
    let id = s(&order["id"]);
    let co = app.checkout(id).await;
    app.pay(s(&co["provider_order_id"]), json!({"amount_total": 1999}))
        .await;
    let o = app.wait_for(id, &["needs_review", "fulfilled"]).await;
    assert_eq!(o["status"], "needs_review", "{o:#}");
    let cap = step(&o, "confirm_capture");
    assert_eq!(cap["status"], "dead");
    assert_eq!(cap["attempts"], 1, "a permanent error is not retried");
    assert!(
        cap["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("amount mismatch")),
        "{cap}"
    );
    assert_eq!(o["waiting_on"], "confirm_capture");
    assert_eq!(step(&o, "deduct_stock")["status"], "waiting");
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        5,
        "nothing fulfilled"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE order_id = $1", id)
            .await,
        0
    );
    assert!(app.outbox_files().is_empty());
    app.finish().await;
}

/// The provider refuses to create the checkout: the buyer gets a 502 that says so, the stock
/// goes back, and the order can try again.
async fn checkout_creation_failure_releases_stock(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 1).await;
    let order = app
        .create_order("again@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let id = s(&order["id"]);
    app.inject_api_errors(&[500]).await;
    let (status, e) = app.try_checkout(id).await;
    assert_eq!(status, 502);
    assert_eq!(e["error"]["code"], "provider_error");
    assert_eq!(app.order(id).await["status"], "created");
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    let co = app.checkout(id).await;
    assert_eq!(co["amount_minor"], 1000);
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        1
    );
    app.finish().await;
}
