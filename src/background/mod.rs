//! The loops beside the steps: work that is not one order's step, run on a schedule or when
//! woken, in every process that runs workers (see `lib.rs` for which process runs which).
//!
//! - [`housekeeping`]: stale payments looked up, expired reservations released, old keys
//!   and links removed;
//! - [`reconciliation`]: the store compared with each provider's recent payments, and missed
//!   events backfilled;
//! - [`refund_calls`]: the provider call of a refund, once per refund, and the loop that
//!   finishes refunds whose answer never came;
//! - [`notify_merchant`]: the sender of the merchant's webhooks.

pub mod housekeeping;
pub mod notify_merchant;
pub mod reconciliation;
pub mod refund_calls;
