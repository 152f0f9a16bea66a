//! Payments (one provider checkout each) and the stock reservations that ride with them.
//!
//! Payment status: creating (stock reserved, provider call in flight) → created (checkout
//! open) → pending (checkout complete, money not settled yet) → paid → refunded (in full;
//! partial refunds live in `refunds`); or failed / expired (reservations released, the
//! buyer told); or error (the provider call failed, the order can try again). An order may
//! have several payments: attempts after a failure, and — rarely — a second capture, which
//! is refunded.

use serde::Serialize;

use super::{Result, Store, Tx, catalogue, orders};
use crate::clock::now_ms;
use crate::domain::{OrderStatus, PaymentStatus, new_id};

use crate::domain::event::PaymentRef;

mod transitions;

pub use transitions::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub order_id: String,
    pub provider: String,
    pub provider_order_id: String,
    pub provider_payment_id: Option<String>,
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub currency: String,
    pub checkout_url: Option<String>,
}

const COLS: &str = "id, order_id, provider, provider_order_id, provider_payment_id, status, \
                    amount_minor, currency, checkout_url";

impl PaymentRow {
    /// How the payment's provider knows it.
    pub fn provider_ref(&self) -> PaymentRef<'_> {
        PaymentRef {
            provider_order_id: &self.provider_order_id,
            provider_payment_id: self.provider_payment_id.as_deref(),
        }
    }
}

/// The three ways a payment is looked up, each written once and usable on the pool or
/// inside a transaction.
pub(crate) async fn by_id<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    id: &str,
) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM payments WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(ex)
    .await?)
}

async fn by_provider_order<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    provider: &str,
    provider_order_id: &str,
) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM payments WHERE provider = $1 AND provider_order_id = $2"
    )))
    .bind(provider)
    .bind(provider_order_id)
    .fetch_optional(ex)
    .await?)
}

pub(super) async fn latest_for_order<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    order_id: &str,
) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM payments WHERE order_id = $1 ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(order_id)
    .fetch_optional(ex)
    .await?)
}

/// The payment a provider knows by its payment id (refund events name only that).
pub async fn by_provider_payment(
    tx: &mut Tx,
    provider: &str,
    provider_payment_id: &str,
) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM payments WHERE provider = $1 AND provider_payment_id = $2"
    )))
    .bind(provider)
    .bind(provider_payment_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// The order's captured payment (paid, or refunded already), if it has one.
pub async fn captured_for_order(tx: &mut Tx, order_id: &str) -> Result<Option<PaymentRow>> {
    Ok(sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM payments WHERE order_id = $1 AND status IN ('paid', 'refunded')
         ORDER BY created_at LIMIT 1"
    )))
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?)
}

/// What `begin_checkout` found.
#[derive(Debug)]
pub enum BeginCheckout {
    /// Stock is reserved and a payment row is `creating`: call the provider now.
    Started {
        payment_id: String,
        order: orders::OrderRow,
        items: Vec<orders::ItemRow>,
    },
    /// The order already has an open checkout: hand it out again.
    Existing(PaymentRow),
    /// Another request is creating the checkout right now.
    InProgress,
    OutOfStock {
        sku: String,
    },
    NotPayable {
        status: OrderStatus,
    },
    NotFound,
}

