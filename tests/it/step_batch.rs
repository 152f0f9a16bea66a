//! The workers' batched writes to the steps table (`store::steps::{claim_many, finish_many,
//! advance_many}`), driven directly on a store no worker runs on: one statement for many
//! steps must leave each row as the one-by-one write would. And the reads a step's first run
//! leaves out: a receipt's run again still finds its email sent.

use std::sync::Arc;

use fulfilld::store::steps::{self, Chain, Lease};
use fulfilld::store::{Store, Tx};
use jobs::StepKind;

use std::time::Duration;

use serde_json::json;

use crate::harness::{Backend, s, spawn, spawn_bare};
use crate::on_both_stores;
use fulfilld::domain::StepStatus;

on_both_stores!(
    one_statement_for_many_steps_writes_each_as_alone,
    receipt_step_run_again_sends_nothing_again,
);

/// Two paid orders with their pipelines; returns each order's step ids in pipeline order.
pub(crate) async fn two_paid_pipelines(store: &Store) -> [Vec<i64>; 2] {
    let mut tx = store.begin().await.expect("begin");
    for o in ["ord_a", "ord_b"] {
        sqlx::query(
            "INSERT INTO orders (id, customer_email, status, total_minor, currency, created_at, updated_at)
             VALUES ($1, 'b@example.com', 'paid', 1000, 'usd', 0, 0)",
        )
        .bind(o)
        .execute(&mut *tx)
        .await
        .expect("order");
        sqlx::query(
            "INSERT INTO payments (id, order_id, provider, provider_order_id, status, amount_minor, currency, created_at, updated_at)
             VALUES ($1, $2, 'stripe', $1, 'paid', 1000, 'usd', 0, 0)",
        )
        .bind(format!("pay_{o}"))
        .bind(o)
        .execute(&mut *tx)
        .await
        .expect("payment");
    }
    steps::create_pipelines(
        &mut tx,
        &[("ord_a", "pay_ord_a", None), ("ord_b", "pay_ord_b", None)],
    )
    .await
    .expect("pipelines");
    tx.commit().await.expect("commit");
    let ids = |o: &'static str| async move {
        let rows = store.order_steps(o).await.expect("steps");
        rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    [ids("ord_a").await, ids("ord_b").await]
}

async fn status(store: &Store, id: i64) -> String {
    sqlx::query_scalar::<_, String>("SELECT status FROM steps WHERE id = $1")
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .expect("status")
}

async fn commit(tx: Tx) {
    tx.commit().await.expect("commit");
}

