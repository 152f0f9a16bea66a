//! The integration suite: one binary, every test run against the real engine and the real
//! sandbox on random loopback ports, once on SQLite and once on Postgres (a fresh database
//! per test). `scripts/test` makes sure a Postgres server is reachable first.

mod harness;

mod access;
mod admin;
mod api;
mod checkout;
mod crash;
mod demo;
mod failures;
mod fixtures;
mod fuzz;
mod housekeeping;
mod idempotency;
mod last_item;
mod limits;
mod merchant;
mod money;
mod observability;
mod paypal;
mod razorpay;
mod recent;
mod reconciliation;
mod refunds;
mod scale;
mod servers;
mod step_batch;
mod verify;
mod webhooks;
