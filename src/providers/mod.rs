//! Payment providers. Each one turns its webhooks into a [`ProviderEvent`] and offers an API
//! client for the calls the pipeline makes (create a checkout, read a payment, refund). The
//! base URL comes from configuration, so the same code talks to the real provider or to
//! `fulfilld sandbox`.

pub mod stripe;

use jobs::StepError;

/// A verified provider event, reduced to what fulfilment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub provider: &'static str,
    /// The provider's event id: the deduplication key.
    pub event_id: String,
    pub event_type: String,
    /// The provider's id of the checkout/order the event is about, when it is about one.
    pub provider_order_id: Option<String>,
    /// Our own payment id, when the provider echoes it back (Stripe: `metadata.payment_id`).
    /// It finds the payment even when the event overtakes the commit of the provider's id.
    pub payment_ref: Option<String>,
    pub change: PaymentChange,
}

/// What an event means for our payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentChange {
    /// Money captured: fulfil.
    Paid { provider_payment_id: Option<String> },
    /// Checkout finished, money not settled yet (bank debits, vouchers): wait.
    AwaitingSettlement { provider_payment_id: Option<String> },
    /// Payment failed: release the stock.
    Failed,
    /// The checkout expired unpaid: release the stock.
    Expired,
    /// Stored and acknowledged, nothing to do.
    Ignored,
}

/// The provider's record of a payment, as `confirm_capture` checks it and the browser's
/// verify call applies it.
#[derive(Debug, Clone)]
pub struct PaymentState {
    /// What the record means for our payment, exactly as if an event had said it.
    pub change: PaymentChange,
    pub paid: bool,
    pub state: String,
    pub amount_minor: i64,
    pub currency: String,
    pub provider_payment_id: Option<String>,
}

/// An order line as sent to a hosted checkout page.
#[derive(Debug, Clone)]
pub struct CheckoutLine {
    pub name: String,
    pub qty: i64,
    pub unit_amount_minor: i64,
}

#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub order_id: String,
    pub payment_id: String,
    pub customer_email: String,
    pub currency: String,
    pub lines: Vec<CheckoutLine>,
    pub success_url: String,
    pub cancel_url: String,
}

#[derive(Debug, Clone)]
pub struct Checkout {
    pub provider_order_id: String,
    pub url: String,
    pub amount_minor: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request never got an answer (connection refused, reset, timeout).
    #[error("{provider}: request failed: {message}")]
    Transport {
        provider: &'static str,
        message: String,
    },
    /// The provider answered with an error status.
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// The provider answered 2xx with something we cannot read.
    #[error("{provider}: unexpected response: {message}")]
    Decode {
        provider: &'static str,
        message: String,
    },
}

impl ProviderError {
    /// Transport errors, 408, 409 (Stripe: idempotent request in flight), 429 and 5xx may
    /// succeed later; other answers will not change by asking again.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Transport { .. } => true,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            ProviderError::Decode { .. } => false,
        }
    }
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> StepError {
        if e.is_transient() {
            StepError::Transient(e.to_string())
        } else {
            StepError::Permanent(e.to_string())
        }
    }
}
