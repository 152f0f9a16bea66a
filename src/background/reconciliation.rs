//! Reconciliation: compares what each provider says it was paid with what the store holds,
//! repairs what it safely can and flags the rest for a human. Daily by default
//! (`reconciliation.interval_secs`, one run per interval across all processes), and on
//! demand (`POST /api/admin/reconcile`, `fulfilld admin reconcile --since …`).
//!
//! Per provider, for payments since the run's start point:
//! 1. **Backfill**: the provider's own record of events that may not have reached us
//!    (Stripe: `delivery_success=false`; PayPal: every event notification of the period)
//!    goes through intake's normal path — stored once by event id, applied once; events we
//!    have already change nothing.
//! 2. **Compare** each listed payment with ours (by checkout id, or by our payment id the
//!    provider kept):
//!    - captured for another amount or currency than ours → the order `needs_review`
//!      (never fulfilled on that payment);
//!    - the provider's record moves ours on (paid while we saw nothing; failed or expired
//!      while we wait) → applied like a webhook, so a paid payment we never heard of is
//!      fulfilled;
//!    - paid at the provider with no payment of ours to match → reported for review;
//!    - everything else agrees and is not reported.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::clock::now_ms;
use crate::providers::RecentPayment;
use crate::store::StoreError;
use crate::store::payments::PaymentRow;

/// One thing a run did or could not do.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub provider: String,
    /// `repaired` | `needs_review` | `backfilled`
    pub action: &'static str,
    pub provider_order_id: Option<String>,
    pub payment_id: Option<String>,
    pub order_id: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderSummary {
    pub provider: String,
    /// Payments the provider listed.
    pub listed: usize,
    /// Events read back from the provider (those we had already changed nothing).
    pub missed_events: usize,
    /// The provider could not be read; nothing of it was compared.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: i64,
    pub trigger: String,
    pub since_s: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub providers: Vec<ProviderSummary>,
    pub repaired: usize,
    pub needs_review: usize,
    pub backfilled: usize,
    pub findings: Vec<Finding>,
}

/// Runs once now, for payments since `since_s`. `None`: a scheduled run whose slot
/// another process took.
pub async fn run(
    e: &Engine,
    since_s: i64,
    trigger: &str,
    slot: Option<i64>,
) -> Result<Option<Report>, StoreError> {
    let started_at = now_ms();
    let Some(id) = e.store.reconciliation_start(slot, trigger, since_s).await? else {
        return Ok(None);
    };
    let mut providers = Vec::new();
    let mut findings = Vec::new();
    for provider in e.providers.enabled() {
        let name = provider.name();
        let mut summary = ProviderSummary {
            provider: name.to_owned(),
            listed: 0,
            missed_events: 0,
            error: None,
        };
        match provider.missed_events(since_s).await {
            Ok(events) => {
                summary.missed_events = events.len();
                for (ev, raw) in events {
                    let r = crate::core::events::record(
                        &e.store,
                        &ev,
                        &raw,
                        crate::store::events::BACKFILL_HEADERS,
                        e.config.refunds.restock,
                    )
                    .await?;
                    e.queue.wake(&r.wake);
                    if !r.duplicate {
                        findings.push(Finding {
                            provider: name.to_owned(),
                            action: "backfilled",
                            provider_order_id: ev.provider_order_id.clone(),
                            payment_id: None,
                            order_id: None,
                            detail: format!("{} {}: {}", ev.event_type, ev.event_id, r.outcome),
                        });
                    }
                }
            }
            Err(err) => summary.error = Some(format!("undelivered events: {err}")),
        }
        match provider.recent_payments(since_s).await {
            Ok(listed) => {
                summary.listed = listed.len();
                for rp in &listed {
                    if let Some(f) = compare(e, name, rp).await? {
                        findings.push(f);
                    }
                }
            }
            Err(err) => {
                let prev = summary.error.take();
                summary.error = Some(match prev {
                    Some(p) => format!("{p}; payments: {err}"),
                    None => format!("payments: {err}"),
                });
            }
        }
        providers.push(summary);
    }
    let count = |a: &str| findings.iter().filter(|f| f.action == a).count();
    let report = Report {
        id,
        trigger: trigger.to_owned(),
        since_s,
        started_at,
        finished_at: now_ms(),
        providers,
        repaired: count("repaired"),
        needs_review: count("needs_review"),
        backfilled: count("backfilled"),
        findings,
    };
    let json = serde_json::to_string(&report).map_err(|e| StoreError::Other(e.to_string()))?;
    e.store.reconciliation_finish(id, &json).await?;
    tracing::info!(
        run = id,
        repaired = report.repaired,
        needs_review = report.needs_review,
        backfilled = report.backfilled,
        "reconciliation finished"
    );
    Ok(Some(report))
}

