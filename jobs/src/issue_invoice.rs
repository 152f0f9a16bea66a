//! `issue_invoice`: a gapless invoice number from the series counter, tax lines, and the
//! double-entry ledger rows, all in the transaction that marks the step done. Gapless
//! because the counter increment rolls back with everything else: a number is consumed only
//! by an invoice that exists.

use crate::RetryPolicy;

pub const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_ms: 500,
    cap_ms: 60_000,
};

/// Tax included in a gross amount at `rate_bps` basis points (2000 = 20 %), rounded half
/// up to the minor unit. Prices in the catalogue are what the buyer pays, so tax is carved
/// out of the total rather than added to it: the invoice total always equals the payment.
pub fn inclusive_tax(gross_minor: i64, rate_bps: u32) -> i64 {
    if rate_bps == 0 || gross_minor <= 0 {
        return 0;
    }
    let gross = i128::from(gross_minor);
    let rate = i128::from(rate_bps);
    // tax = gross · r / (1 + r), with r = rate/10000, rounded half up.
    let num = gross * rate * 2;
    let den = (10_000 + rate) * 2;
    ((num + den / 2) / den) as i64
}

/// The human-facing invoice number: `{series}-{number:06}`.
pub fn number(series: &str, n: i64) -> String {
    format!("{series}-{n:06}")
}

/// One ledger line; every invoice's lines balance (sum of debits = sum of credits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    pub account: &'static str,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

/// Money received from the provider (debit the provider's clearing account), split into
/// revenue and tax owed (credits).
pub fn sale_lines(gross_minor: i64, tax_minor: i64) -> [LedgerLine; 3] {
    [
        LedgerLine {
            account: "provider_clearing",
            debit_minor: gross_minor,
            credit_minor: 0,
        },
        LedgerLine {
            account: "revenue",
            debit_minor: 0,
            credit_minor: gross_minor - tax_minor,
        },
        LedgerLine {
            account: "tax_payable",
            debit_minor: 0,
            credit_minor: tax_minor,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tax_is_carved_out_and_lines_balance() {
        assert_eq!(inclusive_tax(1200, 2000), 200);
        assert_eq!(inclusive_tax(1000, 0), 0);
        assert_eq!(inclusive_tax(999, 2000), 167); // 166.5 rounds up
        for (gross, rate) in [(1, 2000), (12_345, 1900), (100, 700), (7, 2500)] {
            let tax = inclusive_tax(gross, rate);
            let lines = sale_lines(gross, tax);
            let debit: i64 = lines.iter().map(|l| l.debit_minor).sum();
            let credit: i64 = lines.iter().map(|l| l.credit_minor).sum();
            assert_eq!(debit, credit);
            assert!(tax >= 0 && tax <= gross);
        }
        assert_eq!(number("INV", 42), "INV-000042");
    }
}
