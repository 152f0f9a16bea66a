//! `refund_payment`: give the money back when a paid order cannot be fulfilled (the last
//! item went to someone else), or for a second capture of a paid order. The refund row has a
//! fixed id per payment and the provider call an idempotency key made from it, so a retry
//! after a timeout — when we cannot know whether the first call landed — refunds at most
//! once.

use crate::RetryPolicy;

/// The buyer is owed the money and a provider outage can last hours: waits of at most 2 s,
/// 4 s … 34 min, then hourly; dead after about 5.1 h at worst (2.6 h expected).
pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 15,
    base_ms: 2_000,
    cap_ms: 3_600_000,
};