async fn one_statement_for_many_steps_writes_each_as_alone(backend: Backend) {
    let app = spawn_bare(backend, &[]).await;
    let store = &app.store;
    let [a, b] = two_paid_pipelines(store).await;

    // Claims: a step named twice is leased once; a waiting step and a step that does not
    // exist are not leased at all.
    let mut tx = store.begin().await.expect("begin");
    let leases = steps::claim_many(&mut tx, &[a[0], a[0], b[0], a[1], 999_999], 60_000, "w1")
        .await
        .expect("claim");
    commit(tx).await;
    let mut got: Vec<i64> = leases.iter().map(|l| l.step.id).collect();
    got.sort();
    assert_eq!(got, vec![a[0], b[0]]);
    assert!(
        leases
            .iter()
            .all(|l| l.step.status == StepStatus::Running && l.step.attempts == 1)
    );
    assert_eq!(status(store, a[1]).await, "waiting");
    let lease = |id: i64| -> Lease {
        leases
            .iter()
            .find(|l| l.step.id == id)
            .cloned()
            .expect("leased")
    };

    // Finishes: only the holder of the lease token finishes a step.
    let forged = Lease {
        token: "lease_forged".into(),
        ..lease(b[0])
    };
    let (la, lb) = (lease(a[0]), lease(b[0]));
    let mut tx = store.begin().await.expect("begin");
    let done = steps::finish_many(&mut tx, &[(&la, "captured"), (&forged, "forged")])
        .await
        .expect("finish");
    assert_eq!(done, vec![a[0]]);
    let done = steps::finish_many(&mut tx, &[(&lb, "captured")])
        .await
        .expect("finish");
    assert_eq!(done, vec![b[0]]);
    commit(tx).await;
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM steps WHERE id = $1")
        .bind(b[0])
        .fetch_one(&store.pool)
        .await
        .expect("outcome");
    assert_eq!(outcome, "captured");

    // Advance: an order named twice moves on once. Order a's second entry has a chain into
    // its next kind, so its next step is claimed for that entry; order b's is woken.
    let chain = Arc::new(Chain {
        into: vec![StepKind::DeductStock],
        lease_ms: 60_000,
        worker: "w1".into(),
        next: Default::default(),
    });
    let mut tx = store.begin().await.expect("begin");
    let moved = steps::advance_many(
        &mut tx,
        &[("ord_a", None), ("ord_a", Some(&chain)), ("ord_b", None)],
    )
    .await
    .expect("advance");
    commit(tx).await;
    assert!(moved[0].0.is_empty() && moved[0].1.is_none());
    let claimed = moved[1].1.as_ref().expect("a's next step claimed");
    assert_eq!(claimed.step.id, a[1]);
    assert!(moved[1].0.is_empty());
    assert_eq!(moved[2].0.len(), 1);
    assert_eq!(moved[2].0[0].step_id, b[1]);
    assert_eq!(moved[2].0[0].kind, StepKind::DeductStock);
    assert!(moved[2].1.is_none());
    assert_eq!(status(store, a[1]).await, "running");
    assert_eq!(status(store, b[1]).await, "pending");

    // An order with nothing left is fulfilled; one still running its step stays paid.
    sqlx::query("UPDATE steps SET status = 'done' WHERE order_id = 'ord_b'")
        .execute(&store.pool)
        .await
        .expect("done");
    let mut tx = store.begin().await.expect("begin");
    let moved = steps::advance_many(&mut tx, &[("ord_b", None), ("ord_a", None)])
        .await
        .expect("advance");
    commit(tx).await;
    assert!(moved.iter().all(|m| m.0.is_empty() && m.1.is_none()));
    let order_status = |id: &'static str| async move {
        sqlx::query_scalar::<_, String>("SELECT status FROM orders WHERE id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .expect("order")
    };
    assert_eq!(order_status("ord_b").await, "fulfilled");
    assert_eq!(order_status("ord_a").await, "paid");
    app.finish().await;
}

/// A receipt step's first run sends without asking whether it was sent; a later run of the
/// same step (here: made due again by hand, as a run cut off after sending would be) finds
/// the record and sends nothing.
async fn receipt_step_run_again_sends_nothing_again(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let (id, co) = app.seat_checkout("again@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    let done = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(done["status"], "fulfilled");
    let first: (i64, String) = sqlx::query_as(
        "SELECT attempts, outcome FROM steps WHERE order_id = $1 AND kind = 'send_receipt'",
    )
    .bind(&id)
    .fetch_one(&app.store.pool)
    .await
    .expect("step");
    assert_eq!(first, (1, "receipt sent".to_owned()));

    sqlx::query(
        "UPDATE steps SET status = 'pending', next_run_at = 0, enqueued_at = NULL
         WHERE order_id = $1 AND kind = 'send_receipt'",
    )
    .bind(&id)
    .execute(&app.store.pool)
    .await
    .expect("due again");
    app.until_count(
        "the receipt step run again",
        "SELECT COUNT(*) FROM steps WHERE kind = 'send_receipt' AND attempts = 2 AND status = 'done'",
        |n| n == 1,
        Duration::from_secs(30),
        String::new,
    )
    .await;
    let again: String = sqlx::query_scalar(
        "SELECT outcome FROM steps WHERE order_id = $1 AND kind = 'send_receipt'",
    )
    .bind(&id)
    .fetch_one(&app.store.pool)
    .await
    .expect("step");
    assert_eq!(again, "already sent");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM emails_sent WHERE payment_id IN (SELECT payment_id FROM steps WHERE order_id = $1)", &id)
            .await,
        1
    );
    app.finish().await;
}
