//! The state machines that decide: what a provider's word does to a payment and its order
//! ([`payments`]), and what a stored webhook event does ([`events`]). They take the caller's
//! transaction and move rows only through `store`'s functions, which read and write and
//! decide nothing. (Refunds' machine is still in `store::refunds`, to move here next.)

pub mod events;
pub mod payments;
