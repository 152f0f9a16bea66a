//! The statuses of orders, payments, refunds and steps, and the one rule of which may follow
//! which ([`Status::may_become`]). The store's conditional `UPDATE … WHERE status IN (…)`
//! (`store::transition`) refuses a move this rule does not allow, so a wrong move in the
//! code is an error the first time it runs rather than an order in a state nobody planned.
//! The same words are the columns' text and the API's JSON, so a status is spelt in exactly
//! two places: here, and in SQL text. Batch moves take their `IN (…)` list from
//! `store::moves_from`, which checks this rule too (orders and payments to paid). The moves
//! still written as SQL alone (advance's orders to fulfilled, refund rows, step leases)
//! follow the same edges but are not checked when they run; they should go through it as
//! the refunds' and the pipeline's machines move to core/.

use std::fmt;

use super::Invalid;

/// A status of one of the engine's state machines.
pub trait Status: Copy + Eq + fmt::Debug + fmt::Display + 'static {
    /// What the state machine is called in errors ("order", "payment").
    const WHAT: &'static str;
    fn as_str(self) -> &'static str;
    /// Whether a row in `self` may move to `to`: the state machine's edges.
    fn may_become(self, to: Self) -> bool;
}

macro_rules! statuses {
    ($(#[$m:meta])* $name:ident: $what:literal { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($var),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$var),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(Invalid::new(
                        "status",
                        format!(
                            "no {} status {s:?}; known: {}",
                            $what,
                            [$($s),+].join(", ")
                        ),
                    )),
                }
            }
        }

        impl Status for $name {
            const WHAT: &'static str = $what;
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn may_become(self, to: Self) -> bool {
                self.rule(to)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

statuses! {
    /// created → pending_payment → paid → fulfilled → partially_refunded → refunded, with
    /// the side exits payment_failed (payable again), refund_pending → refunded (sold out),
    /// and needs_review (→ resolved by an admin, or back where it stood).
    OrderStatus: "order" {
        Created = "created",
        PendingPayment = "pending_payment",
        PaymentFailed = "payment_failed",
        Paid = "paid",
        Fulfilled = "fulfilled",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
        RefundPending = "refund_pending",
        NeedsReview = "needs_review",
        Resolved = "resolved",
    }
}

statuses! {
    /// creating (stock reserved, provider call in flight) → created (checkout open) →
    /// pending (complete, money not settled) → paid → refunded (in full); or failed / expired;
    /// or error (the provider call failed, the order can try again).
    PaymentStatus: "payment" {
        Creating = "creating",
        Created = "created",
        Pending = "pending",
        Paid = "paid",
        Refunded = "refunded",
        Failed = "failed",
        Expired = "expired",
        Error = "error",
    }
}

statuses! {
    /// requested (before the provider is called) → pending (accepted, money not moved) →
    /// succeeded | failed; a succeeded refund may still fail afterwards.
    RefundStatus: "refund" {
        Requested = "requested",
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

statuses! {
    /// waiting (an earlier step is not done) → pending (due) → running (leased) → done |
    /// skipped | dead; a failed attempt goes back to pending; an admin retries a dead step
    /// (pending again) or discards it.
    StepStatus: "step" {
        Waiting = "waiting",
        Pending = "pending",
        Running = "running",
        Done = "done",
        Skipped = "skipped",
        Dead = "dead",
        Discarded = "discarded",
    }
}

impl OrderStatus {
    /// The edges of the state machine (see [`Status::may_become`]).
    fn rule(self, to: Self) -> bool {
        use OrderStatus::*;
        let from = self;
        let edge = match to {
            // A checkout begins; it failed to open or expired unpaid.
            PendingPayment => matches!(from, Created | PaymentFailed),
            Created => from == PendingPayment,
            // Captured: from any payable state (an event may overtake the checkout's commit).
            Paid => matches!(from, Created | PendingPayment | PaymentFailed),
            // The payment failed; or the provider failed a capture we had held as paid.
            PaymentFailed => matches!(from, PendingPayment | Paid),
            Fulfilled => from == Paid,
            // Sold out while being fulfilled: the engine refunds it.
            RefundPending => from == Paid,
            Refunded => matches!(
                from,
                Paid | Fulfilled | PartiallyRefunded | NeedsReview | RefundPending
            ),
            PartiallyRefunded => matches!(from, Fulfilled | NeedsReview),
            // Anything not settled for good may be stopped for a person; a refund that
            // failed after it was booked stops even a refunded order.
            NeedsReview => !matches!(from, NeedsReview | Resolved),
            Resolved => from == NeedsReview,
        };
        // Back from review to where it stood: any state that may be stopped for review.
        edge || (from == NeedsReview && to != NeedsReview && to.may_become(NeedsReview))
    }
}

impl PaymentStatus {
    /// The edges of the state machine (see [`Status::may_become`]).
    fn rule(self, to: Self) -> bool {
        use PaymentStatus::*;
        let from = self;
        match to {
            Created | Error => from == Creating,
            Pending => matches!(from, Creating | Created),
            // Captured; or, after we gave it up, the provider's API says it was captured
            // (`reconcile_payment` — never an event's payload alone).
            Paid => matches!(from, Creating | Created | Pending | Failed | Expired),
            Refunded => from == Paid,
            // Declined; or a capture held as paid that the provider failed after all.
            Failed => matches!(from, Creating | Created | Pending | Paid),
            Expired => matches!(from, Creating | Created | Pending),
            Creating => false,
        }
    }
}

impl RefundStatus {
    /// The edges of the state machine (see [`Status::may_become`]).
    fn rule(self, to: Self) -> bool {
        use RefundStatus::*;
        let from = self;
        match to {
            Requested => false,
            Pending => from == Requested,
            Succeeded => matches!(from, Requested | Pending),
            Failed => from != Failed,
        }
    }
}

impl StepStatus {
    /// The edges of the state machine (see [`Status::may_become`]).
    fn rule(self, to: Self) -> bool {
        use StepStatus::*;
        let from = self;
        match to {
            Waiting => false,
            // Its turn came; a failed attempt's retry; a lost lease; an admin's retry.
            Pending => matches!(from, Waiting | Running | Dead | Skipped),
            Running => from == Pending,
            Done | Dead => from == Running,
            Discarded => from == Dead,
            // Stopped before it ran (a refund, a failed capture); or it had nothing to do.
            Skipped => matches!(from, Waiting | Pending | Running),
        }
    }
}

impl OrderStatus {
    /// The order's money was captured and not all of it went back: what it bought is the
    /// buyer's (an activation, an invoice download).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid | OrderStatus::Fulfilled | OrderStatus::PartiallyRefunded
        )
    }
}

impl PaymentStatus {
    /// The money was captured (and may since have gone back).
    pub fn captured(self) -> bool {
        matches!(self, PaymentStatus::Paid | PaymentStatus::Refunded)
    }

    /// Ended without money.
    pub fn gone(self) -> bool {
        matches!(self, PaymentStatus::Failed | PaymentStatus::Expired)
    }

    /// Still open at the provider: the buyer may yet pay.
    pub fn open(self) -> bool {
        matches!(
            self,
            PaymentStatus::Creating | PaymentStatus::Created | PaymentStatus::Pending
        )
    }
}

impl StepStatus {
    /// The step ran to its end or had no need to (a discarded one did not: an admin gave
    /// up on it).
    pub fn finished(self) -> bool {
        matches!(self, StepStatus::Done | StepStatus::Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<S: Status + std::str::FromStr<Err = Invalid> + serde::Serialize>(all: &[S]) {
        for s in all {
            assert_eq!(s.as_str().parse::<S>(), Ok(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::from(s.as_str()))
            );
            assert!(!s.may_become(*s), "{} {s} → {s}", S::WHAT);
        }
    }

    #[test]
    fn every_status_reads_back_as_itself() {
        round_trip(OrderStatus::ALL);
        round_trip(PaymentStatus::ALL);
        round_trip(RefundStatus::ALL);
        round_trip(StepStatus::ALL);
        let e = "Paid".parse::<OrderStatus>().unwrap_err();
        assert_eq!(e.field, "status");
        assert!(e.message.contains("no order status \"Paid\""), "{e}");
        assert!(e.message.contains("partially_refunded"), "{e}");
    }

    #[test]
    fn a_settled_order_never_goes_back_to_being_payable() {
        use OrderStatus::*;
        for from in [
            Paid,
            Fulfilled,
            PartiallyRefunded,
            Refunded,
            RefundPending,
            Resolved,
        ] {
            for to in [Created, PendingPayment] {
                assert!(!from.may_become(to), "{from} → {to}");
            }
        }
        assert!(!Fulfilled.may_become(Paid));
        assert!(!Refunded.may_become(PartiallyRefunded));
        // Only a person ends a review, or the order goes back where it stood.
        assert!(NeedsReview.may_become(Resolved));
        assert!(NeedsReview.may_become(Fulfilled));
        assert!(!Resolved.may_become(NeedsReview));
        assert!(!Resolved.may_become(Paid));
    }

    #[test]
    fn a_payment_is_captured_from_open_or_by_reconciliation_only() {
        use PaymentStatus::*;
        for from in PaymentStatus::ALL {
            assert_eq!(
                from.may_become(Paid),
                from.open() || from.gone(),
                "{from} → paid"
            );
        }
        assert!(!Refunded.may_become(Paid));
        assert!(!Error.may_become(Created));
    }

    #[test]
    fn a_refund_is_never_requested_twice() {
        for from in RefundStatus::ALL {
            assert!(!from.may_become(RefundStatus::Requested));
        }
        assert!(RefundStatus::Succeeded.may_become(RefundStatus::Failed));
        assert!(!RefundStatus::Failed.may_become(RefundStatus::Succeeded));
    }
}
