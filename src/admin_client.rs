//! `fulfilld admin …`: a small client of the admin API, and the tables it prints.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::config::Config;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// The engine at `url` (default: `http.addr`), with the configured admin token or the
    /// one `serve` generated.
    pub fn new(config: &Config, url: Option<&str>) -> anyhow::Result<Client> {
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!(
                "http://{}",
                config.http.addr.replace("0.0.0.0", "127.0.0.1")
            ),
        };
        let token = if config.admin.token.is_empty() {
            std::fs::read_to_string(crate::ADMIN_TOKEN_FILE)
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no admin token: set FULFILLD__ADMIN__TOKEN, or run where `serve` wrote {}",
                        crate::ADMIN_TOKEN_FILE
                    )
                })?
        } else {
            config.admin.token.clone()
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()?;
        Ok(Client { http, base, token })
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let actor = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-fulfilld-actor", actor)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the engine at {}", self.base))?;
        let status = r.status();
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = answer["error"]["message"].as_str().unwrap_or("no message");
            bail!("{path}: {status}: {msg}");
        }
        Ok(answer)
    }
}

/// A reconciliation report as text: a summary line, one line per provider, one per finding.
pub fn reconcile_table(r: &Value) -> String {
    let mut out = format!(
        "reconciliation #{} ({}), payments since {}: {} repaired, {} need review, {} backfilled\n\n",
        r["id"],
        r["trigger"].as_str().unwrap_or(""),
        r["since_s"],
        r["repaired"],
        r["needs_review"],
        r["backfilled"]
    );
    out.push_str(&format!(
        "{:<10} {:>7} {:>12}  {}\n",
        "PROVIDER", "LISTED", "EVENTS READ", "ERROR"
    ));
    for p in r["providers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<10} {:>7} {:>12}  {}\n",
            p["provider"].as_str().unwrap_or(""),
            p["listed"],
            p["missed_events"],
            p["error"].as_str().unwrap_or("")
        ));
    }
    let findings = r["findings"].as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        out.push_str("\nnothing to report: the store agrees with every provider\n");
        return out;
    }
    out.push_str(&format!(
        "\n{:<13} {:<10} {:<28} {}\n",
        "ACTION", "PROVIDER", "ORDER", "DETAIL"
    ));
    for f in findings {
        out.push_str(&format!(
            "{:<13} {:<10} {:<28} {}\n",
            f["action"].as_str().unwrap_or(""),
            f["provider"].as_str().unwrap_or(""),
            f["order_id"].as_str().unwrap_or("-"),
            f["detail"].as_str().unwrap_or("")
        ));
    }
    out
}
