//! `grant_entitlement`: what the buyer gets access to. A SKU maps to a grant (a feature name
//! and an optional duration) in configuration; the grant row is unique per order and SKU and
//! is written in the transaction that marks the step done. SKUs without a configured grant
//! (physical goods) grant nothing, and the step says so in its outcome.

use crate::RetryPolicy;

pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_ms: 500,
    cap_ms: 60_000,
};

/// When a grant made at `now_ms` ends; `None` is for life.
pub fn expires_at_ms(now_ms: i64, duration_days: Option<u32>) -> Option<i64> {
    duration_days.map(|d| now_ms + i64::from(d) * 86_400_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiry() {
        assert_eq!(super::expires_at_ms(1_000, None), None);
        assert_eq!(super::expires_at_ms(1_000, Some(1)), Some(86_401_000));
    }
}