/// One listed payment against ours.
async fn compare(
    e: &Engine,
    provider: &str,
    rp: &RecentPayment,
) -> Result<Option<Finding>, StoreError> {
    let ours = ours(e, provider, rp).await?;
    let finding = |action, p: Option<&PaymentRow>, detail: String| Finding {
        provider: provider.to_owned(),
        action,
        provider_order_id: rp.provider_order_id.clone(),
        payment_id: p.map(|p| p.id.clone()),
        order_id: p.map(|p| p.order_id.clone()),
        detail,
    };
    let Some(p) = ours else {
        return Ok(rp.state.paid.then(|| {
            finding(
                "needs_review",
                None,
                format!(
                    "paid at {provider} ({} minor units of {}), but no payment of ours matches",
                    rp.state.amount_minor, rp.state.currency
                ),
            )
        }));
    };
    let s = &rp.state;
    let why = if rp.returned && p.status == crate::domain::PaymentStatus::Paid {
        Some(format!(
            "the money went back to the buyer at {provider} ({}), but ours is paid and its \
             access stands: a person decides",
            s.state
        ))
    } else if s.paid
        && (s.amount_minor != p.amount_minor || !s.currency.eq_ignore_ascii_case(&p.currency))
    {
        Some(format!(
            "amount mismatch: ours {} {}, {provider} captured {} {}",
            p.amount_minor, p.currency, s.amount_minor, s.currency
        ))
    } else {
        None
    };
    if let Some(why) = why {
        let moved = e.store.flag_for_review(&p.order_id).await?;
        let stopped = if moved {
            ""
        } else {
            " (order already stopped)"
        };
        return Ok(Some(finding(
            "needs_review",
            Some(&p),
            format!("{why}{stopped}"),
        )));
    }
    let (outcome, wake) = crate::core::payments::apply_change(&e.store, &p.id, &s.change).await?;
    e.queue.wake(&wake);
    let quiet = ["no change", "duplicate", "ignored"];
    if quiet.iter().any(|q| outcome.starts_with(q)) {
        return Ok(None);
    }
    Ok(Some(finding("repaired", Some(&p), outcome)))
}

async fn ours(
    e: &Engine,
    provider: &str,
    rp: &RecentPayment,
) -> Result<Option<PaymentRow>, StoreError> {
    if let Some(id) = &rp.provider_order_id
        && let Some(p) = e.store.payment_by_provider_order(provider, id).await?
    {
        return Ok(Some(p));
    }
    match &rp.payment_ref {
        Some(r) => Ok(e
            .store
            .get_payment(r)
            .await?
            .filter(|p| p.provider == provider)),
        None => Ok(None),
    }
}

/// The schedule: one run per `reconciliation.interval_secs` across every process (each
/// interval is a slot only one process can take), looking back `lookback_secs`.
pub async fn schedule(e: Arc<Engine>, shutdown: CancellationToken) {
    let cfg = e.config.reconciliation.clone();
    if cfg.interval_secs == 0 {
        return;
    }
    let tick = Duration::from_millis(e.config.queue.housekeeping_interval_ms);
    // The slot this process has settled (ran it, or found it taken): the store is asked
    // again only when a new interval begins, or after an error.
    let mut settled = None;
    loop {
        let now_s = now_ms() / 1000;
        let slot = now_s / cfg.interval_secs as i64;
        if settled != Some(slot) {
            let since = now_s - cfg.lookback_secs as i64;
            match run(&e, since, "schedule", Some(slot)).await {
                Ok(_) => settled = Some(slot),
                Err(err) => {
                    tracing::warn!(error = %err, "scheduled reconciliation failed; trying again next tick")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
