//! What admins read: the queue's state per step kind, steps by filter, and everything the
//! store knows about one order, oldest first. Reads only; the actions are in
//! `dead_letters` and `events`.

use jobs::StepKind;
use serde::Serialize;

use super::dead_letters::Attempt;
use super::events::StoredEvent;
use super::orders::{ItemRow, OrderRow};
use super::refunds::RefundRow;
use super::{Result, Store};
use crate::clock::now_ms;
use crate::domain::OrderStatus;
use crate::domain::{PaymentStatus, StepStatus};

/// One step kind's queue. A pending step is `pending` until its first run and `retrying`
/// after a run that failed or was cut off (an admin retry starts the count again).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KindQueue {
    pub kind: String,
    /// Waiting for an earlier step of its order.
    pub waiting: i64,
    pub pending: i64,
    pub retrying: i64,
    pub running: i64,
    pub dead: i64,
    pub done_last_hour: i64,
    /// How long the longest-due pending step has been due, in seconds (0: none is due).
    pub oldest_due_age_s: i64,
}

/// One minute of the engine's work.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Minute {
    /// The minute's start (ms since the epoch).
    pub at: i64,
    pub steps_done: i64,
    /// Step runs that failed or were cut off.
    pub steps_failed: i64,
    pub webhooks: i64,
}

/// Which steps a list shows, newest first.
#[derive(Debug, Clone, Default)]
pub struct StepFilter {
    pub kind: Option<StepKind>,
    pub status: Option<StepStatus>,
    pub order_id: Option<String>,
    /// Only steps with a smaller id (the next page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepView {
    pub id: i64,
    pub order_id: String,
    pub payment_id: String,
    pub kind: String,
    pub status: StepStatus,
    pub attempts: i64,
    pub next_run_at: i64,
    pub worker: Option<String>,
    pub last_error: Option<String>,
    pub outcome: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The request that caused it (see [`super::CAUSE`]).
    pub request_id: Option<String>,
}

