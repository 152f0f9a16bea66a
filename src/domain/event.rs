//! What a provider said, in the engine's own terms: a verified event reduced to what it
//! means for our payment, and the refunds it reports. Providers produce these (`providers`),
//! the store applies them (`store`); neither needs the other to speak of them.

/// Our payment, as a provider knows it.
#[derive(Debug, Clone, Copy)]
pub struct PaymentRef<'a> {
    pub provider_order_id: &'a str,
    pub provider_payment_id: Option<&'a str>,
}

/// A verified provider event, reduced to what fulfilment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub provider: &'static str,
    /// The provider's event id: the deduplication key.
    pub event_id: String,
    pub event_type: String,
    /// The provider's id of the checkout/order the event is about, when it is about one.
    pub provider_order_id: Option<String>,
    /// The provider's id of the payment (Stripe payment intent, Razorpay payment, PayPal
    /// capture), for events that do not name the checkout (refunds).
    pub provider_payment_id: Option<String>,
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
    /// One attempt failed, and the checkout stays payable: Razorpay lets the buyer try again
    /// on the same order ("a Razorpay Order ID can be mapped to any number of payment
    /// attempts", <https://razorpay.com/docs/api/orders/create/>). Nothing moves; the stock
    /// stays held until a payment succeeds or the reservation ends.
    AttemptFailed,
    /// The checkout expired unpaid: release the stock.
    Expired,
    /// Money went back to the buyer (a refund we asked for, or one made on the provider's
    /// dashboard), or a refund failed after all.
    Refunded(RefundNotice),
    /// Stored and acknowledged, nothing to do.
    Ignored,
}

/// A refund, as a provider's event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    pub provider_refund_id: String,
    pub amount_minor: i64,
    /// The currency the provider names (ISO 4217, any case); None where it is not known
    /// (a refund kept before its payment was).
    pub currency: Option<String>,
    /// Our refund id, when the refund was made by fulfilld (see `providers::RefundRequest`).
    pub refund_ref: Option<String>,
    pub state: RefundState,
}

/// Where a refund stands at the provider. Only a succeeded one is booked (credit note,
/// revoked access, restock): a pending one has not moved the money yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    Succeeded,
    Pending,
    Failed,
}

impl RefundState {
    /// A provider's word for a refund's status: Stripe's `succeeded`, `pending`,
    /// `requires_action`, `failed`, `canceled` (<https://docs.stripe.com/api/refunds/object>);
    /// Razorpay's `processed`, `pending`, `failed`
    /// (<https://razorpay.com/docs/api/refunds/entity/>); PayPal's `COMPLETED`, `PENDING`,
    /// `FAILED`, `CANCELLED` (<https://developer.paypal.com/docs/api/payments/v2/#refunds_get>).
    /// A word none of them documents counts as pending: nothing is booked on a guess.
    pub fn of(status: &str) -> RefundState {
        match status.to_ascii_lowercase().as_str() {
            "succeeded" | "processed" | "completed" => RefundState::Succeeded,
            "failed" | "canceled" | "cancelled" => RefundState::Failed,
            _ => RefundState::Pending,
        }
    }
}
