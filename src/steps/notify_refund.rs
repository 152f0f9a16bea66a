//! `notify_refund`: tell the buyer about each refund of an order they had a receipt for —
//! one email per refund, with its amount and credit note. One step per payment, armed again
//! by every refund applied to it; a run sends what has not been sent, so refunds that came
//! while it waited are all told.

use jobs::send_receipt::Kind;

use super::send_receipt::{content, mail_once, order_of};
use super::{StepResult, complete};
use crate::Engine;
use crate::store::StoreError;
use crate::store::steps::Lease;

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let order = order_of(e, lease).await?;
    let refunds: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT r.id, r.amount_minor, c.credit_note_number FROM refunds r
         LEFT JOIN credit_notes c ON c.refund_id = r.id
         WHERE r.payment_id = $1 AND r.status = 'succeeded' AND r.applied_at IS NOT NULL
         ORDER BY r.applied_at, r.id",
    )
    .bind(&lease.step.payment_id)
    .fetch_all(&e.store.pool)
    .await
    .map_err(StoreError::from)?;
    let currency = crate::store::orders::currency_of(&order);
    let mut sent = 0;
    for (refund_id, amount, credit_note) in refunds {
        let mut c = content(e, &order, Kind::Refunded).await?;
        c.total = currency.format(amount);
        c.credit_note = credit_note;
        let slot = format!("{}:{refund_id}", Kind::Refunded.as_str());
        if mail_once(e, &lease.step.payment_id, &slot, &order, &c).await? {
            sent += 1;
        }
    }
    let tx = e.store.begin().await?;
    complete(tx, lease, &format!("{sent} refund email(s) sent")).await
}

pub struct NotifyRefund;

#[async_trait::async_trait]
impl super::Step for NotifyRefund {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::NotifyRefund
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}
