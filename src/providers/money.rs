//! Money as each provider writes it. The engine counts in ISO 4217 minor units
//! ([`Currency::exponent`]); a provider may count the same currency with other digits (Stripe
//! writes ISK with two, MGA with none; PayPal writes HUF and TWD with none), and may take only
//! some amounts (Stripe's and Razorpay's three-decimal amounts end in 0). Each provider's
//! table, with the doc it follows, is in its own file (`wire_money`); this is the arithmetic,
//! exact and without floats, both ways.

use crate::domain::Currency;

/// How one provider writes amounts of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    /// Digits after the point in the provider's integer (or decimal string) amounts.
    pub exponent: u32,
    /// The provider takes only multiples of this many of its own units.
    pub step: i64,
}

impl Wire {
    /// The currency's ISO digits, any amount.
    pub fn iso(c: &Currency) -> Wire {
        Wire {
            exponent: c.exponent(),
            step: 1,
        }
    }

    /// `minor` (ISO minor units of `c`) in the provider's units, or why the provider cannot
    /// take that amount.
    pub fn to_wire(self, provider: &str, c: &Currency, minor: i64) -> Result<i64, String> {
        let iso = c.exponent();
        let wire = if self.exponent >= iso {
            10i64
                .checked_pow(self.exponent - iso)
                .and_then(|f| minor.checked_mul(f))
        } else {
            let f = 10i64.pow(iso - self.exponent);
            (minor % f == 0).then(|| minor / f)
        };
        match wire {
            Some(w) if w % self.step == 0 => Ok(w),
            _ => Err(self.refusal(provider, c, minor)),
        }
    }

    /// The provider's `wire` units of `c` in ISO minor units; `None` for an amount finer than
    /// the currency's ISO digits (which no provider should send).
    pub fn from_wire(self, c: &Currency, wire: i64) -> Option<i64> {
        let iso = c.exponent();
        if self.exponent >= iso {
            let f = 10i64.checked_pow(self.exponent - iso)?;
            (wire % f == 0).then(|| wire / f)
        } else {
            wire.checked_mul(10i64.checked_pow(iso - self.exponent)?)
        }
    }

    fn refusal(self, provider: &str, c: &Currency, minor: i64) -> String {
        let smallest = self
            .from_wire(c, self.step)
            .map(|m| c.format(m))
            .unwrap_or_else(|| format!("1 {c}"));
        format!(
            "{provider} cannot charge {}: it takes {c} only in steps of {smallest}",
            c.format(minor)
        )
    }
}

/// A provider's table: how it writes each currency, `None` for one it does not take.
pub type Table = fn(&Currency) -> Option<Wire>;

fn wire_for(provider: &str, table: Table, currency: &str) -> Result<(Currency, Wire), String> {
    let c = Currency::parse("currency", currency).map_err(|e| e.to_string())?;
    let w = table(&c).ok_or_else(|| format!("{provider} does not take {c}"))?;
    Ok((c, w))
}

/// `minor` ISO minor units of `currency` as `provider` writes them.
pub fn to_provider(
    provider: &str,
    table: Table,
    currency: &str,
    minor: i64,
) -> Result<i64, String> {
    let (c, w) = wire_for(provider, table, currency)?;
    w.to_wire(provider, &c, minor)
}

/// An amount `provider` wrote (`wire` of its units of `currency`) in ISO minor units.
pub fn from_provider(
    provider: &str,
    table: Table,
    currency: &str,
    wire: i64,
) -> Result<i64, String> {
    let (c, w) = wire_for(provider, table, currency)?;
    w.from_wire(&c, wire)
        .ok_or_else(|| format!("{provider} wrote {wire} units of {c}, finer than {c} counts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(s: &str) -> Currency {
        Currency::parse("c", s).expect("currency")
    }

    #[test]
    fn more_provider_digits_multiply_and_fewer_divide_exactly() {
        let isk = cur("ISK");
        let two = Wire {
            exponent: 2,
            step: 100,
        };
        assert_eq!(two.to_wire("stripe", &isk, 1000), Ok(100_000));
        assert_eq!(two.from_wire(&isk, 100_000), Some(1000));
        assert_eq!(two.from_wire(&isk, 4010), None, "fractional krona");
        let mga = cur("MGA");
        let none = Wire {
            exponent: 0,
            step: 1,
        };
        assert_eq!(none.to_wire("stripe", &mga, 50_000), Ok(500));
        let e = none.to_wire("stripe", &mga, 50_050).expect_err("fraction");
        assert_eq!(
            e,
            "stripe cannot charge 500.50 MGA: it takes MGA only in steps of 1.00 MGA"
        );
        assert_eq!(none.from_wire(&mga, 500), Some(50_000));
        let kwd = cur("KWD");
        let tens = Wire {
            exponent: 3,
            step: 10,
        };
        assert_eq!(tens.to_wire("razorpay", &kwd, 99_990), Ok(99_990));
        assert!(tens.to_wire("razorpay", &kwd, 99_991).is_err());
        assert_eq!(
            Wire::iso(&cur("USD")).to_wire("x", &cur("USD"), 1234),
            Ok(1234)
        );
        assert!(
            two.to_wire("x", &isk, i64::MAX).is_err(),
            "overflow is refused"
        );
    }
}