const STEP_COLS: &str = "id, order_id, payment_id, kind, status, attempts, next_run_at, worker, \
                         last_error, outcome, created_at, updated_at, request_id";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PaymentView {
    pub id: String,
    pub provider: String,
    pub provider_order_id: String,
    pub provider_payment_id: Option<String>,
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EmailView {
    pub payment_id: String,
    pub kind: String,
    pub to_addr: String,
    pub subject: String,
    pub message_id: String,
    pub transport: String,
    pub sent_at: i64,
}

/// An invoice or a credit note, without its HTML.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DocumentView {
    pub id: String,
    pub number: String,
    pub currency: String,
    pub total_minor: i64,
    pub tax_minor: i64,
    pub issued_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EntitlementView {
    pub sku: String,
    pub customer_email: String,
    pub feature: String,
    pub granted_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LedgerView {
    pub reference: String,
    pub account: String,
    pub debit_minor: i64,
    pub credit_minor: i64,
    pub currency: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ActionView {
    /// The admin token's name.
    pub actor: String,
    /// The person the caller named (`X-Fulfilld-Actor`): its word, beside the actor.
    pub said_by: Option<String>,
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
    pub at: i64,
}

/// Everything about one order. `events` are the webhook events of its payments.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRecord {
    pub order: OrderRow,
    pub review_from: Option<OrderStatus>,
    pub updated_at: i64,
    pub items: Vec<ItemRow>,
    pub payments: Vec<PaymentView>,
    pub events: Vec<StoredEvent>,
    pub steps: Vec<StepView>,
    /// The runs of its steps that failed or were cut off.
    pub attempts: Vec<Attempt>,
    pub emails: Vec<EmailView>,
    pub invoices: Vec<DocumentView>,
    pub credit_notes: Vec<DocumentView>,
    pub entitlements: Vec<EntitlementView>,
    pub refunds: Vec<RefundRow>,
    pub ledger: Vec<LedgerView>,
    /// Admin actions on it, on its steps and on its payments' events.
    pub admin_actions: Vec<ActionView>,
    /// Webhooks to the merchant about it.
    pub merchant_webhooks: Vec<super::merchant::Delivery>,
}

/// The order's payments, as a subquery of `$1` (the order id).
const ITS_PAYMENTS: &str = "SELECT id FROM payments WHERE order_id = $1";

impl Store {
    /// An order's invoices and credit notes, oldest first, without their HTML.
    pub async fn order_documents(
        &self,
        order_id: &str,
    ) -> Result<(Vec<DocumentView>, Vec<DocumentView>)> {
        let invoices = sqlx::query_as::<_, DocumentView>(
            "SELECT id, invoice_number AS number, currency, total_minor, tax_minor, issued_at
             FROM invoices WHERE order_id = $1 ORDER BY issued_at, id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        let credit_notes = sqlx::query_as::<_, DocumentView>(
            "SELECT id, credit_note_number AS number, currency, total_minor, tax_minor, issued_at
             FROM credit_notes WHERE order_id = $1 ORDER BY issued_at, id",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        Ok((invoices, credit_notes))
    }

    /// The HTML of the invoice or credit note `doc_id`, if it is one of `order_id`'s.
    pub async fn document_html(&self, order_id: &str, doc_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT html FROM invoices WHERE order_id = $1 AND id = $2
             UNION ALL
             SELECT html FROM credit_notes WHERE order_id = $1 AND id = $2",
        )
        .bind(order_id)
        .bind(doc_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every step kind's queue, in pipeline order (kinds with no steps show zeros).
    pub async fn queue_overview(&self) -> Result<Vec<KindQueue>> {
        let now = now_ms();
        type Row = (String, i64, i64, i64, i64, i64, i64, Option<i64>);
        // The finished steps are most of the table; only the last hour's are counted.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kind,
                    SUM(CASE WHEN status = 'waiting' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN status = 'pending' AND attempts = attempt_base THEN 1 ELSE 0 END),
                    SUM(CASE WHEN status = 'pending' AND attempts > attempt_base THEN 1 ELSE 0 END),
                    SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END),
                    MIN(CASE WHEN status = 'pending' AND next_run_at <= $1 THEN next_run_at END)
             FROM steps
             WHERE status NOT IN ('done', 'skipped', 'discarded') OR updated_at >= $2
             GROUP BY kind",
        )
        .bind(now)
        .bind(now - 3_600_000)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<KindQueue> = StepKind::ALL
            .iter()
            .map(|k| KindQueue {
                kind: k.as_str().to_owned(),
                ..Default::default()
            })
            .collect();
        for (kind, waiting, pending, retrying, running, dead, done, oldest) in rows {
            let at = match out.iter().position(|q| q.kind == kind) {
                Some(i) => i,
                None => {
                    // A kind this build does not know (a newer one's rows): shown, last.
                    out.push(KindQueue {
                        kind: kind.clone(),
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            out[at] = KindQueue {
                kind,
                waiting,
                pending,
                retrying,
                running,
                dead,
                done_last_hour: done,
                oldest_due_age_s: oldest.map_or(0, |t| (now - t).max(0) / 1000),
            };
        }
        Ok(out)
    }

    /// The last `minutes` minutes, oldest first, each with what was done in it (a minute
    /// with nothing shows zeros).
    pub async fn activity(&self, minutes: i64) -> Result<Vec<Minute>> {
        const MIN: i64 = 60_000;
        let now = now_ms();
        let first = (now / MIN - minutes + 1) * MIN;
        let mut out: Vec<Minute> = (0..minutes)
            .map(|i| Minute {
                at: first + i * MIN,
                ..Default::default()
            })
            .collect();
        // Done steps are counted at their last change; a step done twice (an admin retry)
        // counts at its last.
        let per_minute = |sql: &'static str| {
            sqlx::query_as::<_, (i64, i64)>(sql)
                .bind(first)
                .bind(MIN)
                .fetch_all(&self.pool)
        };
        let done = per_minute(
            "SELECT updated_at / $2, COUNT(*) FROM steps
             WHERE status = 'done' AND updated_at >= $1 GROUP BY updated_at / $2",
        )
        .await?;
        let failed = per_minute(
            "SELECT ended_at / $2, COUNT(*) FROM step_attempts
             WHERE ended_at >= $1 GROUP BY ended_at / $2",
        )
        .await?;
        let webhooks = per_minute(
            "SELECT received_at / $2, COUNT(*) FROM webhook_events
             WHERE received_at >= $1 GROUP BY received_at / $2",
        )
        .await?;
        let mut put = |rows: Vec<(i64, i64)>, field: fn(&mut Minute) -> &mut i64| {
            for (minute, n) in rows {
                if let Some(m) = usize::try_from(minute - first / MIN)
                    .ok()
                    .and_then(|i| out.get_mut(i))
                {
                    *field(m) += n;
                }
            }
        };
        put(done, |m| &mut m.steps_done);
        put(failed, |m| &mut m.steps_failed);
        put(webhooks, |m| &mut m.webhooks);
        Ok(out)
    }

    pub async fn list_steps(&self, f: &StepFilter) -> Result<Vec<StepView>> {
        Ok(sqlx::query_as::<_, StepView>(sqlx::AssertSqlSafe(format!(
            "SELECT {STEP_COLS} FROM steps
             WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR status = $2)
               AND ($3 = '' OR order_id = $3) AND ($4 = 0 OR id < $4)
             ORDER BY id DESC LIMIT $5"
        )))
        .bind(f.kind.map_or("", |k| k.as_str()))
        .bind(f.status.map_or("", StepStatus::as_str))
        .bind(f.order_id.as_deref().unwrap_or(""))
        .bind(f.before_id.unwrap_or(0))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Everything the store holds about order `id`; `None` if there is no such order.
    pub async fn order_record(&self, id: &str) -> Result<Option<OrderRecord>> {
        #[derive(sqlx::FromRow)]
        struct Head {
            #[sqlx(flatten)]
            order: OrderRow,
            review_from: Option<OrderStatus>,
            updated_at: i64,
        }
        let Some(Head {
            order,
            review_from,
            updated_at,
        }) = sqlx::query_as::<_, Head>(
            "SELECT id, customer_email, status, total_minor, currency, created_at, review_from,
                    updated_at
             FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let payments = sqlx::query_as::<_, PaymentView>(
            "SELECT id, provider, provider_order_id, provider_payment_id, status, amount_minor,
                    currency, created_at, updated_at
             FROM payments WHERE order_id = $1 ORDER BY created_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let events = sqlx::query_as::<_, StoredEvent>(sqlx::AssertSqlSafe(format!(
            "SELECT id, provider, event_id, event_type, payment_id, outcome, received_at, request_id
             FROM webhook_events WHERE payment_id IN ({ITS_PAYMENTS}) ORDER BY id"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let steps = sqlx::query_as::<_, StepView>(sqlx::AssertSqlSafe(format!(
            "SELECT {STEP_COLS} FROM steps WHERE order_id = $1 ORDER BY position, id"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let attempts = sqlx::query_as::<_, Attempt>(
            "SELECT step_id, attempt, worker, started_at, ended_at, outcome, error, retry_at
             FROM step_attempts WHERE step_id IN (SELECT id FROM steps WHERE order_id = $1)
             ORDER BY started_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let emails = sqlx::query_as::<_, EmailView>(sqlx::AssertSqlSafe(format!(
            "SELECT payment_id, kind, to_addr, subject, message_id, transport, sent_at
             FROM emails_sent WHERE payment_id IN ({ITS_PAYMENTS}) ORDER BY sent_at, id"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let (invoices, credit_notes) = self.order_documents(id).await?;
        let entitlements = sqlx::query_as::<_, EntitlementView>(
            "SELECT sku, customer_email, feature, granted_at, expires_at, revoked_at
             FROM entitlements WHERE order_id = $1 ORDER BY granted_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let refunds = self
            .order_refunds(id)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let ledger = sqlx::query_as::<_, LedgerView>(
            "SELECT reference, account, debit_minor, credit_minor, currency, created_at
             FROM ledger_entries WHERE order_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let admin_actions = sqlx::query_as::<_, ActionView>(sqlx::AssertSqlSafe(format!(
            "SELECT actor, said_by, action, target, reason, at FROM admin_actions
             WHERE (action LIKE 'order.%' AND target = $1)
                OR (action LIKE 'step.%'
                    AND target IN (SELECT CAST(id AS TEXT) FROM steps WHERE order_id = $1))
                OR (action LIKE 'event.%'
                    AND target IN (SELECT CAST(id AS TEXT) FROM webhook_events
                                   WHERE payment_id IN ({ITS_PAYMENTS})))
                OR (action LIKE 'delivery.%'
                    AND target IN (SELECT CAST(id AS TEXT) FROM merchant_deliveries
                                   WHERE order_id = $1))
             ORDER BY at, id"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(OrderRecord {
            order,
            review_from,
            updated_at,
            items: self.order_items(id).await?,
            payments,
            events,
            steps,
            attempts,
            emails,
            invoices,
            credit_notes,
            entitlements,
            refunds,
            ledger,
            admin_actions,
            merchant_webhooks: self.order_deliveries(id).await?,
        }))
    }
}

/// One line of an order's timeline.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Moment {
    pub at: i64,
    /// What kind of thing happened: `order`, `payment`, `event`, `step`, `attempt`, `email`,
    /// `invoice`, `credit_note`, `entitlement`, `refund`, `admin`.
    pub what: &'static str,
    pub detail: String,
}

impl OrderRecord {
    /// What happened to the order, oldest first. A row's latest state is placed at its last
    /// change (a step at its end, a payment at its last transition).
    pub fn timeline(&self) -> Vec<Moment> {
        let by_request = |id: &Option<String>| {
            id.as_deref()
                .map(|id| format!(" (request {id})"))
                .unwrap_or_default()
        };
        let mut t = Vec::new();
        let mut at =
            |at: i64, what: &'static str, detail: String| t.push(Moment { at, what, detail });
        let o = &self.order;
        at(
            o.created_at,
            "order",
            format!("created: {} {}", o.total_minor, o.currency),
        );
        for p in &self.payments {
            at(
                p.created_at,
                "payment",
                format!("{} {} created", p.provider, p.provider_order_id),
            );
            if p.updated_at > p.created_at {
                at(
                    p.updated_at,
                    "payment",
                    format!("{} {} is {}", p.provider, p.provider_order_id, p.status),
                );
            }
        }
        for e in &self.events {
            at(
                e.received_at,
                "event",
                format!(
                    "#{} {} {} ({}): {}{}",
                    e.id,
                    e.provider,
                    e.event_type,
                    e.event_id,
                    e.outcome,
                    by_request(&e.request_id)
                ),
            );
        }
        for a in &self.attempts {
            let kind = self
                .steps
                .iter()
                .find(|s| s.id == a.step_id)
                .map_or("?", |s| s.kind.as_str());
            at(
                a.ended_at,
                "attempt",
                format!(
                    "{kind} attempt {} on {}: {}{}",
                    a.attempt,
                    a.worker,
                    a.outcome,
                    a.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            );
        }
        for s in &self.steps {
            let how = s
                .outcome
                .as_deref()
                .or(s.last_error.as_deref())
                .map(|x| format!(": {x}"))
                .unwrap_or_default();
            at(
                s.updated_at,
                "step",
                format!(
                    "{} #{} {} after {} attempt(s){how}{}",
                    s.kind,
                    s.id,
                    s.status,
                    s.attempts,
                    by_request(&s.request_id)
                ),
            );
        }
        for m in &self.emails {
            at(
                m.sent_at,
                "email",
                format!(
                    "{} to {} via {}: {}",
                    m.kind, m.to_addr, m.transport, m.subject
                ),
            );
        }
        for d in &self.invoices {
            at(
                d.issued_at,
                "invoice",
                format!("{}: {} {}", d.number, d.total_minor, d.currency),
            );
        }
        for d in &self.credit_notes {
            at(
                d.issued_at,
                "credit_note",
                format!("{}: {} {}", d.number, d.total_minor, d.currency),
            );
        }
        for g in &self.entitlements {
            at(
                g.granted_at,
                "entitlement",
                format!("{} granted to {}", g.feature, g.customer_email),
            );
            if let Some(r) = g.revoked_at {
                at(r, "entitlement", format!("{} revoked", g.feature));
            }
        }
        for r in &self.refunds {
            at(
                r.created_at,
                "refund",
                format!(
                    "{} {} {} ({}, {}): {}",
                    r.id, r.amount_minor, r.currency, r.reason, r.source, r.status
                ),
            );
        }
        for d in &self.merchant_webhooks {
            at(
                d.updated_at,
                "webhook",
                format!(
                    "{} to {} ({}): {} after {} attempt(s){}",
                    d.event_type,
                    d.endpoint_id,
                    d.message_id,
                    d.status,
                    d.attempts,
                    d.last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            );
        }
        for a in &self.admin_actions {
            at(
                a.at,
                "admin",
                format!(
                    "{} by {}{} on {}{}",
                    a.action,
                    a.actor,
                    a.said_by
                        .as_deref()
                        .map(|p| format!(" (saying {p:?})"))
                        .unwrap_or_default(),
                    a.target,
                    a.reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            );
        }
        // Stable: things recorded at the same millisecond keep the order above.
        t.sort_by_key(|m| m.at);
        t
    }
}
