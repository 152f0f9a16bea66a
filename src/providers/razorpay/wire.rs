//! Razorpay's JSON shapes, as far as fulfilld reads or (in the sandbox) writes them. Field
//! names and value spellings are Razorpay's own; unknown fields are ignored on input.
//! `notes` is an object, or `[]` when empty, so it stays a `Value`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `order`: status `created` → `attempted` → `paid`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub entity: String,
    pub amount: i64,
    pub amount_paid: i64,
    pub amount_due: i64,
    pub currency: String,
    #[serde(default)]
    pub receipt: Option<String>,
    pub status: String,
    pub attempts: i64,
    #[serde(default)]
    pub notes: Value,
    /// Read as 0 when absent: a payment without it is still a payment (issue 21.6).
    #[serde(default)]
    pub created_at: i64,
}

/// `payment`: status `created` | `authorized` | `captured` | `refunded` | `failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub entity: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub captured: bool,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub notes: Value,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    /// Read as 0 when absent: a payment without it is still a payment (issue 21.6).
    #[serde(default)]
    pub created_at: i64,
}

/// `refund`: status `pending` | `processed` | `failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub entity: String,
    pub amount: i64,
    pub currency: String,
    pub payment_id: String,
    pub status: String,
    #[serde(default)]
    pub notes: Value,
    /// Read as 0 when absent: a payment without it is still a payment (issue 21.6).
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collection<T> {
    pub entity: String,
    pub count: usize,
    pub items: Vec<T>,
}

/// A webhook body. Its id travels in the `x-razorpay-event-id` header, not here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub entity: String,
    pub account_id: String,
    pub event: String,
    pub contains: Vec<String>,
    pub payload: EventPayload,
    /// Read as 0 when absent: a payment without it is still a payment (issue 21.6).
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Wrapped<Payment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Wrapped<Order>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Wrapped<Refund>>,
    /// Disputes are received and kept, not read (the sandbox writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute: Option<Wrapped<Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wrapped<T> {
    pub entity: T,
}

/// Razorpay's error envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
