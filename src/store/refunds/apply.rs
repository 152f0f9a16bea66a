//! A succeeded refund's effects, applied once when their time has come: the order's
//! status, a credit note and reversing ledger rows, entitlements revoked and the pipeline
//! stopped on a full refund, the stock returned.

use super::*;

/// Applies every succeeded refund of the order's payments that waited (for the capture, or
/// for the fulfilment to finish). Returns the steps to wake.
pub async fn apply_waiting(tx: &mut Tx, order_id: &str) -> Result<Vec<Wake>> {
    Ok(apply_waiting_many(tx, &[order_id]).await?.concat())
}

/// [`apply_waiting`] for many orders, with one query to find what waits; per order, the
/// steps to wake.
pub async fn apply_waiting_many(tx: &mut Tx, order_ids: &[&str]) -> Result<Vec<Vec<Wake>>> {
    let mut wake = vec![Vec::new(); order_ids.len()];
    if order_ids.is_empty() {
        return Ok(wake);
    }
    let sql = format!(
        "SELECT order_id, id FROM refunds
         WHERE order_id IN ({}) AND status = 'succeeded' AND applied_at IS NULL
         ORDER BY created_at, id",
        crate::store::placeholders(1, order_ids.len())
    );
    let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
        .persistent(order_ids.len() == 1);
    for o in order_ids {
        q = q.bind(*o);
    }
    for (order, id) in q.fetch_all(&mut **tx).await? {
        if let Some(i) = order_ids.iter().position(|o| *o == order) {
            wake[i].extend(apply_ready(tx, &id).await?.1);
        }
    }
    Ok(wake)
}

