//! Refunds (`POST /v1/payments/{id}/refund`, read back), how they start and end, and
//! disputes.

use super::*;

/// `GET /v1/payments/{payment}/refunds/{id}`.
pub(super) async fn get_refund(
    State(sb): State<Sandbox>,
    Path((payment, id)): Path<(String, String)>,
) -> Response {
    let st = sb.state();
    match st
        .refunds
        .iter()
        .find(|r| r.id == id && r.payment_id == payment)
    {
        Some(r) => Json(r.clone()).into_response(),
        None => no_such_id(),
    }
}

pub(super) async fn refund(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let key = headers
        .get("x-refund-idempotency")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // "The idempotency key must be at least 10 character long and can contain alphabets,
    // numbers, hyphens and underscores only" (razorpay.com/docs/api/refunds/normal-refunds-idempotent).
    if let Some(k) = &key
        && !crate::providers::razorpay::refund_key_ok(k)
    {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "The idempotency key must be at least 10 characters of letters, digits, hyphens and underscores",
            Some("X-Refund-Idempotency"),
        );
    }
    let parsed = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let amount = parsed["amount"].as_i64();
    let notes = if parsed["notes"].is_object() {
        parsed["notes"].clone()
    } else {
        json!([])
    };
    let (refund, payment) = {
        let mut st = sb.state();
        let pending = st.refunds_pending;
        if let Some(existing) = key.as_ref().and_then(|k| st.refund_keys.get(k)).cloned()
            && let Some(r) = st.refunds.iter().find(|r| r.id == existing)
        {
            return Json(r.clone()).into_response();
        }
        let Some(p) = st.payments.get_mut(&id) else {
            return no_such_id();
        };
        if p.status != "captured" {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "The payment has been fully refunded already or is not captured",
                None,
            );
        }
        let amount = amount.unwrap_or(p.amount - p.amount_refunded);
        if let Some(r) = amount_refused(&p.currency, amount) {
            return r;
        }
        if amount <= 0 || amount > p.amount - p.amount_refunded {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "The refund amount provided is greater than amount captured",
                Some("amount"),
            );
        }
        p.amount_refunded += amount;
        if p.amount_refunded == p.amount {
            p.status = "refunded".into();
        }
        let refund = wire::Refund {
            id: rand_id("rfnd_", 14),
            entity: "refund".into(),
            amount,
            currency: p.currency.clone(),
            payment_id: p.id.clone(),
            status: if pending { "pending" } else { "processed" }.into(),
            notes,
            created_at: now_s(),
        };
        let payment = p.clone();
        if let Some(k) = key {
            st.refund_keys.insert(k, refund.id.clone());
        }
        st.refunds.push(refund.clone());
        (refund, payment)
    };
    // Razorpay announces every refund, whoever made it: refund.created, then
    // refund.processed (or refund.failed) once the bank has it
    // (<https://razorpay.com/docs/webhooks/payloads/refunds/>).
    let kind = if refund.status == "pending" {
        "refund.created"
    } else {
        "refund.processed"
    };
    announce_refund(&sb, kind, &refund, &payment).await;
    Json(refund).into_response()
}

pub(super) async fn announce_refund(
    sb: &Sandbox,
    kind: &str,
    refund: &wire::Refund,
    payment: &wire::Payment,
) -> Vec<Value> {
    let (id, mut ev) = event(kind, Some(payment), None);
    ev.contains.insert(0, "refund".into());
    ev.payload.refund = Some(wire::Wrapped {
        entity: refund.clone(),
    });
    deliver(sb, &[(id, ev)], Copies::ONCE, 0).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefundControl {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// `"none"`: the change is not announced (a lost event).
    #[serde(default)]
    webhook: Option<String>,
}

/// `POST /sandbox/razorpay/payments/{id}/dispute`: the buyer's bank opens a dispute on a
/// captured payment, announced as `payment.dispute.created`
/// (<https://razorpay.com/docs/webhooks/payloads/disputes/>).
pub(super) async fn dispute(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(payment) = sb.state().payments.get(&id).cloned() else {
        return no_such_id();
    };
    let dispute = json!({
        "id": rand_id("disp_", 14), "entity": "dispute", "payment_id": payment.id,
        "amount": payment.amount, "currency": payment.currency, "amount_deducted": 0,
        "reason_code": "chargeback", "respond_by": now_s() + 7 * 86_400, "status": "open",
        "phase": "chargeback", "created_at": now_s(),
    });
    let (eid, mut ev) = event("payment.dispute.created", Some(&payment), None);
    ev.contains.push("dispute".into());
    ev.payload.dispute = Some(wire::Wrapped {
        entity: dispute.clone(),
    });
    let deliveries = deliver(&sb, &[(eid, ev)], Copies::ONCE, 0).await;
    Json(json!({ "dispute": dispute, "deliveries": deliveries })).into_response()
}

/// `{"status": "pending"|"processed"}`: how refunds made from now on start.
pub(super) async fn refund_mode(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pending = match d.status.as_deref() {
        Some("pending") => true,
        Some("processed") => false,
        _ => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "status must be \"pending\" or \"processed\"",
                Some("status"),
            );
        }
    };
    sb.state().refunds_pending = pending;
    Json(json!({ "refunds_start": d.status })).into_response()
}

/// `{"outcome": "processed"|"failed"}`: a pending refund ends, announced with
/// `refund.processed` or `refund.failed`; a failed one gives the payment its money back to
/// refund again.
pub(super) async fn settle_refund(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let outcome = d.outcome.unwrap_or_else(|| "processed".into());
    if !matches!(outcome.as_str(), "processed" | "failed") {
        return rz_error(
            StatusCode::BAD_REQUEST,
            "outcome must be \"processed\" or \"failed\"",
            Some("outcome"),
        );
    }
    let (refund, payment) = {
        let mut st = sb.state();
        let Some(r) = st.refunds.iter_mut().find(|r| r.id == id) else {
            return no_such_id();
        };
        if r.status != "pending" {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "Only a pending refund settles",
                None,
            );
        }
        r.status = outcome.clone();
        let refund = r.clone();
        let Some(p) = st.payments.get_mut(&refund.payment_id) else {
            return no_such_id();
        };
        if outcome == "failed" {
            p.amount_refunded -= refund.amount;
            if p.status == "refunded" {
                p.status = "captured".into();
            }
        }
        (refund, p.clone())
    };
    let deliveries = if d.webhook.as_deref() == Some("none") {
        Vec::new()
    } else {
        announce_refund(&sb, &format!("refund.{outcome}"), &refund, &payment).await
    };
    Json(json!({ "refund": refund, "deliveries": deliveries })).into_response()
}

pub(super) async fn list_refunds(State(sb): State<Sandbox>) -> Json<Value> {
    Json(json!({ "entity": "collection", "items": sb.state().refunds }))
}
