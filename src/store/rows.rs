//! Rows more than one aggregate reads: an order and its lines (the order's own module writes
//! them; the merchant webhooks describe them). Kept apart so neither module needs the other
//! for its types.

use serde::Serialize;

use crate::domain::OrderStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OrderRow {
    pub id: String,
    pub customer_email: String,
    pub status: OrderStatus,
    pub total_minor: i64,
    pub currency: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ItemRow {
    pub sku: String,
    pub name: String,
    pub qty: i64,
    pub unit_price_minor: i64,
}
