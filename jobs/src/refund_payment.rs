//! `refund_payment`: give the money back when a paid order cannot be fulfilled (the last
//! item went to someone else), or for a second capture of a paid order. The refund row has a
//! fixed id per payment and the provider call an idempotency key made from it, so a retry
//! after a timeout — when we cannot know whether the first call landed — refunds at most
//! once.

use crate::RetryPolicy;

pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 12,
    base_ms: 2_000,
    cap_ms: 900_000,
};
