//! # fulfilld's job contract
//!
//! Everything a worker and a producer of work must agree on, and nothing that touches a
//! socket or a database:
//!
//! - [`Wake`]: the only payload that ever travels through a queue backend. It names a row of
//!   the store's `steps` table and nothing else — the store is the source of truth, so a lost,
//!   duplicated or stale wake-up is harmless (the worker claims the row or finds nothing to do).
//! - [`StepKind`]: the fulfilment steps, their order in an order's pipeline, and the retry
//!   policy of each.
//! - [`StepError`]: how a step failure is classified (transient → retried with backoff,
//!   permanent → dead letter).
//! - One module per step with that step's retry policy and its pure decision logic (amount
//!   checks, tax arithmetic, receipt text, entitlement expiry). The I/O half of each step
//!   lives in `fulfilld::pipeline::<step>`, a file of the same name.

pub mod confirm_capture;
pub mod deduct_stock;
pub mod grant_entitlement;
pub mod issue_invoice;
mod policy;
pub mod reconcile_payment;
pub mod refund_payment;
pub mod send_receipt;

pub use policy::RetryPolicy;
use serde::{Deserialize, Serialize};

/// A wake-up: "step `step_id` may be due, look at it". Deliberately tiny and stable: it is
/// the queue payload, and payloads outlive deploys, so it must never grow business data.
/// `kind` picks the queue it travels on (one per step kind, so a slow kind never starves a
/// fast one); on the wire only the id is sent, on the kind's own queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    pub step_id: i64,
    pub kind: StepKind,
}

/// The fulfilment steps. The string form is stored in the `steps.kind` column and must not
/// change once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    ConfirmCapture,
    DeductStock,
    RefundPayment,
    IssueInvoice,
    SendReceipt,
    GrantEntitlement,
    RefundExtraPayment,
    ReconcilePayment,
    NotifyPaymentFailed,
    NotifyRefund,
}

impl StepKind {
    /// The steps created for every paid order, in pipeline order. `RefundPayment` is not
    /// among them: it is inserted only when a paid order cannot be fulfilled.
    pub const FULFILMENT: [StepKind; 5] = [
        StepKind::ConfirmCapture,
        StepKind::DeductStock,
        StepKind::IssueInvoice,
        StepKind::SendReceipt,
        StepKind::GrantEntitlement,
    ];

    pub const ALL: [StepKind; 10] = [
        StepKind::ConfirmCapture,
        StepKind::DeductStock,
        StepKind::RefundPayment,
        StepKind::IssueInvoice,
        StepKind::SendReceipt,
        StepKind::GrantEntitlement,
        StepKind::RefundExtraPayment,
        StepKind::ReconcilePayment,
        StepKind::NotifyPaymentFailed,
        StepKind::NotifyRefund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::ConfirmCapture => "confirm_capture",
            StepKind::DeductStock => "deduct_stock",
            StepKind::RefundPayment => "refund_payment",
            StepKind::IssueInvoice => "issue_invoice",
            StepKind::SendReceipt => "send_receipt",
            StepKind::GrantEntitlement => "grant_entitlement",
            StepKind::RefundExtraPayment => "refund_extra_payment",
            StepKind::ReconcilePayment => "reconcile_payment",
            StepKind::NotifyPaymentFailed => "notify_payment_failed",
            StepKind::NotifyRefund => "notify_refund",
        }
    }

    /// Whether the step only reads and writes the store (no provider, no email, nothing
    /// outside the database). A worker that finishes an order's previous step runs such a
    /// step straight after, claimed in the same commit, instead of sending it through its
    /// queue: it cannot hold a worker for long, so it starves no other kind.
    pub fn store_only(self) -> bool {
        matches!(
            self,
            StepKind::DeductStock | StepKind::IssueInvoice | StepKind::GrantEntitlement
        )
    }

    pub fn parse(s: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Where the step sits in an order's pipeline: a step becomes due only when every step
    /// with a lower position is done or skipped. Gaps leave room for steps added later
    /// (the refund sits between stock and invoice). The steps that are not about the
    /// order's own fulfilment — refunding a second captured payment, re-reading a payment
    /// an event contradicted, telling the buyer a payment failed or was refunded — come
    /// after it.
    /// Steps at this position or after are not part of the order's fulfilment pipeline:
    /// they never hold it up, and the order is fulfilled without waiting for them.
    pub const OUTSIDE_PIPELINE: i64 = 60;

    pub fn position(self) -> i64 {
        match self {
            StepKind::ConfirmCapture => 10,
            StepKind::DeductStock => 20,
            StepKind::RefundPayment => 25,
            StepKind::IssueInvoice => 30,
            StepKind::SendReceipt => 40,
            StepKind::GrantEntitlement => 50,
            StepKind::RefundExtraPayment => StepKind::OUTSIDE_PIPELINE,
            StepKind::ReconcilePayment => 70,
            StepKind::NotifyPaymentFailed => 80,
            StepKind::NotifyRefund => 90,
        }
    }

    pub fn policy(self) -> RetryPolicy {
        match self {
            StepKind::ConfirmCapture => confirm_capture::POLICY,
            StepKind::DeductStock => deduct_stock::POLICY,
            StepKind::RefundPayment => refund_payment::POLICY,
            StepKind::IssueInvoice => issue_invoice::POLICY,
            StepKind::SendReceipt => send_receipt::POLICY,
            StepKind::GrantEntitlement => grant_entitlement::POLICY,
            StepKind::RefundExtraPayment => refund_payment::POLICY,
            StepKind::ReconcilePayment => reconcile_payment::POLICY,
            StepKind::NotifyPaymentFailed | StepKind::NotifyRefund => send_receipt::POLICY,
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step failure, classified once where it is understood. Transient failures (network,
/// timeouts, 429/5xx) are rescheduled in the store with backoff; permanent ones (amount
/// mismatch, a 4xx retrying cannot fix) go straight to the dead-letter state. A step that
/// is waiting on the world (a capture the provider holds as pending, which may take days)
/// is not failing: it runs again after [`WAITING_RETRY_MS`] (or when an event wakes it), and
/// the wait does not use up its attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
    #[error("waiting: {0}")]
    Waiting(String),
}

/// How long a [`StepError::Waiting`] step waits before it looks again.
pub const WAITING_RETRY_MS: i64 = 15 * 60 * 1000;

impl StepError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, StepError::Permanent(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `1 s`, `0.5 s`, `5 min`, `1 h`: how the operations guide writes a duration.
    fn human(ms: u64) -> String {
        match ms {
            ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
            ms if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
            ms => format!("{} s", ms as f64 / 1000.0),
        }
    }

    #[test]
    fn the_operations_guide_states_every_retry_policy() {
        let guide = include_str!("../../docs/operations.md");
        for k in StepKind::ALL {
            let p = k.policy();
            let row = format!(
                "| `{k}` | {} | {} | {} |",
                p.max_attempts,
                human(p.base_ms),
                human(p.cap_ms)
            );
            assert!(
                guide.contains(&row),
                "docs/operations.md lacks the row {row}"
            );
        }
    }

    #[test]
    fn kinds_round_trip_and_positions_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in StepKind::ALL {
            assert_eq!(StepKind::parse(k.as_str()), Some(k));
            assert!(seen.insert(k.position()), "duplicate position for {k}");
        }
        assert_eq!(StepKind::parse("nope"), None);
        let positions: Vec<i64> = StepKind::FULFILMENT.iter().map(|k| k.position()).collect();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(positions, sorted, "FULFILMENT must be in pipeline order");
    }
}
