//! The catalogue: SKUs with their price and stock. `on_hand` is physical stock; `reserved`
//! is the part of it promised to checkouts in progress. Both only ever change through
//! conditional updates, so neither can go negative whatever races.

use super::{Result, Store, Tx};
use crate::clock::now_ms;
use crate::domain::{Currency, Sku};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SkuRow {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    /// Stock on hand.
    #[sqlx(rename = "on_hand")]
    pub stock: i64,
    pub reserved: i64,
}

impl Store {
    /// Creates or replaces a SKU. Setting `stock` is a stock count (a stocktake): it sets
    /// stock on hand and leaves reservations as they are. `actor` is audited, with what
    /// changed, in the same transaction.
    #[tracing::instrument(skip(self, name))]
    pub async fn put_sku(
        &self,
        sku: &Sku,
        name: &str,
        price_minor: i64,
        currency: &Currency,
        stock: i64,
        actor: &str,
    ) -> Result<SkuRow> {
        let mut tx = self.begin().await?;
        let before = sqlx::query_as::<_, SkuRow>(
            "SELECT sku, name, price_minor, currency, on_hand, reserved FROM skus WHERE sku = $1",
        )
        .bind(sku.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let row = sqlx::query_as::<_, SkuRow>(
            "INSERT INTO skus (sku, name, price_minor, currency, on_hand, reserved, updated_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6)
             ON CONFLICT (sku) DO UPDATE SET name = $2, price_minor = $3, currency = $4,
                 on_hand = $5, updated_at = $6
             RETURNING sku, name, price_minor, currency, on_hand, reserved",
        )
        .bind(sku.as_str())
        .bind(name)
        .bind(price_minor)
        .bind(currency.as_str())
        .bind(stock)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let what = match &before {
            None => format!(
                "created: {:?}, price {} {}, stock {}",
                row.name, row.price_minor, row.currency, row.stock
            ),
            Some(b) => {
                let mut changed = Vec::new();
                if b.name != row.name {
                    changed.push(format!("name {:?} -> {:?}", b.name, row.name));
                }
                if (b.price_minor, &b.currency) != (row.price_minor, &row.currency) {
                    changed.push(format!(
                        "price {} {} -> {} {}",
                        b.price_minor, b.currency, row.price_minor, row.currency
                    ));
                }
                if b.stock != row.stock {
                    changed.push(format!("stock {} -> {}", b.stock, row.stock));
                }
                if changed.is_empty() {
                    "unchanged".to_owned()
                } else {
                    changed.join("; ")
                }
            }
        };
        super::audit::record(&mut tx, actor, "sku.put", sku.as_str(), Some(&what)).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// The whole catalogue, by SKU.
    pub async fn list_skus(&self) -> Result<Vec<SkuRow>> {
        Ok(sqlx::query_as::<_, SkuRow>(
            "SELECT sku, name, price_minor, currency, on_hand, reserved FROM skus ORDER BY sku",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_sku(&self, sku: &str) -> Result<Option<SkuRow>> {
        Ok(sqlx::query_as::<_, SkuRow>(
            "SELECT sku, name, price_minor, currency, on_hand, reserved FROM skus WHERE sku = $1",
        )
        .bind(sku)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// Reserves `qty` of `sku` if that much is available (on hand and not already reserved).
pub async fn try_reserve(tx: &mut Tx, sku: &str, qty: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE skus SET reserved = reserved + $1 WHERE sku = $2 AND on_hand - reserved >= $1",
    )
    .bind(qty)
    .bind(sku)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Gives back a reservation without touching stock on hand.
pub async fn unreserve(tx: &mut Tx, sku: &str, qty: i64) -> Result<()> {
    sqlx::query("UPDATE skus SET reserved = reserved - $1 WHERE sku = $2 AND reserved >= $1")
        .bind(qty)
        .bind(sku)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Puts returned stock back on hand (a refunded order's goods came back).
pub async fn restock(tx: &mut Tx, sku: &str, qty: i64) -> Result<()> {
    sqlx::query("UPDATE skus SET on_hand = on_hand + $1, updated_at = $2 WHERE sku = $3")
        .bind(qty)
        .bind(crate::clock::now_ms())
        .bind(sku)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The conditional decrement at the heart of "never oversell": stock on hand goes down by
/// `qty` only if at least `qty` is on hand, and `held` (the order's still-held reservation
/// of this SKU, 0 if it was released) is consumed. Returns false, changing nothing, when
/// the stock is gone.
pub async fn try_deduct(tx: &mut Tx, sku: &str, qty: i64, held: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE skus SET on_hand = on_hand - $1, reserved = reserved - $2
         WHERE sku = $3 AND on_hand >= $1 AND reserved >= $2",
    )
    .bind(qty)
    .bind(held)
    .bind(sku)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The catalogue rows of the given SKUs (those that exist), read inside the transaction
/// that prices an order.
pub async fn lookup(tx: &mut Tx, skus: &[&str]) -> Result<Vec<SkuRow>> {
    let mut out = Vec::with_capacity(skus.len());
    for s in skus {
        let row = sqlx::query_as::<_, SkuRow>(
            "SELECT sku, name, price_minor, currency, on_hand, reserved FROM skus WHERE sku = $1",
        )
        .bind(*s)
        .fetch_optional(&mut **tx)
        .await?;
        out.extend(row);
    }
    Ok(out)
}
