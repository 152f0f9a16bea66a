//! PayPal's JSON shapes (OAuth, Orders v2, Payments v2, webhooks), as far as fulfilld reads
//! or (in the sandbox) writes them. Names are PayPal's own; unknown fields are ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/oauth2/token` (client credentials). Only `access_token` and `token_type` are
/// required of a token answer (RFC 6749 §5.1); PayPal's `scope`, `app_id`, `nonce` and
/// `expires_in` are read when there (<https://developer.paypal.com/api/rest/authentication/>).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    #[serde(default)]
    pub scope: String,
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub app_id: String,
    /// Seconds the token lives; without it, it is fetched again for each call.
    #[serde(default)]
    pub expires_in: i64,
    #[serde(default)]
    pub nonce: String,
}

/// An amount: a decimal string with the currency's own number of digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub currency_code: String,
    pub value: String,
}

impl Money {
    /// The amount in minor units of its currency; None if either is unreadable.
    pub fn minor(&self) -> Option<i64> {
        crate::domain::Currency::parse("currency_code", &self.currency_code)
            .ok()?
            .parse_decimal(&self.value)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    pub href: String,
    pub rel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// An Orders v2 order. Status: CREATED, SAVED, APPROVED, VOIDED, COMPLETED,
/// PAYER_ACTION_REQUIRED.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    #[serde(default)]
    pub intent: String,
    pub status: String,
    #[serde(default)]
    pub purchase_units: Vec<PurchaseUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurchaseUnit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payments: Option<Payments>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Payments {
    #[serde(default)]
    pub captures: Vec<Capture>,
}

/// A capture. Status: COMPLETED, DECLINED, PARTIALLY_REFUNDED, PENDING, REFUNDED, FAILED.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capture {
    pub id: String,
    pub status: String,
    pub amount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default)]
    pub final_capture: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplementary_data: Option<SupplementaryData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SupplementaryData {
    #[serde(default)]
    pub related_ids: RelatedIds,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RelatedIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

/// A refund of a capture. Status: CANCELLED, FAILED, PENDING, COMPLETED.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// What the refund request put there (fulfilld: its refund id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// `rel: "up"` points at the refunded capture.
    #[serde(default)]
    pub links: Vec<Link>,
}

/// `GET /v1/reporting/transactions` (Transaction Search): one page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionSearch {
    #[serde(default)]
    pub transaction_details: Vec<TransactionDetail>,
    #[serde(default)]
    pub page: i64,
    #[serde(default)]
    pub total_pages: i64,
    #[serde(default)]
    pub total_items: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionDetail {
    pub transaction_info: TransactionInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionInfo {
    /// For a capture, the capture id.
    pub transaction_id: String,
    #[serde(default)]
    pub transaction_event_code: String,
    pub transaction_initiation_date: String,
    pub transaction_amount: Money,
    /// S (success), P (pending), D (denied), V (reversed).
    pub transaction_status: String,
    /// What the purchase unit's `custom_id` said (fulfilld: its payment id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_field: Option<String>,
}

/// `GET /v1/notifications/webhooks-events`: one page.
#[derive(Debug, Clone, Deserialize)]
pub struct EventList {
    #[serde(default)]
    pub events: Vec<Value>,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// A webhook event notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(default)]
    pub event_version: String,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub resource_type: String,
    pub event_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: Value,
    #[serde(default)]
    pub links: Vec<Link>,
}

/// `POST /v1/notifications/verify-webhook-signature`. `webhook_event` is the body exactly as
/// delivered: PayPal checks the signature against that JSON text, so a body parsed and
/// written again (keys reordered, `1.0` become `1`) answers FAILURE (PayPal's engineers in
/// paypal/PayPal-Python-SDK#196; the JSON.parse case in paypal/PayPal-node-SDK#412).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub auth_algo: String,
    pub cert_url: String,
    pub transmission_id: String,
    pub transmission_sig: String,
    pub transmission_time: String,
    pub webhook_id: String,
    pub webhook_event: Box<serde_json::value::RawValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// SUCCESS or FAILURE.
    pub verification_status: String,
}

/// The REST APIs' error envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub name: String,
    pub message: String,
    #[serde(default)]
    pub debug_id: String,
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub issue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The OAuth endpoint's error shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

impl Order {
    pub fn link(&self, rel: &str) -> Option<&str> {
        self.links
            .iter()
            .find(|l| l.rel == rel)
            .map(|l| l.href.as_str())
    }

    /// The capture that decides the order: a completed (or since refunded) one, else a
    /// pending one, else the newest.
    pub fn capture(&self) -> Option<&Capture> {
        let all = self
            .purchase_units
            .iter()
            .filter_map(|u| u.payments.as_ref())
            .flat_map(|p| p.captures.iter());
        all.min_by_key(|c| match c.status.as_str() {
            "COMPLETED" | "PARTIALLY_REFUNDED" | "REFUNDED" => 0,
            "PENDING" => 1,
            _ => 2,
        })
    }
}