impl Store {
    /// Reserves the order's stock and opens a payment row, in one transaction that first
    /// moves the order to `pending_payment` with a conditional update. That update locks the
    /// order row (Postgres) or the database (SQLite) until commit, and the second of two
    /// concurrent calls finds the status already moved — so they cannot both reserve.
    #[tracing::instrument(skip(self))]
    pub async fn begin_checkout(
        &self,
        order_id: &str,
        provider: &str,
        reservation_ttl_ms: i64,
    ) -> Result<BeginCheckout> {
        let mut tx = self.begin().await?;
        let Some(order) = orders::get_in(&mut tx, order_id).await? else {
            return Ok(BeginCheckout::NotFound);
        };
        match order.status {
            // A failed or expired payment leaves the order payable again.
            OrderStatus::Created | OrderStatus::PaymentFailed => {}
            OrderStatus::PendingPayment => {
                let latest = latest_for_order(&mut *tx, order_id).await?;
                return Ok(match latest {
                    Some(p) if p.status == PaymentStatus::Creating => BeginCheckout::InProgress,
                    Some(p) => BeginCheckout::Existing(p),
                    None => BeginCheckout::InProgress,
                });
            }
            other => {
                return Ok(BeginCheckout::NotPayable { status: other });
            }
        }
        let payable = [OrderStatus::Created, OrderStatus::PaymentFailed];
        if !orders::transition(&mut tx, order_id, &payable, OrderStatus::PendingPayment).await? {
            return Ok(BeginCheckout::InProgress);
        }
        let items = orders::items_in(&mut tx, order_id).await?;
        let now = now_ms();
        for it in &items {
            sqlx::query(
                "INSERT INTO stock_reservations (order_id, sku, qty, status, expires_at, created_at, updated_at)
                 VALUES ($1, $2, $3, 'held', $4, $5, $5)
                 ON CONFLICT (order_id, sku) DO UPDATE SET qty = $3, status = 'held', expires_at = $4, updated_at = $5",
            )
            .bind(order_id)
            .bind(&it.sku)
            .bind(it.qty)
            .bind(now + reservation_ttl_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let payment_id = new_id("pay");
        sqlx::query(
            "INSERT INTO payments (id, order_id, provider, provider_order_id, status, amount_minor, currency, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'creating', $5, $6, $7, $7)",
        )
        .bind(&payment_id)
        .bind(order_id)
        .bind(provider)
        // Placeholder until the provider answers; unique like the real one.
        .bind(format!("creating:{payment_id}"))
        .bind(order.total_minor)
        .bind(&order.currency)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Last, right before the commit: a SKU's row is what every checkout of that item
        // waits for, so it is locked only for its update and the commit, not for this whole
        // transaction; and in SKU order, so two checkouts of the same items never wait on each
        // other in a circle. Out of stock rolls everything back.
        let mut by_sku: Vec<&orders::ItemRow> = items.iter().collect();
        by_sku.sort_by(|a, b| a.sku.cmp(&b.sku));
        for it in by_sku {
            if !catalogue::try_reserve(&mut tx, &it.sku, it.qty).await? {
                return Ok(BeginCheckout::OutOfStock {
                    sku: it.sku.clone(),
                });
            }
        }
        tx.commit().await?;
        Ok(BeginCheckout::Started {
            payment_id,
            order,
            items,
        })
    }

    /// The provider created the checkout: record its id and URL.
    pub async fn checkout_created(
        &self,
        payment_id: &str,
        provider_order_id: &str,
        checkout_url: Option<&str>,
    ) -> Result<PaymentRow> {
        let _writer = self.write_guard().await;
        let row = sqlx::query_as::<_, PaymentRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE payments SET provider_order_id = $1, checkout_url = $2,
                    status = CASE WHEN status = 'creating' THEN 'created' ELSE status END,
                    updated_at = $3
             WHERE id = $4 RETURNING {COLS}"
        )))
        .bind(provider_order_id)
        .bind(checkout_url)
        .bind(now_ms())
        .bind(payment_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row)
    }

    /// The provider call failed: give the stock back and let the order try again.
    pub async fn checkout_failed(&self, payment_id: &str, order_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let failed = sqlx::query(
            "UPDATE payments SET status = 'error', updated_at = $1 WHERE id = $2 AND status = 'creating'",
        )
        .bind(now_ms())
        .bind(payment_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // Only while still `creating`: an event may have moved the payment on meanwhile.
        if failed {
            release_reservations(&mut tx, order_id).await?;
            orders::transition(
                &mut tx,
                order_id,
                &[OrderStatus::PendingPayment],
                OrderStatus::Created,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The payment a provider knows as `provider_order_id`.
    pub async fn payment_by_provider_order(
        &self,
        provider: &str,
        provider_order_id: &str,
    ) -> Result<Option<PaymentRow>> {
        by_provider_order(&self.pool, provider, provider_order_id).await
    }

    /// The order's most recent payment, if any.
    pub async fn latest_payment(&self, order_id: &str) -> Result<Option<PaymentRow>> {
        latest_for_order(&self.pool, order_id).await
    }

    pub async fn get_payment(&self, id: &str) -> Result<Option<PaymentRow>> {
        by_id(&self.pool, id).await
    }
}

/// Releases every held reservation of the order (payment failed, expired, or no stock).
pub async fn release_reservations(tx: &mut Tx, order_id: &str) -> Result<()> {
    let mut held = end_held(tx, &[order_id], "released").await?;
    // SKU rows are locked in SKU order everywhere (see `begin_checkout`).
    held.sort_by(|a, b| a.1.cmp(&b.1));
    for (_, sku, qty) in held {
        catalogue::unreserve(tx, &sku, qty).await?;
    }
    Ok(())
}

/// Moves every held reservation of these orders to `to` (`consumed`, `released`); returns
/// what was held, as (order, SKU, quantity). One statement for all of them.
pub async fn end_held(
    tx: &mut Tx,
    order_ids: &[&str],
    to: &str,
) -> Result<Vec<(String, String, i64)>> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    // `status || ''` rather than `status`: the latter would let the planner combine the
    // primary key with the partial index of held reservations (`reservations_expiry`), which
    // holds every held reservation of the shop — a scan of all of them per call whenever
    // the table has no statistics yet (a new database, or autovacuum off).
    let sql = format!(
        "UPDATE stock_reservations SET status = $1, updated_at = $2
         WHERE order_id IN ({}) AND status || '' = 'held'
         RETURNING order_id, sku, qty",
        super::placeholders(3, order_ids.len())
    );
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .persistent(order_ids.len() == 1)
        .bind(to)
        .bind(now_ms());
    for o in order_ids {
        q = q.bind(*o);
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

impl Store {
    /// Open payments (checkout created, or completed but unsettled) that no webhook has
    /// moved for `stale_after_ms`, due for a look at their provider; each is given its next
    /// look at once — later as it ages (after half its age again, at least `stale_after_ms`),
    /// so an abandoned checkout is asked about a few times, not every minute forever.
    pub async fn take_stale_payments(
        &self,
        stale_after_ms: i64,
        limit: i64,
    ) -> Result<Vec<PaymentRow>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let due: Vec<PaymentRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM payments
             WHERE status IN ('created', 'pending') AND created_at <= $1
               AND (next_check_at IS NULL OR next_check_at <= $2)
             ORDER BY created_at LIMIT $3"
        )))
        .bind(now - stale_after_ms)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for p in &due {
            sqlx::query(
                "UPDATE payments SET next_check_at = $1 + CASE WHEN ($1 - created_at) / 2 > $2
                     THEN ($1 - created_at) / 2 ELSE $2 END
                 WHERE id = $3",
            )
            .bind(now)
            .bind(stale_after_ms)
            .bind(&p.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(due)
    }

    /// Releases the held stock of orders nobody paid for in time (reservations past
    /// `expires_at`, order still unpaid). A payment that completes after this still
    /// fulfils if stock is left, and is refunded if not (`deduct_stock`). Returns the
    /// orders released.
    /// Releases the stock of unpaid orders whose reservation ended. The open checkouts of
    /// `ending` providers (those whose checkouts never expire by themselves: Razorpay's
    /// orders stay payable for ever) end with it: the payment expires, and the order can be
    /// paid again with a new checkout. A late payment of the old one is then a capture of an
    /// expired payment: re-read, and refunded if the stock is gone.
    pub async fn expire_reservations(&self, limit: i64, ending: &[&str]) -> Result<Vec<String>> {
        let now = now_ms();
        let orders: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT r.order_id FROM stock_reservations r JOIN orders o ON o.id = r.order_id
             WHERE r.status = 'held' AND r.expires_at < $1
               AND o.status IN ('created', 'pending_payment', 'payment_failed')
             LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        for order_id in &orders {
            let mut tx = self.begin().await?;
            // With the order locked, a capture arriving now waits and finds it released.
            let unpaid = orders::lock_in(&mut tx, order_id).await?.is_some_and(|o| {
                matches!(
                    o.status,
                    OrderStatus::Created | OrderStatus::PendingPayment | OrderStatus::PaymentFailed
                )
            });
            if unpaid {
                release_reservations(&mut tx, order_id).await?;
                if let Some(p) = latest_for_order(&mut *tx, order_id).await?
                    && p.status == PaymentStatus::Created
                    && ending.contains(&p.provider.as_str())
                    && transition(
                        &mut tx,
                        &p.id,
                        &[PaymentStatus::Created],
                        PaymentStatus::Expired,
                    )
                    .await?
                {
                    orders::transition(
                        &mut tx,
                        order_id,
                        &[OrderStatus::PendingPayment],
                        OrderStatus::Created,
                    )
                    .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(orders)
    }
}
