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
        command: fulfilld::admin::cli::AdminCommand,
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
                config.queue.steps = steps.parse().map_err(|e| anyhow::anyhow!("--steps: {e}"))?;
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
            let client = fulfilld::admin::cli::Client::new(&config, url.as_deref())?;
            let out = fulfilld::admin::cli::run(&client, command).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out.0)?);
            } else {
                print!("{}", out.1);
            }
            Ok(())
        }
    }
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
