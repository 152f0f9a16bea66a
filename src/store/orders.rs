//! Orders and their lines. The server prices every order from its own catalogue; a client
//! never sends an amount that is trusted.
//!
//! Order status: created → pending_payment → paid → fulfilled → partially_refunded →
//! refunded, with the side exits payment_failed (payable again), refund_pending → refunded
//! (sold out), and needs_review (→ resolved by an admin, or back where it stood). Every transition is a conditional `UPDATE … WHERE status
//! IN (…)`, so a late or duplicated event can never move an order backwards; the one way
//! back from payment_failed to paid is the provider's API confirming a capture we had given
//! up on (`reconcile_payment`), never an event's payload alone.

use super::{Result, Store, Tx, catalogue};
use crate::clock::now_ms;
use crate::domain::{Currency, EmailAddress, Invalid, OrderId, OrderStatus, Sku, parse_qty};

pub use super::rows::{ItemRow, OrderRow};

const SELECT_ORDER: &str = "SELECT id, customer_email, status, total_minor, currency, created_at \
     FROM orders WHERE id = $1";
const SELECT_ITEMS: &str = "SELECT sku, name, qty, unit_price_minor FROM order_items \
     WHERE order_id = $1 ORDER BY line_no";

impl Store {
    /// Prices and stores a new order. Lines naming the same SKU are merged. The outer error
    /// is ours; the inner one is the caller's (unknown SKU, mixed currencies).
    #[tracing::instrument(skip_all)]
    pub async fn create_order(
        &self,
        email: &EmailAddress,
        lines: &[(Sku, i64)],
        buyer_token_hash: &str,
    ) -> Result<Result<OrderRow, Invalid>> {
        let mut merged: Vec<(usize, &Sku, i64)> = Vec::new();
        for (i, (sku, qty)) in lines.iter().enumerate() {
            match merged.iter_mut().find(|(_, s, _)| *s == sku) {
                Some(m) => m.2 += qty,
                None => merged.push((i, sku, *qty)),
            }
        }
        // The cap holds for the merged line: ten lines of 10,000 are not one of 100,000.
        for (i, sku, qty) in &merged {
            if let Err(e) = parse_qty(&format!("items[{i}].qty"), *qty) {
                return Ok(Err(Invalid::new(
                    e.field,
                    format!("{} (all lines of {} together)", e.message, sku.as_str()),
                )));
            }
        }
        let mut tx = self.begin().await?;
        let names: Vec<&str> = merged.iter().map(|(_, s, _)| s.as_str()).collect();
        let rows = catalogue::lookup(&mut tx, &names).await?;
        let mut currency: Option<String> = None;
        let mut total: i64 = 0;
        let mut priced = Vec::with_capacity(merged.len());
        for (i, sku, qty) in &merged {
            let Some(row) = rows.iter().find(|r| r.sku == sku.as_str()) else {
                return Ok(Err(Invalid::new(
                    format!("items[{i}].sku"),
                    format!("no SKU {:?} in the catalogue", sku.as_str()),
                )));
            };
            match &currency {
                None => currency = Some(row.currency.clone()),
                Some(c) if *c != row.currency => {
                    return Ok(Err(Invalid::new(
                        format!("items[{i}].sku"),
                        format!(
                            "{:?} is priced in {}, the order so far in {c}; one currency per order",
                            sku.as_str(),
                            row.currency
                        ),
                    )));
                }
                Some(_) => {}
            }
            let Some(line_total) = row.price_minor.checked_mul(*qty) else {
                return Ok(Err(Invalid::new(
                    format!("items[{i}].qty"),
                    "amount too large",
                )));
            };
            total = match total.checked_add(line_total) {
                Some(t) => t,
                None => return Ok(Err(Invalid::new("items", "amount too large"))),
            };
            priced.push((row, *qty));
        }
        let Some(currency) = currency else {
            return Ok(Err(Invalid::new(
                "items",
                "an order needs at least one item",
            )));
        };
        let id = OrderId::new();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO orders (id, customer_email, status, total_minor, currency, created_at, updated_at, buyer_token_hash)
             VALUES ($1, $2, 'created', $3, $4, $5, $5, $6)",
        )
        .bind(id.as_str())
        .bind(email.as_str())
        .bind(total)
        .bind(&currency)
        .bind(now)
        .bind(buyer_token_hash)
        .execute(&mut *tx)
        .await?;
        for (n, (row, qty)) in priced.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, sku, name, qty, unit_price_minor)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id.as_str())
            .bind(n as i64 + 1)
            .bind(&row.sku)
            .bind(&row.name)
            .bind(*qty)
            .bind(row.price_minor)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(OrderRow {
            id: id.to_string(),
            customer_email: email.as_str().to_owned(),
            status: OrderStatus::Created,
            total_minor: total,
            currency,
            created_at: now,
        }))
    }

    pub async fn get_order(&self, id: &str) -> Result<Option<OrderRow>> {
        Ok(sqlx::query_as::<_, OrderRow>(SELECT_ORDER)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether `buyer_token_hash` is the hash of the token order `id` was created with.
    pub async fn buyer_token_matches(&self, id: &str, buyer_token_hash: &str) -> Result<bool> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM orders WHERE id = $1 AND buyer_token_hash = $2",
        )
        .bind(id)
        .bind(buyer_token_hash)
        .fetch_one(&self.pool)
        .await?
            > 0)
    }

    pub async fn order_items(&self, id: &str) -> Result<Vec<ItemRow>> {
        Ok(sqlx::query_as::<_, ItemRow>(SELECT_ITEMS)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// The order, read with its row locked until the transaction ends (Postgres; SQLite's
/// writer lock already serializes): whoever else locks it — a refund being applied, a
/// refund being requested — waits, and then sees what this transaction did.
pub async fn lock_in(tx: &mut Tx, id: &str) -> Result<Option<OrderRow>> {
    Ok(get_many(tx, &[id], true).await?.pop().flatten())
}

pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<OrderRow>> {
    Ok(get_many(tx, &[id], false).await?.pop().flatten())
}

/// The orders `ids` name, in one query: read, or with `lock` locked as [`lock_in`] says.
/// Per id, its row (`None`: no such order).
pub async fn get_many(tx: &mut Tx, ids: &[&str], lock: bool) -> Result<Vec<Option<OrderRow>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = super::placeholders(1, ids.len());
    let sql = if lock {
        format!(
            "UPDATE orders SET updated_at = updated_at WHERE id IN ({list})
             RETURNING id, customer_email, status, total_minor, currency, created_at"
        )
    } else {
        format!(
            "SELECT id, customer_email, status, total_minor, currency, created_at
             FROM orders WHERE id IN ({list})"
        )
    };
    let mut q = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql)).persistent(ids.len() == 1);
    for id in ids {
        q = q.bind(*id);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    Ok(ids
        .iter()
        .map(|id| rows.iter().find(|r| r.id == *id).cloned())
        .collect())
}

