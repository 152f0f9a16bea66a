//! How the process runs: `[log]`, `[store]`, `[queue]` and `[retry.*]`.

use serde::Deserialize;

use super::{ConfigError, StepKinds, bad};

#[derive(Debug, Clone, Deserialize)]
pub struct Log {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object a line, for a log pipeline.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Store {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Queue {
    pub url: String,
    pub prefix: String,
    pub window: usize,
    /// The step kinds this process's workers run (empty: all).
    pub steps: StepKinds,
    pub concurrency: usize,
    pub shutdown_grace_ms: u64,
    pub sweep_interval_ms: u64,
    pub requeue_after_ms: u64,
    pub lease_ms: u64,
    pub max_lease_expiries: i64,
    pub housekeeping_interval_ms: u64,
}

/// `retry.<step kind>`: overrides of the retry policy each step declares next to its code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    pub max_attempts: Option<u32>,
    pub base_ms: Option<u64>,
    pub cap_ms: Option<u64>,
}

impl Store {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("sqlite:") || self.url.starts_with("postgres:")) {
            return bad("store.url", "must start with sqlite: or postgres:");
        }
        if self.max_connections == 0 {
            return bad("store.max_connections", "must be at least 1");
        }
        Ok(())
    }
}

impl Queue {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let q = &self.url;
        let schemes = ["redis://", "rediss://", "postgres://", "postgresql://"];
        if !(q.is_empty() || schemes.iter().any(|s| q.starts_with(s))) {
            return bad(
                "queue.url",
                "must be empty (the embedded queue) or start with redis://, rediss://, postgres:// or postgresql://",
            );
        }
        if self.window == 0 {
            return bad("queue.window", "must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("queue.concurrency", "must be at least 1");
        }
        if self.max_lease_expiries < 1 {
            return bad("queue.max_lease_expiries", "must be at least 1");
        }
        Ok(())
    }
}
