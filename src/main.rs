//! The `fulfilld` command line: parses arguments, loads configuration, and hands over to the
//! library. Nothing else lives here.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fulfilld::Role;
use fulfilld::config::Config;

/// fulfilld — verified payments in, exactly-once fulfilment out.
///
/// Configuration: compiled-in defaults (see config/default.toml) < ./config/$FULFILLD_ENV.toml
/// < ./config/local.toml < --config FILE < FULFILLD__SECTION__KEY environment variables.
#[derive(Debug, Parser)]
#[command(name = "fulfilld", version, about, long_about)]
struct Cli {
    /// A TOML file overlaid on the defaults (e.g. config/production.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: intake, workers and sweeper (migrates first).
    Serve,
    /// Run the HTTP intake only (webhooks, the shop API, admin API) and its event applier; stateless, run many
    /// behind a load balancer. Needs a shared store (postgres://) and a queue (redis:// or postgres://).
    Intake,
    /// Run workers only: the step kinds chosen, the sweeper that feeds them, housekeeping
    /// and reconciliation. Answers /healthz, /readyz and /metrics on http.addr. Run many.
    Work {
        /// Step kinds to run, comma-separated (default: queue.steps, empty = all), e.g.
        /// `confirm_capture,deduct_stock`.
        #[arg(long, value_name = "KINDS")]
        steps: Option<String>,
        /// Steps of each kind run at once (default: queue.concurrency).
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
    },
    /// Apply the store's migrations and exit.
    Migrate,
    /// Run the provider emulator (Stripe, Razorpay and PayPal APIs, signed webhook delivery,
    /// fault injection) for local use and tests.
    Sandbox,
    /// The engine and the sandbox in one process, on a fresh embedded store, with a scripted
    /// shop day across the providers (happy paths, duplicate and late webhooks, a failed
    /// payment, a refund, a sold-out race); prints what happened, then keeps the dashboard
    /// up until Ctrl-C.
    Demo {
        /// Stop right after the shop day.
        #[arg(long)]
        exit: bool,
    },
    /// Talk to a running engine's admin API (token: FULFILLD__ADMIN__TOKEN, else the file
    /// `serve` generated, data/admin-token).
    Admin {
        /// The engine's address; default: http://{http.addr}.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print the API's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
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
enum DeadCommand {
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
enum EventsCommand {
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
enum WebhooksCommand {
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
enum OrderCommand {
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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fulfilld: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    init_logs(config.log.format);
    match cli.command {
        Command::Serve => run_role(Role::Serve, config).await,
        Command::Intake => run_role(Role::Intake, config).await,
        Command::Work { steps, concurrency } => {
            if let Some(steps) = steps {
                fulfilld::config::parse_step_kinds(&steps)
                    .map_err(|e| anyhow::anyhow!("--steps: {e}"))?;
                config.queue.steps = steps;
            }
            if let Some(n) = concurrency {
                anyhow::ensure!(n > 0, "--concurrency: must be at least 1");
                config.queue.concurrency = n;
            }
            run_role(Role::Work, config).await
        }
        Command::Migrate => {
            fulfilld::open_store(&config).await?;
            println!("migrations applied to {}", redact_url(&config.store.url));
            Ok(())
        }
        Command::Sandbox => {
            let listener = tokio::net::TcpListener::bind(&config.sandbox.addr)
                .await
                .with_context(|| {
                    format!("sandbox.addr: cannot listen on {}", config.sandbox.addr)
                })?;
            fulfilld::sandbox::run(config, listener, shutdown_signal()).await
        }
        Command::Demo { exit } => fulfilld::demo::run(config, exit, shutdown_signal()).await,
        Command::Admin { url, json, command } => {
            let client = fulfilld::admin_client::Client::new(&config, url.as_deref())?;
            let out = admin(&client, command).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out.0)?);
            } else {
                print!("{}", out.1);
            }
            Ok(())
        }
    }
}

/// Runs an admin command: the API's answer, and the same as text.
async fn admin(
    client: &fulfilld::admin_client::Client,
    command: AdminCommand,
) -> anyhow::Result<(serde_json::Value, String)> {
    use fulfilld::admin_client::{
        AUDIT_COLUMNS, DEAD_COLUMNS, EVENT_COLUMNS, ORDER_COLUMNS, STEP_COLUMNS, order_text,
        queues_table, reconcile_table, table,
    };
    use serde_json::json;
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
    client: &fulfilld::admin_client::Client,
    command: WebhooksCommand,
) -> anyhow::Result<(serde_json::Value, String)> {
    use fulfilld::admin_client::{DELIVERY_COLUMNS, ENDPOINT_COLUMNS, table};
    use serde_json::json;
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

/// Logs to stderr, as text or JSON lines; what is logged comes from `RUST_LOG`.
fn init_logs(format: fulfilld::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        fulfilld::config::LogFormat::Text => logs.init(),
        fulfilld::config::LogFormat::Json => logs.json().with_current_span(true).init(),
    }
}

async fn run_role(role: Role, config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.http.addr)
        .await
        .with_context(|| format!("http.addr: cannot listen on {}", config.http.addr))?;
    fulfilld::run_role(role, config, listener, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// A store URL without its password, for printing.
fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => u.to_owned(),
    }
}
