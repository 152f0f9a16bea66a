//! `reconcile_payment`: an event contradicted the state we hold for a payment — a failure
//! after a capture, a capture after we gave the payment up. The payload alone never moves a
//! payment backwards or revives it: this step re-reads the payment from the provider's API,
//! and the provider's answer decides.

use crate::RetryPolicy;

/// A read, like `confirm_capture`'s: retry often at first.
pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    base_ms: 1_000,
    cap_ms: 300_000,
};