pub async fn items_in(tx: &mut Tx, id: &str) -> Result<Vec<ItemRow>> {
    Ok(items_many(tx, &[id]).await?.pop().unwrap_or_default())
}

/// [`items_in`] for many orders in one query: per order (in the order given), its items.
pub async fn items_many(tx: &mut Tx, ids: &[&str]) -> Result<Vec<Vec<ItemRow>>> {
    let mut out = vec![Vec::new(); ids.len()];
    if ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT order_id, sku, name, qty, unit_price_minor FROM order_items
         WHERE order_id IN ({}) ORDER BY order_id, line_no",
        super::placeholders(1, ids.len())
    );
    let mut q = sqlx::query_as::<_, (String, String, String, i64, i64)>(sqlx::AssertSqlSafe(sql))
        .persistent(ids.len() == 1);
    for id in ids {
        q = q.bind(*id);
    }
    for (order, sku, name, qty, unit_price_minor) in q.fetch_all(&mut **tx).await? {
        let item = ItemRow {
            sku,
            name,
            qty,
            unit_price_minor,
        };
        // An order named twice gets its items twice.
        for (i, _) in ids.iter().enumerate().filter(|(_, o)| **o == order) {
            out[i].push(item.clone());
        }
    }
    Ok(out)
}

/// Which orders [`Store::find_orders`] lists.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// The buyer's address, whatever its case.
    pub email: Option<String>,
    pub status: Option<OrderStatus>,
    /// Only orders older than this one (the next page: ids sort by creation).
    pub before_id: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Orders newest first, by buyer and status (only the filters given are in the
    /// statement: a search by address always uses its index).
    pub async fn find_orders(&self, f: &OrderFilter) -> Result<Vec<OrderRow>> {
        let filters = super::Filters::default()
            .given("lower(customer_email) = lower(?)", f.email.as_deref())
            .given("status = ?", f.status.map(OrderStatus::as_str))
            .given("id < ?", f.before_id.as_deref());
        let sql = format!(
            "SELECT id, customer_email, status, total_minor, currency, created_at FROM orders
             {} ORDER BY id DESC LIMIT ${}",
            filters.sql(),
            filters.binds.len() + 1
        );
        let mut q = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(sql));
        for v in &filters.binds {
            q = q.bind(*v);
        }
        Ok(q.bind(f.limit).fetch_all(&self.pool).await?)
    }
}

