//! `issue_invoice`: gapless number, tax, HTML rendering and ledger rows, in the transaction
//! that marks the step done (arithmetic: `jobs::issue_invoice`).

use jobs::StepError;
use jobs::issue_invoice::{inclusive_tax, number, sale_lines};

use super::batch::Tail;
use crate::Engine;
use crate::domain::{new_id, now_ms};
use crate::store::steps::Lease;
use crate::store::{StoreError, Tx, orders};

/// Writes the invoice's ledger rows in `tx`; the numbered invoice itself waits in `tail`
/// (see `pipeline::batch`). Returns the step's outcome (until the number replaces it).
pub async fn apply(
    e: &Engine,
    tx: &mut Tx,
    lease: &Lease,
    tail: &mut Tail,
) -> Result<String, StepError> {
    let cfg = &e.config.invoice;
    let order_id = &lease.step.order_id;
    let order = orders::get_in(tx, order_id)
        .await?
        .ok_or_else(|| StepError::Permanent("order row missing".into()))?;
    let items = orders::items_in(tx, order_id).await?;
    let tax = inclusive_tax(order.total_minor, cfg.tax_rate_bps);
    let now = now_ms();
    let invoice_id = new_id("inv");
    for line in sale_lines(order.total_minor, tax) {
        sqlx::query(
            "INSERT INTO ledger_entries (order_id, reference, account, debit_minor, credit_minor, currency, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(order_id)
        .bind(&invoice_id)
        .bind(line.account)
        .bind(line.debit_minor)
        .bind(line.credit_minor)
        .bind(&order.currency)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from)?;
    }
    tail.invoices.push(Unnumbered {
        id: invoice_id,
        step_id: lease.step.id,
        payment_id: lease.step.payment_id.clone(),
        order,
        items,
        tax,
        issued_at: now,
    });
    Ok("issued".to_owned())
}

/// An invoice written but for its number.
pub struct Unnumbered {
    id: String,
    step_id: i64,
    payment_id: String,
    order: orders::OrderRow,
    items: Vec<orders::ItemRow>,
    tax: i64,
    issued_at: i64,
}

/// Numbers and inserts `invoices`, right before the commit: the counter row stays locked by
/// its update until then, and one update takes the numbers of them all. A rollback gives
/// the numbers back: numbers have no gaps. Each step's outcome becomes its number.
pub async fn number_all(
    e: &Engine,
    tx: &mut Tx,
    invoices: &[Unnumbered],
) -> Result<(), StoreError> {
    if invoices.is_empty() {
        return Ok(());
    }
    let cfg = &e.config.invoice;
    let n = i64::try_from(invoices.len()).unwrap_or(i64::MAX);
    let last: i64 = sqlx::query_scalar(
        "INSERT INTO invoice_counters (series, last_number) VALUES ($1, $2)
         ON CONFLICT (series) DO UPDATE SET last_number = invoice_counters.last_number + $2
         RETURNING last_number",
    )
    .bind(&cfg.series)
    .bind(n)
    .fetch_one(&mut **tx)
    .await?;
    for (inv, n) in invoices.iter().zip(last - n + 1..) {
        let invoice_number = number(&cfg.series, n);
        let order = &inv.order;
        let html = render_html(
            &invoice_number,
            order,
            &inv.items,
            inv.tax,
            &cfg.tax_name,
            cfg.tax_rate_bps,
            &orders::currency_of(order),
        );
        sqlx::query(
            "INSERT INTO invoices (id, series, number, invoice_number, order_id, payment_id, currency,
                                   subtotal_minor, tax_minor, total_minor, tax_name, tax_rate_bps, html, issued_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&inv.id)
        .bind(&cfg.series)
        .bind(n)
        .bind(&invoice_number)
        .bind(&order.id)
        .bind(&inv.payment_id)
        .bind(&order.currency)
        .bind(order.total_minor - inv.tax)
        .bind(inv.tax)
        .bind(order.total_minor)
        .bind(&cfg.tax_name)
        .bind(i64::from(cfg.tax_rate_bps))
        .bind(html)
        .bind(inv.issued_at)
        .execute(&mut **tx)
        .await?;
        sqlx::query("UPDATE steps SET outcome = $1 WHERE id = $2")
            .bind(&invoice_number)
            .bind(inv.step_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn render_html(
    invoice_number: &str,
    order: &orders::OrderRow,
    items: &[orders::ItemRow],
    tax: i64,
    tax_name: &str,
    tax_rate_bps: u32,
    currency: &crate::domain::Currency,
) -> String {
    let esc = crate::domain::html_escape;
    let mut rows = String::new();
    for it in items {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&it.name),
            it.qty,
            currency.format(it.unit_price_minor),
            currency.format(it.unit_price_minor * it.qty)
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Invoice {n}</title></head><body>\
         <h1>Invoice {n}</h1><p>Order {o}<br>Billed to {to}</p>\
         <table><tr><th>Item</th><th>Qty</th><th>Unit</th><th>Amount</th></tr>{rows}</table>\
         <p>Net: {net}<br>{tax_name} {rate}% (included): {tax}<br><strong>Total: {total}</strong></p>\
         </body></html>",
        n = esc(invoice_number),
        o = esc(&order.id),
        to = esc(&order.customer_email),
        net = currency.format(order.total_minor - tax),
        tax_name = esc(tax_name),
        rate = f64::from(tax_rate_bps) / 100.0,
        tax = currency.format(tax),
        total = currency.format(order.total_minor),
    )
}
