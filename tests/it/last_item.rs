//! The last item: many paid orders race for one unit of stock.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::harness::{Backend, TestApp, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    twenty_paid_orders_race_for_the_last_item,
    checkouts_of_the_same_items_in_either_order_all_reserve,
);

/// Thirty checkouts at once, of two SKUs listed in one order or the other: every one
/// reserves (SKU rows are locked in SKU order, so no two checkouts wait on each other in a
/// circle, which Postgres would break by failing one), and both SKUs count every unit.
async fn checkouts_of_the_same_items_in_either_order_all_reserve(backend: Backend) {
    const N: usize = 30;
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 1500, 100).await;
    app.put_sku("MUG", 900, 100).await;
    let mut orders = Vec::new();
    for i in 0..N {
        let lines = if i % 2 == 0 {
            json!([{"sku": "SEAT", "qty": 1}, {"sku": "MUG", "qty": 2}])
        } else {
            json!([{"sku": "MUG", "qty": 2}, {"sku": "SEAT", "qty": 1}])
        };
        let order = app
            .create_order(&format!("pair{i}@example.com"), lines)
            .await;
        orders.push(s(&order["id"]).to_owned());
    }
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for id in orders {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.try_checkout(&id).await
        }));
    }
    for t in tasks {
        let (status, co) = t.await.expect("checkout task");
        assert_eq!(status, 201, "{co}");
    }
    assert_eq!(app.stock("SEAT").await, (100, N as i64));
    assert_eq!(app.stock("MUG").await, (100, 2 * N as i64));
    TestApp::finish_shared(app).await;
}

/// Twenty buyers check out while twenty seats are on hand, then a stock count finds only
/// one (the rest were damaged): all twenty pay at once. Exactly one order is fulfilled, the
/// other nineteen are refunded through the provider and told so, and stock never goes below
/// zero.
async fn twenty_paid_orders_race_for_the_last_item(backend: Backend) {
    const N: usize = 20;
    let app = Arc::new(spawn(backend, &[]).await);
    app.put_sku("SEAT", 1500, N as i64).await;
    let mut sessions = Vec::new();
    let mut orders = Vec::new();
    for i in 0..N {
        let order = app
            .create_order(
                &format!("buyer{i}@example.com"),
                json!([{"sku": "SEAT", "qty": 1}]),
            )
            .await;
        let co = app.checkout(s(&order["id"])).await;
        orders.push(s(&order["id"]).to_owned());
        sessions.push(s(&co["provider_order_id"]).to_owned());
    }
    let row = app.put_sku("SEAT", 1500, 1).await;
    assert_eq!(row["stock"], 1);
    assert_eq!(row["reserved"], N as i64);

    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for session in sessions {
        let (app, barrier) = (app.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.pay(&session, json!({})).await
        }));
    }
    for t in tasks {
        let paid = t.await.expect("pay task");
        assert_eq!(paid["deliveries"][0]["status"], 200, "{paid}");
    }
    let mut fulfilled = 0;
    let mut refunded = 0;
    for id in &orders {
        let o = app
            .wait_for(id, &["fulfilled", "refunded", "needs_review"])
            .await;
        match o["status"].as_str() {
            Some("fulfilled") => fulfilled += 1,
            Some("refunded") => {
                refunded += 1;
                let skipped: Vec<&Value> = o["steps"]
                    .as_array()
                    .expect("steps")
                    .iter()
                    .filter(|st| st["status"] == "skipped")
                    .collect();
                assert_eq!(skipped.len(), 2, "invoice and entitlement skipped: {o:#}");
            }
            _ => panic!("unexpected {o:#}"),
        }
    }
    assert_eq!((fulfilled, refunded), (1, N - 1));
    assert_eq!(
        app.count("SELECT on_hand FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT reserved FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invoices WHERE series = $1", "INV")
            .await,
        1
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM refunds WHERE reason = $1",
            "out_of_stock"
        )
        .await,
        (N - 1) as i64
    );
    let refunds = app.sandbox_get("/sandbox/stripe/refunds").await;
    assert_eq!(
        refunds["data"].as_array().map(Vec::len),
        Some(N - 1),
        "the provider refunded each once"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE kind = $1",
            "refund_notice"
        )
        .await,
        (N - 1) as i64
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM emails_sent WHERE kind = $1",
            "receipt"
        )
        .await,
        1
    );
    assert_eq!(app.outbox_files().len(), N);
    TestApp::finish_shared(app).await;
}
