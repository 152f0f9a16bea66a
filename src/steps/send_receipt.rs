//! `send_receipt`: one email per payment — a receipt, or a refund notice when the order was
//! refunded (text and policy: `jobs::send_receipt`). [`send_once`] and [`mail_once`] are
//! also how `notify_payment_failed` and `notify_refund` send.

use jobs::StepError;
use jobs::send_receipt::{Content, Kind, Line, render};

use super::StepResult;
use crate::Engine;
use crate::clock::now_ms;
use crate::domain::OrderStatus;
use crate::email::Outgoing;
use crate::store::orders::OrderRow;
use crate::store::steps::Lease;
use crate::store::{StoreError, Tx, orders};

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let order = order_of(e, lease).await?;
    let kind = match order.status {
        OrderStatus::Refunded | OrderStatus::RefundPending => Kind::RefundNotice,
        _ => Kind::Receipt,
    };
    send_once(e, lease, &order, kind).await
}

pub(super) async fn order_of(e: &Engine, lease: &Lease) -> Result<OrderRow, StepError> {
    e.store
        .get_order(&lease.step.order_id)
        .await?
        .ok_or_else(|| StepError::Permanent("order row missing".into()))
}

/// Sends the step payment's email of `kind` about `order`, unless it was sent already,
/// then finishes the step.
pub(super) async fn send_once(
    e: &Engine,
    lease: &Lease,
    order: &OrderRow,
    kind: Kind,
) -> StepResult {
    let payment_id = &lease.step.payment_id;
    let mut content = content(e, order, kind).await?;
    if kind == Kind::RefundNotice {
        // Only a refund notice says why; receipts (every order) skip the query.
        let sold_out: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM refunds WHERE order_id = $1 AND reason = 'out_of_stock'",
        )
        .bind(&order.id)
        .fetch_one(&e.store.pool)
        .await
        .map_err(StoreError::from)?;
        content.sold_out = sold_out > 0;
    }
    // A step's first run ever cannot find its own email sent: the one sender of a
    // (payment, kind) email is this step, and only a run before this one could have sent it.
    let maybe_sent = lease.step.attempts > 1;
    let sent = send_mail(e, payment_id, kind.as_str(), order, &content, maybe_sent).await?;
    let outcome = if sent.is_some() {
        format!("{} sent", kind.as_str())
    } else {
        "already sent".to_owned()
    };
    // The record that it was sent goes in with the step's finish.
    e.batcher.finish(e, lease, outcome, sent).await
}

/// What an email about `order` says, with its lines and total.
pub(super) async fn content(
    e: &Engine,
    order: &OrderRow,
    kind: Kind,
) -> Result<Content, StepError> {
    // The lines and the invoice number in one query (the order row always comes back, so
    // an order without an invoice, or without lines, still reads).
    type Row = (Option<String>, Option<i64>, Option<i64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT i.name, i.qty, i.unit_price_minor, inv.invoice_number
         FROM orders o
         LEFT JOIN order_items i ON i.order_id = o.id
         LEFT JOIN invoices inv ON inv.order_id = o.id
         WHERE o.id = $1 ORDER BY i.line_no",
    )
    .bind(&order.id)
    .fetch_all(&e.store.pool)
    .await
    .map_err(StoreError::from)?;
    let invoice_number = rows.iter().find_map(|r| r.3.clone());
    let currency = orders::currency_of(order);
    Ok(Content {
        kind,
        order_id: order.id.clone(),
        invoice_number,
        lines: rows
            .into_iter()
            .filter_map(|(name, qty, unit, _)| {
                let (name, qty, unit) = (name?, qty?, unit?);
                Some(Line {
                    name,
                    qty,
                    amount: currency.format(unit * qty),
                })
            })
            .collect(),
        total: currency.format(order.total_minor),
        sold_out: false,
        credit_note: None,
    })
}

/// Sends `content` to the buyer once per (payment, `slot`), and records that it did: an
/// email already recorded is not sent again, and each carries a deterministic Message-ID, so
/// the rare resend after a crash between sending and recording is recognisable as the same
/// message. Returns whether it was sent now.
pub(super) async fn mail_once(
    e: &Engine,
    payment_id: &str,
    slot: &str,
    order: &OrderRow,
    content: &Content,
) -> Result<bool, StepError> {
    let Some(sent) = send_mail(e, payment_id, slot, order, content, true).await? else {
        return Ok(false);
    };
    let mut tx = e.store.begin().await?;
    record(&mut tx, &sent).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(true)
}

/// An email sent, to be recorded (see [`record`]).
#[derive(Debug, Clone)]
pub struct SentEmail {
    payment_id: String,
    slot: String,
    to: String,
    subject: String,
    message_id: String,
    transport: &'static str,
}

/// [`mail_once`] but for the record, which the caller writes: `None` if the email was
/// recorded already, and nothing was sent. With `maybe_sent` false the caller knows it was
/// not, and the store is not asked.
async fn send_mail(
    e: &Engine,
    payment_id: &str,
    slot: &str,
    order: &OrderRow,
    content: &Content,
    maybe_sent: bool,
) -> Result<Option<SentEmail>, StepError> {
    if maybe_sent {
        let already: Option<i64> =
            sqlx::query_scalar("SELECT id FROM emails_sent WHERE payment_id = $1 AND kind = $2")
                .bind(payment_id)
                .bind(slot)
                .fetch_optional(&e.store.pool)
                .await
                .map_err(StoreError::from)?;
        if already.is_some() {
            return Ok(None);
        }
    }
    let (subject, body) = render(content);
    let message_id = format!("<{slot}.{payment_id}@fulfilld>").replace(':', ".");
    let name = format!("{slot}-{payment_id}").replace(':', "-");
    let transport = e
        .mailer
        .send(&Outgoing {
            to: &order.customer_email,
            subject: &subject,
            body: &body,
            message_id: &message_id,
            name: &name,
        })
        .await?;
    Ok(Some(SentEmail {
        payment_id: payment_id.to_owned(),
        slot: slot.to_owned(),
        to: order.customer_email.clone(),
        subject,
        message_id,
        transport,
    }))
}

/// Records that an email was sent (once per payment and slot).
pub async fn record(tx: &mut Tx, m: &SentEmail) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO emails_sent (payment_id, kind, to_addr, subject, message_id, transport, sent_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (payment_id, kind) DO NOTHING",
    )
    .bind(&m.payment_id)
    .bind(&m.slot)
    .bind(&m.to)
    .bind(&m.subject)
    .bind(&m.message_id)
    .bind(m.transport)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub struct SendReceipt;

#[async_trait::async_trait]
impl super::Step for SendReceipt {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::SendReceipt
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}
