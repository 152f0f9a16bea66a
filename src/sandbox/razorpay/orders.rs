//! Orders and payments: create an order, read it and its payments, list payments,
//! capture one.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct CreateOrder {
    amount: Option<i64>,
    currency: Option<String>,
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    notes: Value,
}

/// Razorpay's refusal of a three-decimal amount whose last digit is not 0: "you should pass
/// the last decimal number as 0 for three decimal currency payments"
/// (<https://razorpay.com/docs/api/orders/entity>, `amount`; KWD, BHD and OMR are its
/// examples, JOD and the other ISO three-decimal currencies count the same way).
pub(super) fn amount_refused(currency: &str, amount: i64) -> Option<Response> {
    let three = matches!(
        currency.to_ascii_uppercase().as_str(),
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND"
    );
    (three && amount % 10 != 0).then(|| {
        rz_error(
            StatusCode::BAD_REQUEST,
            "The last digit of an amount in a three decimal currency must be 0",
            Some("amount"),
        )
    })
}

pub(super) async fn create_order(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let b: CreateOrder = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                &format!("The request body is not valid JSON: {e}"),
                None,
            );
        }
    };
    let Some(amount) = b.amount.filter(|a| *a >= 100) else {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The amount must be atleast INR 1.00",
            Some("amount"),
        );
    };
    let Some(currency) = b.currency.filter(|c| c.len() == 3) else {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The currency field is required.",
            Some("currency"),
        );
    };
    if let Some(r) = amount_refused(&currency, amount) {
        return r;
    }
    if b.receipt.as_ref().is_some_and(|r| r.len() > 40) {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The receipt may not be greater than 40 characters.",
            Some("receipt"),
        );
    }
    let order = wire::Order {
        id: rand_id("order_", 14),
        entity: "order".into(),
        amount,
        amount_paid: 0,
        amount_due: amount,
        currency,
        receipt: b.receipt,
        status: "created".into(),
        attempts: 0,
        notes: if b.notes.is_object() {
            b.notes
        } else {
            json!([])
        },
        created_at: now_s(),
    };
    sb.state().orders.insert(order.id.clone(), order.clone());
    Json(order).into_response()
}

pub(super) async fn get_order(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().orders.get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => no_such_id(),
    }
}

pub(super) async fn order_payments(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let mut st = sb.state();
    if !st.orders.contains_key(&id) {
        return no_such_id();
    }
    let mut items: Vec<wire::Payment> = st
        .payments
        .values()
        .filter(|p| p.order_id.as_deref() == Some(id.as_str()))
        .cloned()
        .collect();
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    for p in &items {
        captured_after_read(&mut st, &p.id);
    }
    Json(wire::Collection {
        entity: "collection".into(),
        count: items.len(),
        items,
    })
    .into_response()
}

/// `GET /v1/payments`: newest first; `from`, `to` (Unix seconds), `count` (≤ 100, default
/// 10) and `skip`.
pub(super) async fn list_payments(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let num = |k: &str, default: i64| -> Result<i64, Response> {
        match q.iter().find(|(key, _)| key == k) {
            None => Ok(default),
            Some((_, v)) => v.parse::<i64>().map_err(|_| {
                rz_error(
                    StatusCode::BAD_REQUEST,
                    &format!("The {k} must be an integer."),
                    Some(k),
                )
            }),
        }
    };
    let (from, to, count, skip) = match (
        num("from", 0),
        num("to", i64::MAX),
        num("count", 10),
        num("skip", 0),
    ) {
        (Ok(f), Ok(t), Ok(c), Ok(s)) => (f, t, c, s),
        (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return r,
    };
    if !(1..=100).contains(&count) || skip < 0 {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The count may not be greater than 100.",
            Some("count"),
        );
    }
    let mut items: Vec<wire::Payment> = sb
        .state()
        .payments
        .values()
        .filter(|p| p.created_at >= from && p.created_at <= to)
        .cloned()
        .collect();
    items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let items: Vec<_> = items
        .into_iter()
        .skip(skip as usize)
        .take(count as usize)
        .collect();
    Json(wire::Collection {
        entity: "collection".into(),
        count: items.len(),
        items,
    })
    .into_response()
}

pub(super) async fn get_payment(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let mut st = sb.state();
    let Some(p) = st.payments.get(&id).cloned() else {
        return no_such_id();
    };
    captured_after_read(&mut st, &id);
    Json(p).into_response()
}

/// After a read of a payment marked `capture_after_read`, Razorpay's automatic capture
/// takes it: a capture call then answers "This payment has already been captured".
pub(super) fn captured_after_read(st: &mut St, payment_id: &str) {
    if !st.capture_after_read.remove(payment_id) {
        return;
    }
    let Some(p) = st.payments.get_mut(payment_id) else {
        return;
    };
    p.status = "captured".into();
    p.captured = true;
    let (amount, order_id) = (p.amount, p.order_id.clone());
    if let Some(o) = order_id.and_then(|oid| st.orders.get_mut(&oid)) {
        o.status = "paid".into();
        o.amount_paid = amount;
        o.amount_due = 0;
    }
}

pub(super) async fn capture(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let amount = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["amount"].as_i64());
    let (payment, order) = {
        let mut st = sb.state();
        let Some(p) = st.payments.get_mut(&id) else {
            return no_such_id();
        };
        if p.status != "authorized" {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "This payment has already been captured",
                None,
            );
        }
        if amount != Some(p.amount) {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "Capture amount must be equal to the amount authorized",
                Some("amount"),
            );
        }
        p.status = "captured".into();
        p.captured = true;
        let p = p.clone();
        let order = p.order_id.clone().and_then(|oid| {
            let o = st.orders.get_mut(&oid)?;
            o.status = "paid".into();
            o.amount_paid = p.amount;
            o.amount_due = 0;
            Some(o.clone())
        });
        (p, order)
    };
    // A capture made through the API is announced like any other.
    let mut events = vec![event("payment.captured", Some(&payment), None)];
    if let Some(o) = &order {
        events.push(event("order.paid", Some(&payment), Some(o)));
    }
    deliver(&sb, &events, Copies::ONCE, 0).await;
    Json(payment).into_response()
}
