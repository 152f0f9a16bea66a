//! Stripe's JSON shapes, as far as fulfilld reads or (in the sandbox) writes them. Field
//! names and value spellings are Stripe's own; unknown fields are ignored on input.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A field Stripe may send as `null`, read as its empty value.
fn null_as_empty<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An event, as delivered to a webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub api_version: Option<String>,
    pub created: i64,
    pub data: EventData,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub pending_webhooks: i64,
    #[serde(default)]
    pub request: Option<EventRequest>,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRequest {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// `checkout.session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub amount_subtotal: Option<i64>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub cancel_url: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// `created` and `expires_at` are only read for listing; an event without them is
    /// still applied (read as 0), not parked.
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub customer_email: Option<String>,
    #[serde(default)]
    pub expires_at: i64,
    pub livemode: bool,
    /// Nullable in Stripe's API reference: `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: BTreeMap<String, String>,
    pub mode: String,
    #[serde(default)]
    pub payment_intent: Option<String>,
    /// `paid` | `unpaid` | `no_payment_required`.
    pub payment_status: String,
    /// `open` | `complete` | `expired`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub success_url: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// A list page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List<T> {
    pub object: String,
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(default)]
    pub url: String,
}

/// `refund`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub amount: i64,
    pub created: i64,
    pub currency: String,
    /// Nullable in Stripe's API reference: `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// `pending` | `requires_action` | `succeeded` | `failed` | `canceled`; nullable in
    /// Stripe's API reference.
    #[serde(default)]
    pub status: Option<String>,
}

/// Stripe's error envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}
