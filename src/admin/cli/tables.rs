//! The text `fulfilld admin …` prints: tables of the API's rows, and an order's record.

use serde_json::Value;

/// A reconciliation report as text: a summary line, one line per provider, one per finding.
pub fn reconcile_table(r: &Value) -> String {
    let mut out = format!(
        "reconciliation #{} ({}), payments since {}: {} repaired, {} need review, {} backfilled\n\n",
        r["id"],
        r["trigger"].as_str().unwrap_or(""),
        r["since_s"],
        r["repaired"],
        r["needs_review"],
        r["backfilled"]
    );
    out.push_str(&format!(
        "{:<10} {:>7} {:>12}  {}\n",
        "PROVIDER", "LISTED", "EVENTS READ", "ERROR"
    ));
    for p in r["providers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<10} {:>7} {:>12}  {}\n",
            p["provider"].as_str().unwrap_or(""),
            p["listed"],
            p["missed_events"],
            p["error"].as_str().unwrap_or("")
        ));
    }
    let findings = r["findings"].as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        out.push_str("\nnothing to report: the store agrees with every provider\n");
        return out;
    }
    out.push_str(&format!(
        "\n{:<13} {:<10} {:<28} {}\n",
        "ACTION", "PROVIDER", "ORDER", "DETAIL"
    ));
    for f in findings {
        out.push_str(&format!(
            "{:<13} {:<10} {:<28} {}\n",
            f["action"].as_str().unwrap_or(""),
            f["provider"].as_str().unwrap_or(""),
            f["order_id"].as_str().unwrap_or("-"),
            f["detail"].as_str().unwrap_or("")
        ));
    }
    out
}

/// `rows` as a text table: one column per `(heading, field)`, each as wide as its widest
/// cell; a missing or null field prints `-`, a time field (`*_at`, milliseconds) as UTC.
pub fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    if rows.is_empty() {
        return "nothing to show\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, f)| cell(f, &r[*f])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut l = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(columns.iter().map(|(h, _)| *h).collect());
    for c in &cells {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
    }
    out
}

fn cell(field: &str, v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.replace(['\n', '\r'], " "),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Value::Number(n) if field.ends_with("_at") => {
            n.as_i64().and_then(utc).unwrap_or_else(|| n.to_string())
        }
        other => other.to_string(),
    }
}

/// Milliseconds since the epoch as `2026-12-01 22:05:03`.
fn utc(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).ok()
}

/// The queue overview as a table.
pub fn queues_table(answer: &Value) -> String {
    table(
        answer["queues"].as_array().map_or(&[], Vec::as_slice),
        &[
            ("KIND", "kind"),
            ("WAITING", "waiting"),
            ("PENDING", "pending"),
            ("RETRYING", "retrying"),
            ("RUNNING", "running"),
            ("DEAD", "dead"),
            ("DONE 1H", "done_last_hour"),
            ("OLDEST DUE S", "oldest_due_age_s"),
        ],
    )
}

pub const STEP_COLUMNS: [(&str, &str); 7] = [
    ("ID", "id"),
    ("ORDER", "order_id"),
    ("KIND", "kind"),
    ("STATUS", "status"),
    ("ATTEMPTS", "attempts"),
    ("UPDATED", "updated_at"),
    ("OUTCOME", "outcome"),
];

pub const AUDIT_COLUMNS: [(&str, &str); 7] = [
    ("ID", "id"),
    ("AT", "at"),
    ("ACTOR", "actor"),
    ("SAID BY", "said_by"),
    ("ACTION", "action"),
    ("TARGET", "target"),
    ("REASON", "reason"),
];

pub const DEAD_COLUMNS: [(&str, &str); 6] = [
    ("ID", "id"),
    ("ORDER", "order_id"),
    ("KIND", "kind"),
    ("ATTEMPTS", "attempts"),
    ("DEAD SINCE", "dead_at"),
    ("LAST ERROR", "last_error"),
];

pub const ORDER_COLUMNS: [(&str, &str); 6] = [
    ("ID", "id"),
    ("STATUS", "status"),
    ("TOTAL", "total_minor"),
    ("CURRENCY", "currency"),
    ("EMAIL", "customer_email"),
    ("CREATED", "created_at"),
];

pub const ENDPOINT_COLUMNS: [(&str, &str); 5] = [
    ("ID", "id"),
    ("ENABLED", "enabled"),
    ("EVENTS", "event_types"),
    ("URL", "url"),
    ("DISABLED BECAUSE", "disabled_reason"),
];

pub const DELIVERY_COLUMNS: [(&str, &str); 8] = [
    ("ID", "id"),
    ("EVENT", "event_type"),
    ("ENDPOINT", "endpoint_id"),
    ("ORDER", "order_id"),
    ("STATUS", "status"),
    ("ATTEMPTS", "attempts"),
    ("UPDATED", "updated_at"),
    ("LAST ERROR", "last_error"),
];

pub const EVENT_COLUMNS: [(&str, &str); 6] = [
    ("ID", "id"),
    ("PROVIDER", "provider"),
    ("TYPE", "event_type"),
    ("EVENT", "event_id"),
    ("RECEIVED", "received_at"),
    ("OUTCOME", "outcome"),
];

/// An order's record: a summary, its steps, then its timeline.
pub fn order_text(r: &Value) -> String {
    let o = &r["order"];
    let mut out = format!(
        "order {}  {}  {} {}  {}\n",
        o["id"].as_str().unwrap_or(""),
        o["status"].as_str().unwrap_or(""),
        o["total_minor"],
        o["currency"].as_str().unwrap_or(""),
        o["customer_email"].as_str().unwrap_or("")
    );
    if let Some(from) = r["review_from"].as_str() {
        out.push_str(&format!("needs review (was {from})\n"));
    }
    out.push('\n');
    out.push_str(&table(
        r["steps"].as_array().map_or(&[], Vec::as_slice),
        &STEP_COLUMNS,
    ));
    out.push('\n');
    out.push_str(&table(
        r["timeline"].as_array().map_or(&[], Vec::as_slice),
        &[("AT", "at"), ("WHAT", "what"), ("DETAIL", "detail")],
    ));
    out
}
