//! `refund_payment`: refund the whole payment through the provider, once (see
//! `jobs::refund_payment`).

use jobs::StepError;
use jobs::refund_payment::idempotency_key;

use super::{StepResult, complete, payment_of, provider_of};
use crate::Engine;
use crate::domain::{new_id, now_ms};
use crate::store::steps::Lease;
use crate::store::{StoreError, orders, payments};

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let payment = payment_of(e, lease).await?;
    let (provider, at) = provider_of(e, &payment)?;
    let refund = provider.refund(&at, &idempotency_key(&payment.id)).await?;
    if refund.failed() {
        return Err(StepError::Permanent(format!(
            "refund {} is {}",
            refund.id, refund.status
        )));
    }
    let mut tx = e.store.begin().await?;
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, provider_refund_id, amount_minor, currency, reason, created_at)
         VALUES ($1, $2, $3, $4, $5, 'out_of_stock', $6)
         ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(new_id("rfd"))
    .bind(&payment.id)
    .bind(&refund.id)
    .bind(refund.amount_minor)
    .bind(&payment.currency)
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    payments::transition(&mut tx, &payment.id, &["paid"], "refunded").await?;
    orders::transition(
        &mut tx,
        &lease.step.order_id,
        &["refund_pending"],
        "refunded",
    )
    .await?;
    complete(tx, lease, &format!("refunded {}", refund.id)).await
}
