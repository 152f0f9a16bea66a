//! `send_receipt`: one email per payment — a receipt, or a refund notice when the order was
//! refunded (text and policy: `jobs::send_receipt`). [`send_once`] is also how
//! `notify_payment_failed` sends.

use jobs::StepError;
use jobs::send_receipt::{Content, Kind, Line, render};

use super::{StepResult, complete};
use crate::Engine;
use crate::domain::now_ms;
use crate::email::Outgoing;
use crate::store::orders::OrderRow;
use crate::store::steps::Lease;
use crate::store::{StoreError, orders};

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

/// Sends the step payment's email of `kind` about `order`, unless it was sent already, and
/// records it in the transaction that finishes the step.
pub(super) async fn send_once(
    e: &Engine,
    lease: &Lease,
    order: &OrderRow,
    kind: Kind,
) -> StepResult {
    let payment_id = &lease.step.payment_id;
    let already: Option<i64> =
        sqlx::query_scalar("SELECT id FROM emails_sent WHERE payment_id = $1 AND kind = $2")
            .bind(payment_id)
            .bind(kind.as_str())
            .fetch_optional(&e.store.pool)
            .await
            .map_err(StoreError::from)?;
    if already.is_some() {
        let tx = e.store.begin().await?;
        return complete(tx, lease, "already sent").await;
    }
    let items = e.store.order_items(&order.id).await?;
    let invoice_number: Option<String> =
        sqlx::query_scalar("SELECT invoice_number FROM invoices WHERE order_id = $1")
            .bind(&order.id)
            .fetch_optional(&e.store.pool)
            .await
            .map_err(StoreError::from)?;
    let sold_out: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM refunds WHERE order_id = $1 AND reason = 'out_of_stock'",
    )
    .bind(&order.id)
    .fetch_one(&e.store.pool)
    .await
    .map_err(StoreError::from)?;
    let currency = orders::currency_of(order);
    let content = Content {
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
        sold_out: sold_out > 0,
    };
    let (subject, body) = render(&content);
    let message_id = format!("<{}.{payment_id}@fulfilld>", kind.as_str());
    let name = format!("{}-{payment_id}", kind.as_str());
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
    let mut tx = e.store.begin().await?;
    sqlx::query(
        "INSERT INTO emails_sent (payment_id, kind, to_addr, subject, message_id, transport, sent_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (payment_id, kind) DO NOTHING",
    )
    .bind(payment_id)
    .bind(kind.as_str())
    .bind(&order.customer_email)
    .bind(&subject)
    .bind(&message_id)
    .bind(transport)
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    complete(tx, lease, &format!("{} sent", kind.as_str())).await
}
