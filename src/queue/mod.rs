//! Wake-ups. The store's step table is the durable queue; a queue backend only carries
//! "step N may be due" to a worker quickly. Producers commit step rows first and wake after
//! the commit; the sweeper covers every wake-up that was lost (a crash between commit and
//! wake, a restart that emptied an in-process queue, a retry whose backoff ended).
//!
//! # Layout
//! - `memory`: the embedded default — apalis's in-process backend, fed from the step table.
//! - `sweeper`: re-enqueues due steps and releases expired leases.

pub mod memory;
pub mod sweeper;

pub use memory::Queue;
