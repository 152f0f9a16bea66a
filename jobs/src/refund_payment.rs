//! `refund_payment`: give the money back when a paid order cannot be fulfilled (the last
//! item went to someone else). The provider call carries a deterministic idempotency key, so
//! a retry after a timeout — when we cannot know whether the first call landed — refunds at
//! most once; the refund row, under a fixed id per payment, records that it happened.

use crate::RetryPolicy;

pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 12,
    base_ms: 2_000,
    cap_ms: 900_000,
};

/// The key sent to the provider with the refund request. One full refund per payment.
pub fn idempotency_key(payment_id: &str) -> String {
    format!("fulfilld-refund:{payment_id}")
}
