//! `fulfilld admin …`: a small client of the admin API ([`Client`]), the commands
//! (`commands`), and the tables it prints (`tables`). [`run`] sends a command and answers the
//! API's JSON with the same as text.

mod commands;
mod tables;

pub use commands::AdminCommand;
use commands::{DeadCommand, EventsCommand, OrderCommand, WebhooksCommand};
pub use tables::table;
use tables::{
    AUDIT_COLUMNS, DEAD_COLUMNS, DELIVERY_COLUMNS, ENDPOINT_COLUMNS, EVENT_COLUMNS, ORDER_COLUMNS,
    STEP_COLUMNS, order_text, queues_table, reconcile_table,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

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
            None => {
                // A server listening on every address is reached on its loopback one.
                let mut addr = config.http.addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                format!("http://{addr}")
            }
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
            config.admin.token.expose().to_owned()
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()?;
        Ok(Client { http, base, token })
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_with(path, body, &[]).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.write(reqwest::Method::PATCH, path, body, &[]).await
    }

    /// [`Client::post`] with more headers.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        self.write(reqwest::Method::POST, path, body, headers).await
    }

    /// A change, sent with who makes it (`cli:$USER`).
    async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        headers: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let actor = format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        );
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-fulfilld-actor", actor)
            .json(body);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        self.send(path, request).await
    }

    /// `GET path` with `query` (pairs whose value is `None` are left out).
    pub async fn get(&self, path: &str, query: &[(&str, Option<String>)]) -> anyhow::Result<Value> {
        let query: Vec<(&str, &str)> = query
            .iter()
            .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
            .collect();
        let request = self.http.get(format!("{}{path}", self.base)).query(&query);
        self.send(path, request).await
    }

    async fn send(&self, path: &str, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let r = request
            .bearer_auth(&self.token)
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

/// Runs an admin command: the API's answer, and the same as text.
pub async fn run(
    client: &Client,
    command: AdminCommand,
) -> anyhow::Result<(serde_json::Value, String)> {
    let rows = |v: &serde_json::Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
    let s = |v: Option<i64>| v.map(|n| n.to_string());
    Ok(match command {
        AdminCommand::Queues => {
            let a = client.get("/api/admin/queues", &[]).await?;
            let text = queues_table(&a);
            (a, text)
        }
        AdminCommand::Steps {
            kind,
            status,
            order,
            limit,
            before,
        } => {
            let q = [
                ("kind", kind),
                ("status", status),
                ("order_id", order),
                ("limit", Some(limit.to_string())),
                ("before_id", s(before)),
            ];
            let a = client.get("/api/admin/steps", &q).await?;
            let mut text = table(&rows(&a, "steps"), &STEP_COLUMNS);
            if let Some(next) = a["next_before_id"].as_i64() {
                text.push_str(&format!("more: --before {next}\n"));
            }
            (a, text)
        }
        AdminCommand::Audit {
            actor,
            action,
            target,
            limit,
            before,
        } => {
            let q = [
                ("actor", actor),
                ("action", action),
                ("target", target),
                ("limit", Some(limit.to_string())),
                ("before_id", s(before)),
            ];
            let a = client.get("/api/admin/audit", &q).await?;
            let mut text = table(&rows(&a, "entries"), &AUDIT_COLUMNS);
            if let Some(next) = a["next_before_id"].as_i64() {
                text.push_str(&format!("more: --before {next}\n"));
            }
            (a, text)
        }
        AdminCommand::Dead { command } => match command {
            DeadCommand::List {
                kind,
                older_than,
                limit,
            } => {
                let q = [
                    ("kind", kind),
                    ("older_than_secs", s(older_than)),
                    ("limit", Some(limit.to_string())),
                ];
                let a = client.get("/api/admin/dead-letters", &q).await?;
                let text = table(&rows(&a, "dead"), &DEAD_COLUMNS);
                (a, text)
            }
            DeadCommand::Retry {
                step_id: Some(id),
                reason,
                ..
            } => {
                let a = client
                    .post(
                        &format!("/api/admin/steps/{id}/retry"),
                        &json!({ "reason": reason }),
                    )
                    .await?;
                let r = &a["retried"];
                let text = format!(
                    "retried step {id} ({}, order {}){}\n",
                    r["kind"].as_str().unwrap_or(""),
                    r["order_id"].as_str().unwrap_or(""),
                    if r["order_resumed"] == true {
                        "; the order left needs_review"
                    } else {
                        ""
                    }
                );
                (a, text)
            }
            DeadCommand::Retry {
                step_id: None,
                kind,
                older_than,
                reason,
                ..
            } => {
                let body = json!({ "kind": kind, "older_than_secs": older_than, "reason": reason });
                let a = client.post("/api/admin/dead-letters/retry", &body).await?;
                let retried = rows(&a, "retried");
                let text = format!(
                    "retried {} dead step(s)\n{}",
                    retried.len(),
                    if retried.is_empty() {
                        String::new()
                    } else {
                        table(
                            &retried,
                            &[("ID", "step_id"), ("ORDER", "order_id"), ("KIND", "kind")],
                        )
                    }
                );
                (a, text)
            }
            DeadCommand::Discard { step_id, reason } => {
                let a = client
                    .post(
                        &format!("/api/admin/steps/{step_id}/discard"),
                        &json!({ "reason": reason }),
                    )
                    .await?;
                (a, format!("discarded step {step_id}\n"))
            }
        },
        AdminCommand::Events { command } => match command {
            EventsCommand::List {
                provider,
                parked,
                limit,
            } => {
                let q = [
                    ("provider", provider),
                    ("parked", parked.then(|| "true".to_owned())),
                    ("limit", Some(limit.to_string())),
                ];
                let a = client.get("/api/admin/events", &q).await?;
                let text = table(&rows(&a, "events"), &EVENT_COLUMNS);
                (a, text)
            }
            EventsCommand::Replay { event_id, dry_run } => {
                let a = client
                    .post(
                        &format!("/api/admin/events/{event_id}/replay"),
                        &json!({ "dry_run": dry_run }),
                    )
                    .await?;
                let r = &a["replay"];
                let mut text = format!(
                    "event {event_id}{}: {}{}\n",
                    if dry_run { " (dry run)" } else { "" },
                    r["outcome"].as_str().unwrap_or(""),
                    if r["changed"] == true {
                        ""
                    } else {
                        "; nothing changed (it was applied already)"
                    }
                );
                let moved = rows(r, "transitions");
                if !moved.is_empty() {
                    text.push_str(&table(
                        &moved,
                        &[("WHAT", "what"), ("FROM", "from"), ("TO", "to")],
                    ));
                }
                (a, text)
            }
        },
        AdminCommand::Order { command } => match command {
            OrderCommand::List {
                email,
                status,
                limit,
                before,
            } => {
                let q = [
                    ("email", email),
                    ("status", status),
                    ("limit", Some(limit.to_string())),
                    ("before_id", before),
                ];
                let a = client.get("/api/admin/orders", &q).await?;
                let text = table(&rows(&a, "orders"), &ORDER_COLUMNS);
                (a, text)
            }
            OrderCommand::Show { order_id } => {
                let path = format!("/api/admin/orders/{}", url_segment(&order_id));
                let a = client.get(&path, &[]).await?;
                let text = order_text(&a);
                (a, text)
            }
            OrderCommand::Resolve { order_id, reason } => {
                let path = format!("/api/admin/orders/{}/resolve", url_segment(&order_id));
                let a = client.post(&path, &json!({ "reason": reason })).await?;
                let text = format!(
                    "resolved order {order_id} ({} dead step(s) discarded)\n",
                    a["discarded_steps"]
                );
                (a, text)
            }
            OrderCommand::Refund {
                order_id,
                amount,
                reason,
                restock,
                key,
            } => {
                let body = json!({
                    "order_id": order_id, "amount_minor": amount, "reason": reason, "restock": restock,
                });
                let headers: Vec<(&str, String)> =
                    key.into_iter().map(|k| ("idempotency-key", k)).collect();
                let a = client
                    .post_with("/api/payments/refund", &body, &headers)
                    .await?;
                let text = format!(
                    "refund {} of {} {}: {}{}\n",
                    a["id"].as_str().unwrap_or(""),
                    a["amount_minor"],
                    a["currency"].as_str().unwrap_or(""),
                    a["status"].as_str().unwrap_or(""),
                    a["credit_note_number"]
                        .as_str()
                        .map(|n| format!(", credit note {n}"))
                        .unwrap_or_default()
                );
                (a, text)
            }
            OrderCommand::Recheck { order_id, reason } => {
                let path = format!(
                    "/api/admin/orders/{}/recheck-payment",
                    url_segment(&order_id)
                );
                let a = client.post(&path, &json!({ "reason": reason })).await?;
                (
                    a,
                    format!("asked the provider about order {order_id}'s payment again\n"),
                )
            }
        },
        AdminCommand::Webhooks { command } => webhooks(client, command).await?,
        AdminCommand::Reconcile { since } => {
            let a = client
                .post("/api/admin/reconcile", &json!({ "since": since }))
                .await?;
            let text = reconcile_table(&a["report"]);
            (a, text)
        }
    })
}

/// `fulfilld admin webhooks …`: the answer and its text.
async fn webhooks(
    client: &Client,
    command: WebhooksCommand,
) -> anyhow::Result<(serde_json::Value, String)> {
    let rows = |v: &serde_json::Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
    let endpoint = |id: &str| format!("/api/admin/webhook-endpoints/{}", url_segment(id));
    Ok(match command {
        WebhooksCommand::List => {
            let a = client.get("/api/admin/webhook-endpoints", &[]).await?;
            let text = table(&rows(&a, "endpoints"), &ENDPOINT_COLUMNS);
            (a, text)
        }
        WebhooksCommand::Add {
            url,
            events,
            description,
        } => {
            let body = json!({ "url": url, "event_types": events, "description": description });
            let a = client.post("/api/admin/webhook-endpoints", &body).await?;
            let text = format!(
                "endpoint {}\nsecret {}\n(keep the secret: it is shown this once; `webhooks rotate` makes a new one)\n",
                a["id"].as_str().unwrap_or(""),
                a["secret"].as_str().unwrap_or("")
            );
            (a, text)
        }
        WebhooksCommand::Enable { endpoint_id } => {
            let a = client
                .patch(&endpoint(&endpoint_id), &json!({ "enabled": true }))
                .await?;
            (a, format!("enabled endpoint {endpoint_id}\n"))
        }
        WebhooksCommand::Disable { endpoint_id } => {
            let a = client
                .patch(&endpoint(&endpoint_id), &json!({ "enabled": false }))
                .await?;
            (a, format!("disabled endpoint {endpoint_id}\n"))
        }
        WebhooksCommand::Rotate { endpoint_id, grace } => {
            let path = format!("{}/rotate-secret", endpoint(&endpoint_id));
            let a = client.post(&path, &json!({ "grace": grace })).await?;
            let text = format!(
                "new secret {}\n(the old one signs too for {grace})\n",
                a["secret"].as_str().unwrap_or("")
            );
            (a, text)
        }
        WebhooksCommand::Deliveries {
            endpoint,
            status,
            order,
            limit,
        } => {
            let q = [
                ("endpoint_id", endpoint),
                ("status", status),
                ("order_id", order),
                ("limit", Some(limit.to_string())),
            ];
            let a = client.get("/api/admin/webhook-deliveries", &q).await?;
            let text = table(&rows(&a, "deliveries"), &DELIVERY_COLUMNS);
            (a, text)
        }
        WebhooksCommand::Show { delivery_id } => {
            let path = format!("/api/admin/webhook-deliveries/{delivery_id}");
            let a = client.get(&path, &[]).await?;
            let text = format!(
                "delivery {delivery_id}  {}  {} to {}: {} after {} attempt(s)\n\n{}",
                a["message_id"].as_str().unwrap_or(""),
                a["event_type"].as_str().unwrap_or(""),
                a["endpoint_id"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or(""),
                a["attempts"],
                table(
                    &rows(&a, "attempt_log"),
                    &[
                        ("ATTEMPT", "attempt"),
                        ("STARTED", "started_at"),
                        ("STATUS", "status_code"),
                        ("MS", "latency_ms"),
                        ("ANSWER", "response"),
                    ],
                )
            );
            (a, text)
        }
        WebhooksCommand::Retry {
            delivery_id,
            reason,
        } => {
            let path = format!("/api/admin/webhook-deliveries/{delivery_id}/retry");
            let a = client.post(&path, &json!({ "reason": reason })).await?;
            (a, format!("retrying delivery {delivery_id}\n"))
        }
    })
}

/// `s` as one URL path segment.
fn url_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
