//! Housekeeping: payments no webhook ever moves are looked up at their provider, and stock
//! held for buyers who never pay goes back on sale.

use serde_json::json;

use crate::harness::{Backend, s, spawn};
use crate::on_both_stores;

on_both_stores!(
    stale_payment_is_fulfilled_without_any_webhook,
    expired_reservation_is_released_and_a_late_payment_is_refunded_if_sold_out,
    a_sold_out_refund_that_fails_after_pending_sends_the_order_to_review,
);

const FAST: [(&str, &str); 2] = [
    ("FULFILLD__QUEUE__HOUSEKEEPING_INTERVAL_MS", "100"),
    ("FULFILLD__PAYMENTS__STALE_AFTER_MS", "0"),
];

/// The provider completes the payment but sends no webhook, and the buyer never returns to
/// the success page: the stale-payment check asks the provider and the order is fulfilled.
/// A checkout nobody paid is asked about too, and stays open.
async fn stale_payment_is_fulfilled_without_any_webhook(backend: Backend) {
    let app = spawn(backend, &FAST).await;
    app.put_sku("SEAT", 1000, 5).await;
    let (open_id, _) = app.seat_checkout("open@example.com", 1, "stripe").await;
    let (id, co) = app.seat_checkout("gone@example.com", 1, "stripe").await;
    let paid = app
        .pay(s(&co["provider_order_id"]), json!({"webhook": "none"}))
        .await;
    assert_eq!(paid["deliveries"], json!([]), "no webhook was sent: {paid}");
    let o = app.wait_for(&id, &["fulfilled", "needs_review"]).await;
    assert_eq!(o["status"], "fulfilled", "{o:#}");
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM webhook_events WHERE payment_id IN (SELECT id FROM payments WHERE order_id = $1)",
            &id
        )
        .await,
        0,
        "fulfilled without any event"
    );
    let open = app.order(&open_id).await;
    assert_eq!(open["status"], "pending_payment", "{open:#}");
    assert_eq!(app.stock("SEAT").await, (4, 1), "one sold, one still held");
    // A Razorpay attempt that failed, unannounced, is read and changes nothing (the buyer
    // may retry on the same order); when the reservation ends, the stock goes back and the
    // order is payable with a new checkout.
    let (failed, co) = app
        .seat_checkout("declined@example.com", 1, "razorpay")
        .await;
    assert_eq!(app.stock("SEAT").await, (4, 2));
    app.sandbox_post(
        &format!(
            "/sandbox/razorpay/orders/{}/pay",
            s(&co["provider_order_id"])
        ),
        json!({"webhook": "none", "outcome": "failed"}),
    )
    .await;
    assert_eq!(app.order(&failed).await["status"], "pending_payment");
    sqlx::query("UPDATE stock_reservations SET expires_at = 0 WHERE order_id = $1")
        .bind(&failed)
        .execute(&app.store.pool)
        .await
        .expect("end reservation");
    let o = app
        .wait_until(&failed, "released when its reservation ended", |o| {
            o["status"] == "created"
        })
        .await;
    assert_eq!(o["payment"]["status"], "expired", "{o:#}");
    assert_eq!(app.stock("SEAT").await, (4, 1), "its seat is back on sale");
    app.finish().await;
}

/// The reservation of a buyer who wandered off expires and the last seat goes back on sale;
/// another buyer takes it; the first buyer's late payment then finds it sold and is refunded.
async fn expired_reservation_is_released_and_a_late_payment_is_refunded_if_sold_out(
    backend: Backend,
) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__QUEUE__HOUSEKEEPING_INTERVAL_MS", "100"),
            ("FULFILLD__CHECKOUT__RESERVATION_TTL_SECS", "0"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 1).await;
    let (slow, slow_co) = app.seat_checkout("slow@example.com", 1, "stripe").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.stock("SEAT").await != (1, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the reservation was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(app.order(&slow).await["status"], "pending_payment");
    let (quick, quick_co) = app.seat_checkout("quick@example.com", 1, "stripe").await;
    app.pay(s(&quick_co["provider_order_id"]), json!({})).await;
    let q = app.wait_for(&quick, &["fulfilled", "needs_review"]).await;
    assert_eq!(q["status"], "fulfilled", "{q:#}");
    app.pay(s(&slow_co["provider_order_id"]), json!({})).await;
    let late = app
        .wait_for(&slow, &["refunded", "fulfilled", "needs_review"])
        .await;
    assert_eq!(late["status"], "refunded", "sold out meanwhile: {late:#}");
    assert_eq!(app.stock("SEAT").await, (0, 0));
    app.finish().await;
}

/// The late buyer's sold-out refund is answered `pending` by Stripe and then fails: the
/// buyer is still owed the money, so the order goes to review (not left "refunding").
async fn a_sold_out_refund_that_fails_after_pending_sends_the_order_to_review(backend: Backend) {
    let app = spawn(
        backend,
        &[
            ("FULFILLD__QUEUE__HOUSEKEEPING_INTERVAL_MS", "100"),
            ("FULFILLD__CHECKOUT__RESERVATION_TTL_SECS", "0"),
        ],
    )
    .await;
    app.put_sku("SEAT", 1000, 1).await;
    let (slow, slow_co) = app
        .seat_checkout("slow-pending@example.com", 1, "stripe")
        .await;
    app.wait_until(&slow, "the reservation released", |_| true)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.stock("SEAT").await != (1, 0) {
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (quick, quick_co) = app
        .seat_checkout("quick-pending@example.com", 1, "stripe")
        .await;
    app.pay(s(&quick_co["provider_order_id"]), json!({})).await;
    app.wait_for(&quick, &["fulfilled"]).await;
    app.sandbox_post("/sandbox/stripe/refunds/mode", json!({"status": "pending"}))
        .await;
    app.pay(s(&slow_co["provider_order_id"]), json!({})).await;
    let o = app
        .wait_until(&slow, "the sold-out refund asked for", |o| {
            o["refunds"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["status"] == "pending"))
        })
        .await;
    assert_eq!(o["status"], "refund_pending", "{o:#}");
    let re = s(&o["refunds"][0]["provider_refund_id"]).to_owned();
    app.sandbox_post(
        &format!("/sandbox/stripe/refunds/{re}/settle"),
        json!({"outcome": "failed"}),
    )
    .await;
    let o = app
        .wait_until(&slow, "sent to review", |o| o["status"] == "needs_review")
        .await;
    assert_eq!(o["refunds"][0]["status"], "failed", "{o:#}");
    app.finish().await;
}
