//! `issue_invoice`: gapless number, tax, HTML rendering and ledger rows, in the transaction
//! that marks the step done (arithmetic: `jobs::issue_invoice`).

use jobs::StepError;
use jobs::issue_invoice::{LedgerLine, inclusive_tax, number, sale_lines};

use super::tail::{Deferred, Tail};
use crate::Engine;
use crate::clock::now_ms;
use crate::domain::new_id;
use crate::store::steps::Lease;
use crate::store::{StoreError, Tx, orders, value_rows};

/// Writes the ledger rows of every invoice `leases` issue in `tx`, in one statement; the
/// numbered invoices themselves wait in `tail` (see `pipeline::batch`). Returns each step's
/// outcome (until its number replaces it).
pub async fn apply(
    e: &Engine,
    tx: &mut Tx,
    leases: &[&Lease],
    tail: &mut Tail,
) -> Result<Vec<String>, StepError> {
    let cfg = &e.config.invoice;
    let order_ids: Vec<&str> = leases.iter().map(|l| l.step.order_id.as_str()).collect();
    let found = orders::get_many(tx, &order_ids, false).await?;
    let items = orders::items_many(tx, &order_ids).await?;
    let now = now_ms();
    let mut invoices = Vec::with_capacity(leases.len());
    for ((lease, order), items) in leases.iter().zip(found).zip(items) {
        let order = order.ok_or_else(|| StepError::Permanent("order row missing".into()))?;
        invoices.push(Unnumbered {
            id: new_id("inv"),
            step_id: lease.step.id,
            payment_id: lease.step.payment_id.clone(),
            tax: inclusive_tax(order.total_minor, cfg.tax_rate_bps),
            order,
            items,
            issued_at: now,
        });
    }
    let lines: Vec<(&Unnumbered, LedgerLine)> = invoices
        .iter()
        .flat_map(|inv| {
            sale_lines(inv.order.total_minor, inv.tax)
                .into_iter()
                .map(move |l| (inv, l))
        })
        .collect();
    let sql = format!(
        "INSERT INTO ledger_entries (order_id, reference, account, debit_minor, credit_minor, currency, created_at)
         VALUES {}",
        value_rows(2, lines.len(), 6, ", $1")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(invoices.len() == 1)
        .bind(now);
    for (inv, line) in &lines {
        q = q
            .bind(&inv.order.id)
            .bind(&inv.id)
            .bind(line.account)
            .bind(line.debit_minor)
            .bind(line.credit_minor)
            .bind(&inv.order.currency);
    }
    q.execute(&mut **tx).await.map_err(StoreError::from)?;
    tail.part::<Invoices>().0.extend(invoices);
    Ok(vec!["issued".to_owned(); leases.len()])
}

/// The invoices a transaction's steps issue, numbered at its end.
#[derive(Default)]
pub struct Invoices(Vec<Unnumbered>);

#[async_trait::async_trait]
impl Deferred for Invoices {
    fn rank(&self) -> u8 {
        1
    }

    async fn flush(&self, e: &Engine, tx: &mut Tx) -> Result<bool, StoreError> {
        number_all(e, tx, &self.0).await?;
        Ok(true)
    }
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
    let numbered: Vec<(&Unnumbered, i64, String)> = invoices
        .iter()
        .zip(last - n + 1..)
        .map(|(inv, n)| (inv, n, number(&cfg.series, n)))
        .collect();
    let sql = format!(
        "INSERT INTO invoices (id, number, invoice_number, order_id, payment_id, currency,
                               subtotal_minor, tax_minor, total_minor, html, issued_at,
                               series, tax_name, tax_rate_bps)
         VALUES {}",
        value_rows(4, numbered.len(), 11, ", $1, $2, $3")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(numbered.len() == 1)
        .bind(&cfg.series)
        .bind(&cfg.tax_name)
        .bind(i64::from(cfg.tax_rate_bps));
    for (inv, n, invoice_number) in &numbered {
        let order = &inv.order;
        let html = render_html(
            invoice_number,
            order,
            &inv.items,
            inv.tax,
            &cfg.tax_name,
            cfg.tax_rate_bps,
            &orders::currency_of(order),
        );
        q = q
            .bind(&inv.id)
            .bind(*n)
            .bind(invoice_number)
            .bind(&order.id)
            .bind(&inv.payment_id)
            .bind(&order.currency)
            .bind(order.total_minor - inv.tax)
            .bind(inv.tax)
            .bind(order.total_minor)
            .bind(html)
            .bind(inv.issued_at);
    }
    q.execute(&mut **tx).await?;
    // Each step's outcome becomes its invoice's number.
    let sql = format!(
        "UPDATE steps SET outcome = v.column2 FROM (VALUES {}) AS v WHERE steps.id = v.column1",
        value_rows(1, numbered.len(), 2, "")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(numbered.len() == 1);
    for (inv, _, invoice_number) in &numbered {
        q = q.bind(inv.step_id).bind(invoice_number);
    }
    q.execute(&mut **tx).await?;
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
    let esc = crate::text::html_escape;
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

pub struct IssueInvoice;

#[async_trait::async_trait]
impl super::Step for IssueInvoice {
    fn kind(&self) -> jobs::StepKind {
        jobs::StepKind::IssueInvoice
    }

    async fn run_batch(
        &self,
        e: &Engine,
        tx: &mut Tx,
        leases: &[&Lease],
        tail: &mut Tail,
    ) -> Result<Vec<String>, StepError> {
        apply(e, tx, leases, tail).await
    }
}