/// Applies a succeeded refund's effects, once, if the time has come: the payment is
/// captured, and either the order is done being fulfilled or this refund returns all of the
/// money. Otherwise it waits (see [`apply_waiting`]).
pub async fn apply_ready(tx: &mut Tx, refund_id: &str) -> Result<(String, Vec<Wake>)> {
    let Some(r) = by_id(tx, refund_id).await? else {
        return Ok(("no such refund".into(), Vec::new()));
    };
    if r.status != RefundStatus::Succeeded || r.applied_at.is_some() {
        return Ok((format!("refund {} is {}", r.id, r.status), Vec::new()));
    }
    let p = payments::by_id(&mut **tx, &r.payment_id)
        .await?
        .ok_or_else(|| crate::store::StoreError::Other("payment vanished".into()))?;
    if !p.status.captured() {
        return Ok((
            format!(
                "refund {} recorded; applied once the payment is captured",
                r.id
            ),
            Vec::new(),
        ));
    }
    // A payment other than the one the order was fulfilled with (a second capture): its
    // refund gives that money back and touches nothing of the order's.
    let fulfilled_with: Option<String> = sqlx::query_scalar(
        "SELECT s.payment_id FROM steps s JOIN payments p ON p.id = s.payment_id
         WHERE s.order_id = $1 AND s.kind = $2 AND p.status IN ('paid', 'refunded')
         ORDER BY s.id LIMIT 1",
    )
    .bind(&r.order_id)
    .bind(StepKind::ConfirmCapture.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if fulfilled_with.as_deref().is_some_and(|f| f != r.payment_id) {
        sqlx::query("UPDATE refunds SET applied_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&r.id)
            .execute(&mut **tx)
            .await?;
        if total(tx, &p.id, true).await? >= p.amount_minor {
            payments::transition(tx, &p.id, &[PaymentStatus::Paid], PaymentStatus::Refunded)
                .await?;
        }
        let wake = steps::arm(tx, &r.order_id, &p.id, StepKind::NotifyRefund).await?;
        return Ok((
            format!("refund {} of an extra payment applied", r.id),
            wake.into_iter().collect(),
        ));
    }
    let order = orders::get_in(tx, &r.order_id)
        .await?
        .ok_or_else(|| crate::store::StoreError::Other("order vanished".into()))?;
    let refunded_after = total(tx, &p.id, true).await? + r.amount_minor;
    let full = refunded_after >= p.amount_minor;
    let in_flight = order.status == OrderStatus::Paid;
    if in_flight && !full {
        return Ok((
            format!(
                "refund {} recorded; applied once the order is fulfilled",
                r.id
            ),
            Vec::new(),
        ));
    }
    let now = now_ms();
    sqlx::query(
        "UPDATE refunds SET applied_at = $1, updated_at = $1 WHERE id = $2 AND applied_at IS NULL",
    )
    .bind(now)
    .bind(&r.id)
    .execute(&mut **tx)
    .await?;
    let credit_note = issue_credit_note(tx, &r).await?;
    let mut wake = Vec::new();
    if full {
        payments::transition(tx, &p.id, &[PaymentStatus::Paid], PaymentStatus::Refunded).await?;
        let from = [
            OrderStatus::Paid,
            OrderStatus::Fulfilled,
            OrderStatus::PartiallyRefunded,
            OrderStatus::NeedsReview,
            OrderStatus::RefundPending,
        ];
        orders::transition(tx, &r.order_id, &from, OrderStatus::Refunded).await?;
        sqlx::query(
            "UPDATE entitlements SET revoked_at = $1 WHERE order_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&r.order_id)
        .execute(&mut **tx)
        .await?;
        if in_flight {
            // Refunded while being fulfilled: stop, give the held stock back, and let the
            // buyer's email be the refund notice.
            let stop = [
                StepKind::ConfirmCapture,
                StepKind::DeductStock,
                StepKind::IssueInvoice,
                StepKind::GrantEntitlement,
            ];
            steps::skip(tx, &r.order_id, &stop, "order refunded").await?;
            payments::release_reservations(tx, &r.order_id).await?;
            wake = steps::advance(tx, &r.order_id).await?;
        }
        let restock: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(restock), 0) FROM refunds WHERE payment_id = $1 AND applied_at IS NOT NULL",
        )
        .bind(&p.id)
        .fetch_one(&mut **tx)
        .await?;
        if restock == 1 {
            return_stock(tx, &r.order_id).await?;
        }
    } else {
        orders::transition(
            tx,
            &r.order_id,
            &[OrderStatus::Fulfilled, OrderStatus::NeedsReview],
            OrderStatus::PartiallyRefunded,
        )
        .await?;
    }
    if !in_flight && order.status != OrderStatus::RefundPending {
        // The buyer had a receipt: tell them of this refund (a refund of an order not yet
        // fulfilled is told by its refund notice instead).
        let armed = steps::arm(tx, &r.order_id, &p.id, StepKind::NotifyRefund).await?;
        wake.extend(armed);
    }
    // After the order's status moved: the payload shows where it stands now.
    let refund = serde_json::json!({ "refund": {
        "id": r.id, "amount_minor": r.amount_minor, "currency": r.currency, "reason": r.reason,
        "full": full, "credit_note_number": credit_note,
    }});
    crate::store::merchant::emit(tx, "order.refunded", &[(&r.order_id, refund)]).await?;
    let what = if full {
        "refunded in full"
    } else {
        "partially refunded"
    };
    let outcome = match credit_note {
        Some(cn) => format!("{what}: refund {} applied, credit note {cn}", r.id),
        None => format!("{what}: refund {} applied", r.id),
    };
    Ok((outcome, wake))
}

/// Puts the stock an order consumed back on hand, once.
pub(super) async fn return_stock(tx: &mut Tx, order_id: &str) -> Result<()> {
    let consumed: Vec<(String, i64)> = sqlx::query_as(
        // In SKU order, as every writer of SKU rows locks them (see `begin_checkout`).
        "SELECT sku, qty FROM stock_reservations WHERE order_id = $1 AND status = 'consumed'
         ORDER BY sku",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?;
    for (sku, qty) in consumed {
        catalogue::restock(tx, &sku, qty).await?;
    }
    sqlx::query(
        "UPDATE stock_reservations SET status = 'returned', updated_at = $1 WHERE order_id = $2 AND status = 'consumed'",
    )
    .bind(now_ms())
    .bind(order_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A credit note for an invoiced order's refund: the next number of the invoice series'
/// credit-note series (`INV` → `INV-CN-000001`), the refund's share of the tax, and ledger
/// rows that mirror the sale's. None when the order has no invoice (it sold out first).
pub(super) async fn issue_credit_note(tx: &mut Tx, r: &RefundRow) -> Result<Option<String>> {
    let invoice: Option<(String, String, String, i64, String, String)> = sqlx::query_as(
        "SELECT id, series, invoice_number, tax_rate_bps, tax_name, currency FROM invoices WHERE order_id = $1",
    )
    .bind(&r.order_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((invoice_id, series, invoice_number, rate_bps, tax_name, currency)) = invoice else {
        return Ok(None);
    };
    let tax = inclusive_tax(r.amount_minor, u32::try_from(rate_bps).unwrap_or(0));
    let cn_id = new_id("cn");
    let now = now_ms();
    for line in sale_lines(r.amount_minor, tax) {
        // The sale's lines with debit and credit swapped.
        sqlx::query(
            "INSERT INTO ledger_entries (order_id, reference, account, debit_minor, credit_minor, currency, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.order_id)
        .bind(&cn_id)
        .bind(line.account)
        .bind(line.credit_minor)
        .bind(line.debit_minor)
        .bind(&currency)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let cn_series = format!("{series}-CN");
    let n: i64 = sqlx::query_scalar(
        "INSERT INTO invoice_counters (series, last_number) VALUES ($1, 1)
         ON CONFLICT (series) DO UPDATE SET last_number = invoice_counters.last_number + 1
         RETURNING last_number",
    )
    .bind(&cn_series)
    .fetch_one(&mut **tx)
    .await?;
    let cn_number = number(&cn_series, n);
    let c = crate::domain::Currency::parse("currency", &currency)
        .map_err(|e| crate::store::StoreError::Other(e.to_string()))?;
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Credit note {n}</title></head><body>\
         <h1>Credit note {n}</h1><p>Refers to invoice {inv}<br>Order {o}<br>Reason: {why}</p>\
         <p>Refunded: {total}<br>of which {tax_name} {rate}%: {tax}</p></body></html>",
        n = html_escape(&cn_number),
        inv = html_escape(&invoice_number),
        o = html_escape(&r.order_id),
        why = html_escape(&r.reason),
        total = c.format(r.amount_minor),
        tax_name = html_escape(&tax_name),
        rate = rate_bps as f64 / 100.0,
        tax = c.format(tax),
    );
    sqlx::query(
        "INSERT INTO credit_notes (id, series, number, credit_note_number, order_id, refund_id, invoice_id,
                                   currency, total_minor, tax_minor, html, issued_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&cn_id)
    .bind(&cn_series)
    .bind(n)
    .bind(&cn_number)
    .bind(&r.order_id)
    .bind(&r.id)
    .bind(&invoice_id)
    .bind(&currency)
    .bind(r.amount_minor)
    .bind(tax)
    .bind(html)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(Some(cn_number))
}
