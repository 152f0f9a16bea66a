//! PayPal's webhook events and transaction records, read into what they mean for an order.

use super::*;

/// Reads a verified webhook body.
pub fn normalize(body: &[u8]) -> Result<ProviderEvent, String> {
    let ev: wire::Event =
        serde_json::from_slice(body).map_err(|e| format!("not a PayPal event: {e}"))?;
    let resource = |what: &str| format!("{}: the resource is not {what}", ev.event_type);
    let (order_id, payment_ref, change) = match ev.event_type.as_str() {
        "CHECKOUT.ORDER.APPROVED" | "CHECKOUT.ORDER.COMPLETED" | "CHECKOUT.ORDER.VOIDED" => {
            let o: wire::Order = serde_json::from_value(ev.resource.clone())
                .map_err(|e| format!("{}: {e}", resource("an order")))?;
            let change = if ev.event_type == "CHECKOUT.ORDER.VOIDED" {
                PaymentChange::Expired
            } else {
                // Approval: the buyer agreed; `confirm_capture` captures and checks.
                PaymentChange::Paid {
                    provider_payment_id: o
                        .capture()
                        .filter(|c| c.status == "COMPLETED")
                        .map(|c| c.id.clone()),
                }
            };
            let custom = o.purchase_units.first().and_then(|u| u.custom_id.clone());
            (Some(o.id), custom, change)
        }
        "PAYMENT.CAPTURE.COMPLETED"
        | "PAYMENT.CAPTURE.PENDING"
        | "PAYMENT.CAPTURE.DENIED"
        | "PAYMENT.CAPTURE.DECLINED" => {
            let c: wire::Capture = serde_json::from_value(ev.resource.clone())
                .map_err(|e| format!("{}: {e}", resource("a capture")))?;
            let id = Some(c.id.clone());
            let change = match ev.event_type.as_str() {
                "PAYMENT.CAPTURE.COMPLETED" => PaymentChange::Paid {
                    provider_payment_id: id,
                },
                "PAYMENT.CAPTURE.PENDING" => PaymentChange::AwaitingSettlement {
                    provider_payment_id: id,
                },
                _ => PaymentChange::Failed,
            };
            let order = c.supplementary_data.and_then(|s| s.related_ids.order_id);
            (order, c.custom_id, change)
        }
        // The buyer's approval was taken back before capture. The resource names the order
        // by `order_id` and carries its purchase units (PayPal's webhook event names,
        // <https://developer.paypal.com/api/rest/webhooks/event-names/#orders>).
        "CHECKOUT.PAYMENT-APPROVAL.REVERSED" => {
            let order = ev.resource["order_id"]
                .as_str()
                .or_else(|| ev.resource["id"].as_str())
                .map(str::to_owned);
            let custom = ev.resource["purchase_units"][0]["custom_id"]
                .as_str()
                .map(str::to_owned);
            (order, custom, PaymentChange::Failed)
        }
        // Money back to the buyer: a refund (ours or from the dashboard) or a reversal
        // (a dispute decided against the shop). The resource is the refund; its `up` link
        // names the capture.
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.CAPTURE.REVERSED" => {
            let r: wire::Refund = serde_json::from_value(ev.resource.clone())
                .map_err(|e| format!("{}: {e}", resource("a refund")))?;
            let capture = r
                .links
                .iter()
                .find(|l| l.rel == "up")
                .and_then(|l| l.href.rsplit('/').next())
                .map(str::to_owned);
            let amount = r
                .amount
                .as_ref()
                .and_then(wire::Money::minor)
                .ok_or_else(|| format!("{}: the refund has no readable amount", ev.event_type))?;
            return Ok(ProviderEvent {
                provider: NAME,
                event_id: ev.id,
                event_type: ev.event_type,
                provider_order_id: None,
                provider_payment_id: capture,
                payment_ref: None,
                change: PaymentChange::Refunded(RefundNotice {
                    provider_refund_id: r.id,
                    amount_minor: amount,
                    currency: r.amount.map(|m| m.currency_code),
                    refund_ref: r.custom_id,
                    state: RefundState::of(&r.status),
                }),
            });
        }
        _ => (None, None, PaymentChange::Ignored),
    };
    Ok(ProviderEvent {
        provider: NAME,
        event_id: ev.id,
        event_type: ev.event_type,
        provider_order_id: order_id,
        provider_payment_id: None,
        payment_ref,
        change,
    })
}

/// `2026-11-22T10:00:00Z` for a Unix time.
pub(super) fn iso_utc(s: i64) -> String {
    crate::clock::rfc3339(s.saturating_mul(1000))
}

/// Unix seconds of PayPal's `2026-11-22T10:00:00+0000` (or `…Z`), read as UTC.
pub(super) fn unix_of(date: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(date.get(..19)?, &fmt).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// A listed transaction as a payment, if it is money received.
pub(super) fn recent_of(t: wire::TransactionInfo) -> Option<RecentPayment> {
    let currency = Currency::parse("currency_code", &t.transaction_amount.currency_code).ok()?;
    let amount_minor = currency.parse_decimal(&t.transaction_amount.value)?;
    let id = Some(t.transaction_id.clone());
    // Transaction Search's `transaction_status`
    // (<https://developer.paypal.com/docs/api/transaction-search/v1/>): D denied, P pending,
    // S completed, V "a successful transaction was reversed and funds were refunded to the
    // original sender" — no money is held for a V: it is not a payment to fulfil, and one we
    // hold as paid is told to a person (its refund or reversal should have arrived as
    // PAYMENT.CAPTURE.REVERSED / REFUNDED; if that was lost, the access is still granted).
    let (change, paid) = match t.transaction_status.as_str() {
        "S" => (
            PaymentChange::Paid {
                provider_payment_id: id.clone(),
            },
            true,
        ),
        "P" => (
            PaymentChange::AwaitingSettlement {
                provider_payment_id: id.clone(),
            },
            false,
        ),
        "D" => (PaymentChange::Failed, false),
        _ => (PaymentChange::Ignored, false),
    };
    Some(RecentPayment {
        returned: t.transaction_status == "V",
        provider_order_id: None,
        payment_ref: t.custom_field,
        created_s: unix_of(&t.transaction_initiation_date).unwrap_or(0),
        state: PaymentState {
            change,
            paid,
            state: format!("transaction_status={}", t.transaction_status),
            amount_minor,
            currency: currency.as_str().to_owned(),
            provider_payment_id: id,
        },
    })
}
