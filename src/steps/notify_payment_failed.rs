//! `notify_payment_failed`: tell the buyer, once per payment, that a payment failed, was
//! declined, or its checkout expired — unless the order was paid since (a retry went
//! through), when there is nothing to say.

use jobs::send_receipt::Kind;

use super::send_receipt::{order_of, send_once};
use super::{StepResult, complete};
use crate::Engine;
use crate::domain::OrderStatus;
use crate::store::steps::Lease;

pub async fn run(e: &Engine, lease: &Lease) -> StepResult {
    let order = order_of(e, lease).await?;
    if order.status != OrderStatus::PaymentFailed {
        let tx = e.store.begin().await?;
        let outcome = format!("not sent: the order is {} now", order.status);
        return complete(tx, lease, &outcome).await;
    }
    send_once(e, lease, &order, Kind::PaymentFailed).await
}

pub struct NotifyPaymentFailed;

#[async_trait::async_trait]
impl super::Step for NotifyPaymentFailed {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::NotifyPaymentFailed
    }

    async fn run(&self, e: &Engine, lease: &Lease) -> super::StepResult {
        run(e, lease).await
    }
}
