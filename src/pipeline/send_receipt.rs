//! `send_receipt`: one email per payment — a receipt, or a refund notice when the order was
//! refunded (text and policy: `jobs::send_receipt`). [`send_once`] and [`mail_once`] are
//! also how `notify_payment_failed` and `notify_refund` send.

use jobs::StepError;
use jobs::send_receipt::{Content, Kind, Line, render};

use super::StepResult;
use crate::Engine;
use crate::domain::now_ms;
use crate::email::Outgoing;
use crate::store::orders::OrderRow;
use crate::store::steps::Lease;
use crate::store::{StoreError, Tx, orders};

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let order = order_of(e, lease).await?;
    let kind = match order.status.as_str() {
        "refunded" | "refund_pending" => Kind::RefundNotice,
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
    let sent = send_mail(e, payment_id, kind.as_str(), order, &content).await?;
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
    let items = e.store.order_items(&order.id).await?;
    let invoice_number: Option<String> =
        sqlx::query_scalar("SELECT invoice_number FROM invoices WHERE order_id = $1")
            .bind(&order.id)
            .fetch_optional(&e.store.pool)
            .await
            .map_err(StoreError::from)?;
    let currency = orders::currency_of(order);
    Ok(Content {
        kind,
        order_id: order.id.clone(),
        invoice_number,
        lines: items
            .iter()
            .map(|i| Line {
                name: i.name.clone(),
                qty: i.qty,
                amount: currency.format(i.unit_price_minor * i.qty),
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
    let Some(sent) = send_mail(e, payment_id, slot, order, content).await? else {
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
/// recorded already, and nothing was sent.
async fn send_mail(
    e: &Engine,
    payment_id: &str,
    slot: &str,
    order: &OrderRow,
    content: &Content,
) -> Result<Option<SentEmail>, StepError> {
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
