//! Domain newtypes that can only hold valid values: each has a fallible `parse`, so once a
//! value exists nothing downstream re-checks it. Money is integer minor units plus an ISO
//! currency code — never floats.

pub mod event;
pub mod status;

pub use status::{OrderStatus, PaymentStatus, RefundStatus, Status, StepStatus};

use std::fmt;

/// Why a value was refused; `field` is what the API reports back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An ISO 4217 code, upper case (providers that speak lower case are converted at the edge).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(field: &str, s: &str) -> Result<Currency, Invalid> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Currency(s.to_ascii_uppercase()))
        } else {
            Err(Invalid::new(
                field,
                format!("{s:?} is not a three-letter ISO 4217 currency code"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point (ISO 4217). Zero-decimal currencies have no minor unit.
    pub fn exponent(&self) -> u32 {
        match self.0.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// `1234` minor units of USD → `"12.34 USD"`; of JPY → `"1234 JPY"`.
    pub fn format(&self, minor: i64) -> String {
        format!("{} {}", self.decimal(minor), self.0)
    }

    /// Minor units as a decimal string with exactly the currency's digits: `1000` USD →
    /// `"10.00"`, JPY → `"1000"`.
    pub fn decimal(&self, minor: i64) -> String {
        decimal(minor, self.exponent())
    }

    /// The inverse of [`Currency::decimal`] (see [`parse_decimal`]).
    pub fn parse_decimal(&self, s: &str) -> Option<i64> {
        parse_decimal(s, self.exponent())
    }
}

/// An integer count of `10^-e` units as a decimal string with exactly `e` digits after the
/// point: `(1000, 2)` → `"10.00"`, `(1000, 0)` → `"1000"`.
pub fn decimal(units: i64, e: u32) -> String {
    if e == 0 {
        return units.to_string();
    }
    let div = 10u64.pow(e);
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / div,
        abs % div,
        width = e as usize
    )
}

/// The inverse of [`decimal`], without floats: `("10.00", 2)` → `1000`; `"10"` and `"10.5"`
/// are read too. More digits than `e`, signs, exponents or anything else → `None`.
pub fn parse_decimal(s: &str, e: u32) -> Option<i64> {
    let e = e as usize;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > e || int.len() > 15 {
        return None;
    }
    if s.contains('.') && frac.is_empty() {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let frac_units: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<e$}").parse().ok()?
    };
    whole
        .checked_mul(10i64.pow(e as u32))?
        .checked_add(frac_units)
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A catalogue key: 1–64 characters of letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    pub fn parse(field: &str, s: &str) -> Result<Sku, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(Sku(s.to_owned()))
        } else {
            Err(Invalid::new(
                field,
                format!("{s:?} is not a SKU (1-64 of A-Z a-z 0-9 - _ .)"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A buyer's address. Deliberately modest: one `@`, a dotted domain, no spaces or control
/// characters, and something an SMTP server will accept as a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(field: &str, s: &str) -> Result<EmailAddress, Invalid> {
        let bad = || Invalid::new(field, format!("{s:?} is not an email address"));
        let s = s.trim();
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || domain.contains('@') || !domain.contains('.') {
            return Err(bad());
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(bad());
        }
        // The mailer's own rule (it parses the recipient as a mailbox): an address taken
        // here must be one a receipt can be sent to, as this very address — not one the
        // mailer refuses after payment (`a@[127.0.0.1]`) or reads as another (`"a"@x.com`).
        match s.parse::<lettre::message::Mailbox>() {
            Ok(m) if m.name.is_none() && m.email.to_string() == s => {}
            _ => return Err(bad()),
        }
        Ok(EmailAddress(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Our order ids: `ord_` + a ULID (sortable by creation time, unguessable enough to be
/// put in a success-page URL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn new() -> OrderId {
        OrderId(new_id("ord"))
    }

    pub fn parse(field: &str, s: &str) -> Result<OrderId, Invalid> {
        match s.strip_prefix("ord_") {
            Some(rest) if rest.len() == 26 && rest.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Ok(OrderId(s.to_owned()))
            }
            _ => Err(Invalid::new(
                field,
                format!("{s:?} is not an order id (ord_…)"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `prefix_` + a lower-case ULID.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// A new bearer secret: `prefix_` + 43 base64url characters (256 random bits). Only its
/// [`token_hash`] is stored.
pub fn new_secret(prefix: &str) -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A random token as stored: hex SHA-256 (the token has 256 random bits, so no salt or slow
/// hash is needed).
pub fn token_hash(token: &str) -> String {
    body_sha256(token.as_bytes())
}

/// Hex SHA-256 of a body.
pub fn body_sha256(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

/// A quantity in an order line: 1 to 10,000.
pub fn parse_qty(field: &str, q: i64) -> Result<i64, Invalid> {
    if (1..=10_000).contains(&q) {
        Ok(q)
    } else {
        Err(Invalid::new(
            field,
            format!("{q} is not a quantity between 1 and 10000"),
        ))
    }
}

/// A point in the past, as an admin writes it: an age ([`parse_duration_ms`]: `90s`, `30m`,
/// `24h`, `7d`) or Unix seconds. Returns Unix seconds; never in the future.
pub fn parse_since(field: &str, s: &str, now_s: i64) -> Result<i64, Invalid> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let t: i64 = s.parse().map_err(|_| Invalid::new(field, "too large"))?;
        return if (0..=now_s).contains(&t) {
            Ok(t)
        } else {
            Err(Invalid::new(field, "must not be in the future"))
        };
    }
    let age = parse_duration_ms(field, s).map_err(|_| {
        Invalid::new(
            field,
            format!("{s:?} is not an age like 30m, 24h or 7d, nor Unix seconds"),
        )
    })?;
    let age_s = i64::try_from(age / 1000).unwrap_or(i64::MAX);
    Ok(now_s.saturating_sub(age_s).max(0))
}

/// A length of time as people write it: a whole number and a unit, `ms`, `s`, `m`, `h` or
/// `d` (`250ms`, `5s`, `30m`, `2h`, `7d`). In milliseconds.
pub fn parse_duration_ms(field: &str, s: &str) -> Result<u64, Invalid> {
    let s = s.trim();
    let bad = || {
        Invalid::new(
            field,
            format!("{s:?} is not a duration like 250ms, 5s, 30m, 2h or 7d"),
        )
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    /// Every address taken at order time is one the mailer sends to, as this very address:
    /// every local part of up to three characters from an alphabet of the awkward ones,
    /// at several kinds of domain.
    #[test]
    fn every_address_taken_is_one_the_mailer_sends_to() {
        let alphabet: Vec<char> = "a.\"@[]<>(),:;\\ é+-_'".chars().collect();
        let domains = [
            "example.com",
            "[127.0.0.1]",
            "[IPv6:::1]",
            "1.2.3.4",
            "b\u{fc}cher.de",
        ];
        let mut locals = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = locals
                .iter()
                .flat_map(|l| alphabet.iter().map(move |c| format!("{l}{c}")))
                .collect();
            locals.extend(longer);
        }
        let mut taken = 0;
        for local in &locals {
            for domain in domains {
                let s = format!("{local}@{domain}");
                if let Ok(e) = super::EmailAddress::parse("e", &s) {
                    taken += 1;
                    let to: lettre::message::Mailbox =
                        e.as_str().parse().expect("the mailer reads it");
                    assert_eq!((to.name, to.email.to_string()), (None, s.trim().to_owned()));
                }
            }
        }
        assert!(taken > 1000, "the alphabet is not all refused: {taken}");
    }

    #[test]
    fn since_reads_ages_and_unix_seconds() {
        let now = 1_000_000;
        assert_eq!(parse_since("since", "90s", now), Ok(now - 90));
        assert_eq!(parse_since("since", "30m", now), Ok(now - 1_800));
        assert_eq!(parse_since("since", "24h", now), Ok(now - 86_400));
        assert_eq!(parse_since("since", "2d", now), Ok(now - 172_800));
        assert_eq!(parse_since("since", "999000", now), Ok(999_000));
        for bad in ["", "h", "-3h", "3w", "2000000", "1.5h"] {
            let e = parse_since("since", bad, now).expect_err(bad);
            assert_eq!(e.field, "since");
        }
    }

    #[test]
    fn durations_read_with_their_unit() {
        use super::parse_duration_ms as d;
        assert_eq!(d("f", "250ms"), Ok(250));
        assert_eq!(d("f", "5s"), Ok(5_000));
        assert_eq!(d("f", " 30m "), Ok(1_800_000));
        assert_eq!(d("f", "10h"), Ok(36_000_000));
        assert_eq!(d("f", "5d"), Ok(432_000_000));
        assert_eq!(d("f", "0s"), Ok(0));
        for bad in [
            "",
            "5",
            "s",
            "-5s",
            "1.5h",
            "5 s",
            "3w",
            "99999999999999999999d",
        ] {
            assert_eq!(d("f", bad).expect_err(bad).field, "f");
        }
    }

    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Currency::parse("c", "usd").map(|c| c.0), Ok("USD".into()));
        assert!(Currency::parse("c", "US").is_err());
        assert!(Currency::parse("c", "U$D").is_err());
        assert_eq!(
            Currency::parse("c", "usd").map(|c| c.format(1234)),
            Ok("12.34 USD".into())
        );
        assert_eq!(
            Currency::parse("c", "jpy").map(|c| c.format(1234)),
            Ok("1234 JPY".into())
        );
        assert_eq!(
            Currency::parse("c", "kwd").map(|c| c.format(5)),
            Ok("0.005 KWD".into())
        );
        let usd = Currency::parse("c", "USD").expect("usd");
        let jpy = Currency::parse("c", "JPY").expect("jpy");
        assert_eq!(usd.decimal(1000), "10.00");
        assert_eq!(usd.decimal(5), "0.05");
        assert_eq!(jpy.decimal(1000), "1000");
        assert_eq!(usd.parse_decimal("10.00"), Some(1000));
        assert_eq!(usd.parse_decimal("10.5"), Some(1050));
        assert_eq!(usd.parse_decimal("10"), Some(1000));
        assert_eq!(jpy.parse_decimal("1000"), Some(1000));
        for bad in [
            "",
            "10.",
            ".5",
            "10.001",
            "-1",
            "1e3",
            "1,00",
            " 1",
            "99999999999999999",
        ] {
            assert_eq!(usd.parse_decimal(bad), None, "{bad}");
        }
        assert_eq!(jpy.parse_decimal("10.5"), None);
        assert!(Sku::parse("s", "SEAT-1_a.b").is_ok());
        assert!(Sku::parse("s", "").is_err());
        assert!(Sku::parse("s", "a b").is_err());
        assert!(EmailAddress::parse("e", "buyer@example.com").is_ok());
        for bad in [
            "",
            "buyer",
            "buyer@",
            "@x.com",
            "a@b",
            "a b@c.com",
            "a@b..com",
            "a@@b.com",
        ] {
            assert!(EmailAddress::parse("e", bad).is_err(), "{bad}");
        }
        let id = OrderId::new();
        assert_eq!(OrderId::parse("id", id.as_str()), Ok(id));
        assert!(OrderId::parse("id", "ord_x").is_err());
        assert!(
            parse_qty("q", 0).is_err() && parse_qty("q", -1).is_err() && parse_qty("q", 3).is_ok()
        );
    }
}
