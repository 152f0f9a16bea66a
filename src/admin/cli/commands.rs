//! The `fulfilld admin …` subcommands, as clap parses them.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Each step kind's queue: waiting, pending, retrying, running, dead, done in the last
    /// hour, and how long the longest-due step has been due.
    Queues,
    /// Steps, newest first.
    Steps {
        #[arg(long)]
        kind: Option<String>,
        /// waiting, pending, running, done, skipped, dead or discarded.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, value_name = "ORDER_ID")]
        order: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The next page: steps with a smaller id.
        #[arg(long, value_name = "STEP_ID")]
        before: Option<i64>,
    },
    /// Dead letters: steps that ran out of retries or failed for good.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Stored webhook events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Orders: a search, or one order.
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
    /// Webhooks to the merchant's systems: endpoints and deliveries.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// The audit log, newest first: who (the admin token's name, and the person the caller
    /// named) did what to what, and why.
    Audit {
        /// An admin token's name.
        #[arg(long)]
        actor: Option<String>,
        /// e.g. sku.put, order.refund, endpoint.read_secret.
        #[arg(long)]
        action: Option<String>,
        /// What was acted on: an order, step, endpoint or SKU id.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The next page: entries with a smaller id.
        #[arg(long, value_name = "ENTRY_ID")]
        before: Option<i64>,
    },
    /// Compare the providers' payments since a point in time with the store: backfill
    /// undelivered events, repair what is safe, flag the rest needs_review.
    Reconcile {
        /// An age (30m, 24h, 7d) or Unix seconds.
        #[arg(long)]
        since: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// The dead steps, newest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        /// Dead for at least this many seconds.
        #[arg(long, value_name = "SECS")]
        older_than: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Run a dead step again (its order's pipeline resumes where it stopped), or with
    /// --all every dead step that matches --kind / --older-than.
    Retry {
        /// The dead step (or --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        step_id: Option<i64>,
        #[arg(long)]
        all: bool,
        #[arg(long, requires = "all")]
        kind: Option<String>,
        #[arg(long, value_name = "SECS", requires = "all")]
        older_than: Option<i64>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give up on a dead step for good.
    Discard {
        step_id: i64,
        /// Why (required; kept in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// The latest webhook events.
    List {
        #[arg(long)]
        provider: Option<String>,
        /// Only events kept but not applied (unreadable, failing, signed but senseless).
        #[arg(long)]
        parked: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Verify a stored event again and apply it again (a no-op if it was applied).
    Replay {
        event_id: i64,
        /// Only say what it would change.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// The endpoints.
    List,
    /// Add an endpoint; prints its signing secret (this once).
    Add {
        url: String,
        /// Event types, comma-separated, or "*" for all.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Send to the endpoint again (its failures forgotten).
    Enable { endpoint_id: String },
    /// Stop sending to the endpoint.
    Disable { endpoint_id: String },
    /// A new signing secret; the old one signs too until the grace ends.
    Rotate {
        endpoint_id: String,
        /// How long the old secret still signs.
        #[arg(long, default_value = "24h")]
        grace: String,
    },
    /// Deliveries, newest first.
    Deliveries {
        #[arg(long, value_name = "ENDPOINT_ID")]
        endpoint: Option<String>,
        /// pending, sending, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, value_name = "ORDER_ID")]
        order: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// A delivery's attempts: status, latency and the answer's start.
    Show { delivery_id: i64 },
    /// Send a dead delivery again now.
    Retry {
        delivery_id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Orders, newest first, by the buyer's email (whatever its case) and status.
    List {
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The next page: orders older than this one.
        #[arg(long, value_name = "ORDER_ID")]
        before: Option<String>,
    },
    /// Everything the store holds about an order, and its timeline.
    Show { order_id: String },
    /// Close an order that needs review (its dead steps are discarded, its held stock
    /// released).
    Resolve {
        order_id: String,
        /// Why (required; kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Refund the order through its provider, whole or in part.
    Refund {
        order_id: String,
        /// In minor units; default: what is left.
        #[arg(long, value_name = "MINOR")]
        amount: Option<i64>,
        #[arg(long)]
        reason: Option<String>,
        /// Put the stock back (default: refunds.restock).
        #[arg(long)]
        restock: Option<bool>,
        /// Sent as Idempotency-Key: the same key refunds once, however often it is sent.
        #[arg(long)]
        key: Option<String>,
    },
    /// Read the order's latest payment from its provider again; its answer decides.
    Recheck {
        order_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}