/// Moves each of these orders that is still payable to paid, in one statement: the ids
/// that moved (an order paid already by another payment does not).
pub async fn mark_paid_many(tx: &mut Tx, ids: &[&str]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let payable = super::moves_from(
        &[
            OrderStatus::PendingPayment,
            OrderStatus::PaymentFailed,
            OrderStatus::Created,
        ],
        OrderStatus::Paid,
        "orders",
    )?;
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET status = 'paid', updated_at = $1
         WHERE status IN ({payable}) AND id IN ({})
         RETURNING id",
        super::placeholders(2, ids.len())
    )))
    .persistent(false)
    .bind(crate::clock::now_ms());
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

/// Moves the order to `to` if it is in one of `from`. Returns whether it moved.
pub async fn transition(
    tx: &mut Tx,
    id: &str,
    from: &[OrderStatus],
    to: OrderStatus,
) -> Result<bool> {
    // Remember where the order stood, for an admin retry to put it back.
    let also = if to == OrderStatus::NeedsReview {
        "review_from = status, "
    } else {
        ""
    };
    let moved = super::transition_setting(tx, "orders", id, from, to, also).await?;
    // The merchant hears of these from here; of paid, fulfilled and refunded where they
    // happen (with what they need to know).
    if moved && matches!(to, OrderStatus::PaymentFailed | OrderStatus::NeedsReview) {
        let event = format!("order.{to}");
        super::merchant::emit(tx, &event, &[(id, serde_json::Value::Null)]).await?;
    }
    Ok(moved)
}

/// Puts an order that needs review back where it stood before, once nothing holds it
/// there any more (no dead step of its pipeline left). Returns whether it moved.
pub async fn resume_from_review(tx: &mut Tx, id: &str) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE orders SET status = review_from, review_from = NULL, updated_at = $1
         WHERE id = $2 AND status = 'needs_review' AND review_from IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM steps WHERE order_id = $2 AND status = 'dead')",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Parses a stored currency (always valid: it came from the catalogue).
pub fn currency_of(row: &OrderRow) -> Currency {
    Currency::parse("currency", &row.currency).unwrap_or_else(|_| {
        // Unreachable unless the table was edited by hand; format as-is rather than fail.
        Currency::parse("currency", "XXX").expect("XXX is a valid code")
    })
}
