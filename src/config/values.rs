//! Typed values a setting is parsed into once, at load: a secret that never prints, a
//! duration written as `30s`, a schedule of them, a list of step kinds. A value that does
//! not parse stops start-up with its key named (the config crate puts the key in front of
//! the error); nothing parses it again later.

use serde::Deserialize;

/// A secret setting. `Debug` says only whether it is set, so a logged or printed
/// configuration never shows one; there is no `Display`, and the value is read with
/// [`Secret::expose`] where it is used.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Without surrounding whitespace (an admin token pasted with a newline still works).
    pub fn trimmed(&self) -> &str {
        self.0.trim()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl PartialEq<&str> for Secret {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// For `#[serde(deserialize_with)]`: a value written as text and read with its `FromStr`
/// (a mailbox, say), so that it is parsed here and nowhere else.
pub fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("{text:?} does not read ({e})")))
}

/// A duration as written in configuration (`500ms`, `30s`, `5m`, `24h`, `5d`), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Millis(u64);

impl Millis {
    pub fn ms(self) -> u64 {
        self.0
    }
}

impl TryFrom<String> for Millis {
    type Error = String;

    fn try_from(s: String) -> Result<Millis, String> {
        crate::domain::parse_duration_ms("duration", &s)
            .map(Millis)
            .map_err(|e| e.message)
    }
}

/// Durations separated by spaces (`5s 5m 30m 2h`), each in ms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Schedule(Vec<u64>);

impl Schedule {
    pub fn ms(&self) -> &[u64] {
        &self.0
    }
}

impl TryFrom<String> for Schedule {
    type Error = String;

    fn try_from(s: String) -> Result<Schedule, String> {
        s.split_whitespace()
            .map(|d| Millis::try_from(d.to_owned()).map(Millis::ms))
            .collect::<Result<Vec<_>, _>>()
            .map(Schedule)
    }
}

/// Step kinds, comma-separated (`confirm_capture, send_receipt`); empty: every kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StepKinds(Vec<jobs::StepKind>);

impl StepKinds {
    pub fn kinds(&self) -> &[jobs::StepKind] {
        &self.0
    }
}

impl TryFrom<String> for StepKinds {
    type Error = String;

    fn try_from(s: String) -> Result<StepKinds, String> {
        s.parse()
    }
}

impl std::str::FromStr for StepKinds {
    type Err = String;

    fn from_str(list: &str) -> Result<StepKinds, String> {
        if list.trim().is_empty() {
            return Ok(StepKinds(jobs::StepKind::ALL.to_vec()));
        }
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = jobs::StepKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = jobs::StepKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown step kind {name:?} (known: {})", known.join(", "))
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(StepKinds(kinds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_once_and_secrets_never_print() {
        assert_eq!(Millis::try_from("30s".to_owned()), Ok(Millis(30_000)));
        assert!(Millis::try_from("soon".to_owned()).is_err());
        let s = Schedule::try_from("5s 1m".to_owned()).expect("a schedule");
        assert_eq!(s.ms(), [5_000, 60_000]);
        assert!(Schedule::try_from("5s 1w".to_owned()).is_err());
        let k: StepKinds = " send_receipt, send_receipt ,deduct_stock"
            .parse()
            .expect("kinds");
        assert_eq!(
            k.kinds(),
            [jobs::StepKind::SendReceipt, jobs::StepKind::DeductStock]
        );
        assert_eq!(
            "".parse::<StepKinds>().expect("all").kinds().len(),
            jobs::StepKind::ALL.len()
        );
        assert!("send_reciept".parse::<StepKinds>().is_err());
        let secret = Secret::from("sk_live_hidden");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Secret::default()), "<empty>");
        assert_eq!(secret.expose(), "sk_live_hidden");
    }
}
