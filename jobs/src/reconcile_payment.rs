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

/// What the provider's answer means for a payment we hold as `held`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The provider agrees with us: the event was stale.
    Agrees,
    /// We gave the payment up (failed, expired) but the provider captured it: take it back
    /// up — fulfil the order with it, or refund it if the order was paid otherwise.
    Revive,
    /// We hold the payment as captured, the provider says it failed: a person must look.
    Review,
    /// The provider has not decided either way yet (still open, pending).
    Undecided,
}

/// `held`: our payment status; `provider_paid` / `provider_failed`: what the API says.
pub fn verdict(held: &str, provider_paid: bool, provider_failed: bool) -> Verdict {
    let ours_paid = matches!(held, "paid" | "refunded");
    let ours_gone = matches!(held, "failed" | "expired");
    match (ours_paid, ours_gone, provider_paid, provider_failed) {
        (true, _, true, _) | (_, true, _, true) => Verdict::Agrees,
        (_, true, true, _) => Verdict::Revive,
        (true, _, _, true) => Verdict::Review,
        _ => Verdict::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_decides() {
        assert_eq!(verdict("paid", true, false), Verdict::Agrees);
        assert_eq!(verdict("failed", false, true), Verdict::Agrees);
        assert_eq!(verdict("expired", true, false), Verdict::Revive);
        assert_eq!(verdict("failed", true, false), Verdict::Revive);
        assert_eq!(verdict("paid", false, true), Verdict::Review);
        assert_eq!(verdict("paid", false, false), Verdict::Undecided);
        assert_eq!(verdict("created", false, false), Verdict::Undecided);
    }
}
