//! `confirm_capture`: before anything is fulfilled, re-read the payment from the provider's
//! API and check that it is complete and paid, for exactly the amount and currency of the
//! order. A webhook only says "something happened"; this step is what makes fulfilment
//! depend on the provider's own record rather than on a message.

use crate::{RetryPolicy, StepError};

/// Provider reads are cheap and an outage is usually short: retry often at first.
pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    base_ms: 1_000,
    cap_ms: 300_000,
};

/// What the store says the buyer owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    pub amount_minor: i64,
    pub currency: &'a str,
}

/// What the provider says was paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<'a> {
    /// The provider confirms the money is captured (Stripe: `complete` + `paid`).
    pub paid: bool,
    /// The provider's own words for its state, for the error message.
    pub state: String,
    pub amount_minor: i64,
    pub currency: &'a str,
}

/// A payment that is not (yet) paid is transient: providers are eventually consistent and a
/// delayed method may still settle. A captured payment of the wrong amount or currency is
/// permanent: retrying will not change it, and the order needs a human.
pub fn check(expected: &Expected<'_>, observed: &Observed<'_>) -> Result<(), StepError> {
    if !observed.paid {
        return Err(StepError::Transient(format!(
            "payment not captured yet ({})",
            observed.state
        )));
    }
    if !observed.currency.eq_ignore_ascii_case(expected.currency) {
        return Err(StepError::Permanent(format!(
            "currency mismatch: order is {}, provider captured {}",
            expected.currency, observed.currency
        )));
    }
    if observed.amount_minor != expected.amount_minor {
        return Err(StepError::Permanent(format!(
            "amount mismatch: order is {} minor units, provider captured {}",
            expected.amount_minor, observed.amount_minor
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(paid: bool, amount: i64, cur: &str) -> Observed<'_> {
        Observed {
            paid,
            state: "complete/paid".into(),
            amount_minor: amount,
            currency: cur,
        }
    }

    #[test]
    fn classifies_mismatches_as_permanent_and_unpaid_as_transient() {
        let exp = Expected {
            amount_minor: 1000,
            currency: "USD",
        };
        assert_eq!(check(&exp, &obs(true, 1000, "usd")), Ok(()));
        assert!(
            check(&exp, &obs(true, 999, "usd"))
                .unwrap_err()
                .is_permanent()
        );
        assert!(
            check(&exp, &obs(true, 1000, "eur"))
                .unwrap_err()
                .is_permanent()
        );
        assert!(
            !check(&exp, &obs(false, 1000, "usd"))
                .unwrap_err()
                .is_permanent()
        );
    }
}
