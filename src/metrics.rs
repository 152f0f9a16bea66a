//! What `/metrics` reports, in the Prometheus (OpenMetrics) text format. One set per engine
//! (each process has its own, and so does each engine a test starts). The one a commit
//! makes true (`capture_to_fulfilled`) is the store's histogram, registered here.
//!
//! | metric | what it counts |
//! |---|---|
//! | `fulfilld_webhooks_received_total{provider}` | webhook requests for a configured provider |
//! | `fulfilld_webhooks_accepted_total{provider}` | verified events stored for the first time |
//! | `fulfilld_webhooks_duplicate_total{provider}` | verified events stored before (a provider's retry) |
//! | `fulfilld_webhooks_rejected_total{provider,reason}` | refused: the error code answered (`invalid_signature`, `store_unavailable`, …) |
//! | `fulfilld_http_request_duration_seconds{route,method,status}` | every request's latency, by route template |
//! | `fulfilld_step_duration_seconds{kind,outcome}` | step runs by outcome: `done`, `retry`, `dead`, `lost_lease`, `store_error` |
//! | `fulfilld_capture_to_fulfilled_seconds` | from an order's confirmed payment (its pipeline's start) to `fulfilled` |
//! | `fulfilld_steps{kind,state}` | steps now `waiting`, `pending`, `retrying`, `running` or `dead`, read from the store at each scrape |
//! | `fulfilld_dead_letters` | dead steps now, all kinds |
//! | `fulfilld_webhook_events_parked` | webhook events kept but not applied (unreadable, failing, signed but senseless) now |
//! | `fulfilld_merchant_webhook_attempt_seconds{event,outcome}` | attempts at webhooks to the merchant: `delivered`, `retry`, `dead`, `disabled` (dead, and its endpoint disabled) |

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::overview::KindQueue;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabels {
    pub provider: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub kind: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub event: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub kind: String,
    pub state: &'static str,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_buckets() -> Histogram {
    // 0.25 ms … 8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn step_buckets() -> Histogram {
    // 1 ms … 65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub webhooks_received: Family<ProviderLabel, Counter>,
    pub webhooks_accepted: Family<ProviderLabel, Counter>,
    pub webhooks_duplicate: Family<ProviderLabel, Counter>,
    pub webhooks_rejected: Family<RejectedLabels, Counter>,
    pub requests: Timings<RequestLabels>,
    pub steps: Timings<StepLabels>,
    pub capture_to_fulfilled: Histogram,
    pub merchant_attempts: Timings<AttemptLabels>,
    step_states: Family<StateLabels, Gauge>,
    dead_letters: Gauge,
    parked_events: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// The engine's metrics, with `capture_to_fulfilled` the store's own histogram
    /// ([`crate::store::Store::fulfilled_after`]).
    pub fn new(capture_to_fulfilled: Histogram) -> Metrics {
        let mut registry = Registry::with_prefix("fulfilld");
        let m = Metrics {
            registry: Registry::default(),
            webhooks_received: Family::default(),
            webhooks_accepted: Family::default(),
            webhooks_duplicate: Family::default(),
            webhooks_rejected: Family::default(),
            requests: Family::new_with_constructor(request_buckets),
            steps: Family::new_with_constructor(step_buckets),
            capture_to_fulfilled,
            merchant_attempts: Family::new_with_constructor(step_buckets),
            step_states: Family::default(),
            dead_letters: Gauge::default(),
            parked_events: Gauge::default(),
        };
        registry.register(
            "webhooks_received",
            "Webhook requests for a configured provider",
            m.webhooks_received.clone(),
        );
        registry.register(
            "webhooks_accepted",
            "Verified webhook events stored for the first time",
            m.webhooks_accepted.clone(),
        );
        registry.register(
            "webhooks_duplicate",
            "Verified webhook events that were stored before (provider retries)",
            m.webhooks_duplicate.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook requests refused, by the error code answered",
            m.webhooks_rejected.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            m.requests.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Step runs by kind and outcome (done, retry, dead, lost_lease, store_error)",
            m.steps.clone(),
        );
        registry.register(
            "capture_to_fulfilled_seconds",
            "From an order's confirmed payment to fulfilled",
            m.capture_to_fulfilled.clone(),
        );
        registry.register(
            "steps",
            "Steps now in each state (waiting, pending, retrying, running, dead), from the store",
            m.step_states.clone(),
        );
        registry.register(
            "merchant_webhook_attempt_seconds",
            "Attempts at webhooks to the merchant by event type and outcome (delivered, retry, dead, disabled)",
            m.merchant_attempts.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead steps now, all kinds",
            m.dead_letters.clone(),
        );
        registry.register(
            "webhook_events_parked",
            "Webhook events kept but not applied now (unreadable, failing, signed but senseless)",
            m.parked_events.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn step_ran(&self, kind: &str, outcome: &'static str, took: Duration) {
        self.steps
            .get_or_create(&StepLabels {
                kind: kind.to_owned(),
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    /// The text a scrape gets, with the queue's state as `queues` gives it.
    /// The text of a scrape; `parked` is the parked events' count read now (None: the store
    /// did not answer, and the gauge keeps its last value).
    pub fn render(&self, queues: &[KindQueue], parked: Option<i64>) -> String {
        if let Some(n) = parked {
            self.parked_events.set(n);
        }
        let mut dead = 0;
        for q in queues {
            for (state, n) in [
                ("waiting", q.waiting),
                ("pending", q.pending),
                ("retrying", q.retrying),
                ("running", q.running),
                ("dead", q.dead),
            ] {
                self.step_states
                    .get_or_create(&StateLabels {
                        kind: q.kind.clone(),
                        state,
                    })
                    .set(n);
            }
            dead += q.dead;
        }
        self.dead_letters.set(dead);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
