//! Exponential backoff with full jitter, computed by us (no crate: it is six lines, and the
//! popular `backoff` crate is unmaintained).

use rand::Rng;

/// How often and how patiently a step is retried. Each step module declares its own next to
/// its code; the attempt count lives on the step row so a retry survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total runs allowed, the first one included. After that the step is dead.
    pub max_attempts: u32,
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl RetryPolicy {
    /// The upper bound of the wait after failed attempt number `attempt` (1-based):
    /// `min(cap, base · 2^(attempt-1))`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(32);
        self.base_ms.saturating_mul(1u64 << exp).min(self.cap_ms)
    }

    /// Full jitter: a uniformly random wait in `[0, ceiling]`, so that a burst of failures
    /// (a provider outage) does not come back as a synchronized burst of retries.
    pub fn delay_ms(&self, attempt: u32, rng: &mut impl Rng) -> u64 {
        rng.random_range(0..=self.ceiling_ms(attempt))
    }

    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_ms: 100,
            cap_ms: 1_000,
        };
        assert_eq!(p.ceiling_ms(1), 100);
        assert_eq!(p.ceiling_ms(2), 200);
        assert_eq!(p.ceiling_ms(4), 800);
        assert_eq!(p.ceiling_ms(5), 1_000);
        assert_eq!(p.ceiling_ms(200), 1_000);
        let mut rng = rand::rng();
        for attempt in 1..10 {
            assert!(p.delay_ms(attempt, &mut rng) <= p.ceiling_ms(attempt));
        }
        assert!(!p.exhausted(4));
        assert!(p.exhausted(5));
    }
}
