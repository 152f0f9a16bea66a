//! `deduct_stock`: turn the order's reservations into a real decrement of stock on hand.
//!
//! The decrement is one conditional `UPDATE … WHERE on_hand >= qty` per line, in the same
//! transaction that marks the step done, so it can never take stock below zero however many
//! orders race for the last item, and never happens twice for one order. When any line finds
//! no stock the whole transaction rolls back and the order takes the refund path instead:
//! reservations released, a `refund_payment` step inserted, invoice and entitlement skipped.

use crate::RetryPolicy;

/// Only the database is involved; failures are lock timeouts or a store restart.
pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_ms: 500,
    cap_ms: 60_000,
};

/// What the step decided, recorded as the step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Deducted,
    OutOfStock,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deducted => "deducted",
            Outcome::OutOfStock => "out_of_stock",
        }
    }
}
