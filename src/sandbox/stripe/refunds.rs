//! Refunds (`POST /v1/refunds`, `GET /v1/refunds/{id}`), how they start and end, and
//! disputes.

use super::*;

/// `GET /v1/refunds/{id}`.
pub(super) async fn get_refund(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().refunds.iter().find(|r| r.id == id) {
        Some(r) => Json(r.clone()).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("No such refund: '{id}'"),
            Some("id"),
        ),
    }
}

pub(super) async fn create_refund(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fingerprint = format!("POST /v1/refunds {}", String::from_utf8_lossy(&body));
    if let Some(r) = idempotent_replay(&sb, &headers, &fingerprint) {
        return r;
    }
    let f = form(&body);
    let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let Some(pi) = get("payment_intent") else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "One of the following params should be provided for this request: payment_intent or charge.",
            None,
        );
    };
    let refund = {
        let mut st = sb.state();
        let Some(session) = st
            .sessions
            .values()
            .find(|s| s.payment_intent.as_deref() == Some(pi.as_str()))
            .cloned()
        else {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("No such payment_intent: '{pi}'"),
                Some("payment_intent"),
            );
        };
        let total = session.amount_total.unwrap_or(0);
        let refunded: i64 = st
            .refunds
            .iter()
            .filter(|r| r.payment_intent.as_deref() == Some(pi.as_str()))
            .filter(|r| !matches!(r.status.as_deref(), Some("failed" | "canceled")))
            .map(|r| r.amount)
            .sum();
        if refunded >= total {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Charge for payment_intent {pi} has already been refunded."),
                None,
            );
        }
        let amount = match get("amount") {
            None => total - refunded,
            Some(a) => match a.parse::<i64>() {
                Ok(a) if a > 0 && a <= total - refunded => {
                    let cur = session.currency.clone().unwrap_or_default();
                    if let Some(r) = amount_refused(&cur, a, "amount") {
                        return r;
                    }
                    a
                }
                Ok(a) if a > 0 => {
                    return stripe_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        &format!(
                            "Refund amount ({a}) is greater than unrefunded amount on charge ({})",
                            total - refunded
                        ),
                        Some("amount"),
                    );
                }
                _ => {
                    return stripe_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "Invalid positive integer",
                        Some("amount"),
                    );
                }
            },
        };
        let metadata = f
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((key.to_owned(), v.clone()))
            })
            .collect();
        let refund = wire::Refund {
            id: rand_id("re_", 24),
            object: "refund".into(),
            amount,
            created: now_s(),
            currency: session.currency.clone().unwrap_or_default(),
            metadata,
            payment_intent: Some(pi),
            reason: get("reason"),
            status: Some(
                if st.refunds_pending {
                    "pending"
                } else {
                    "succeeded"
                }
                .into(),
            ),
        };
        st.refunds.push(refund.clone());
        refund
    };
    let value = serde_json::to_value(&refund).unwrap_or(Value::Null);
    remember(&sb, &headers, &fingerprint, &value);
    // Stripe announces every refund, whoever made it.
    deliver(
        &sb,
        &event_about("refund.created", value.clone()),
        Copies::ONCE,
        0,
    )
    .await;
    Json(value).into_response()
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DisputeControl {
    #[serde(default)]
    payment_intent: Option<String>,
}

/// `POST /sandbox/stripe/disputes` `{"payment_intent"}`: the cardholder disputes the
/// payment, announced as `charge.dispute.created`
/// (<https://docs.stripe.com/api/events/types#event_types-charge.dispute.created>).
pub(super) async fn dispute(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<DisputeControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pi = d.payment_intent.unwrap_or_default();
    let Some(session) = sb
        .state()
        .sessions
        .values()
        .find(|s| s.payment_intent.as_deref() == Some(pi.as_str()))
        .cloned()
    else {
        return stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("No such payment_intent: '{pi}'"),
            Some("payment_intent"),
        );
    };
    let dispute = json!({
        "id": rand_id("dp_", 24), "object": "dispute", "amount": session.amount_total,
        "currency": session.currency, "charge": rand_id("ch_", 24), "payment_intent": pi,
        "reason": "fraudulent", "status": "needs_response", "created": now_s(),
        "livemode": false, "metadata": {}, "is_charge_refundable": true,
    });
    let deliveries = deliver(
        &sb,
        &event_about("charge.dispute.created", dispute.clone()),
        Copies::ONCE,
        0,
    )
    .await;
    Json(json!({ "dispute": dispute, "deliveries": deliveries })).into_response()
}

/// `{"status": "pending"|"succeeded"}`: how refunds made from now on start.
pub(super) async fn refund_mode(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pending = match d.status.as_deref() {
        Some("pending") => true,
        Some("succeeded") => false,
        _ => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "status must be \"pending\" or \"succeeded\"",
                Some("status"),
            );
        }
    };
    sb.state().refunds_pending = pending;
    Json(json!({ "refunds_start": d.status })).into_response()
}

/// `{"outcome": "succeeded"|"failed"|"canceled"}`: a pending refund ends. Stripe announces
/// the change as `refund.updated`, and a failure also as `refund.failed`
/// (<https://docs.stripe.com/api/events/types#event_types-refund.updated>).
pub(super) async fn settle_refund(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let outcome = d.outcome.unwrap_or_else(|| "succeeded".into());
    if !matches!(outcome.as_str(), "succeeded" | "failed" | "canceled") {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "outcome must be \"succeeded\", \"failed\" or \"canceled\"",
            Some("outcome"),
        );
    }
    let refund = {
        let mut st = sb.state();
        let Some(r) = st.refunds.iter_mut().find(|r| r.id == id) else {
            return stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                &format!("No such refund: '{id}'"),
                Some("id"),
            );
        };
        if r.status.as_deref() != Some("pending") {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Only a pending refund settles.",
                None,
            );
        }
        r.status = Some(outcome.clone());
        r.clone()
    };
    let value = serde_json::to_value(&refund).unwrap_or(Value::Null);
    if d.webhook.as_deref() == Some("none") {
        return Json(json!({ "refund": value, "deliveries": [] })).into_response();
    }
    let mut deliveries = deliver(
        &sb,
        &event_about("refund.updated", value.clone()),
        Copies::ONCE,
        0,
    )
    .await;
    if outcome == "failed" {
        deliveries.extend(
            deliver(
                &sb,
                &event_about("refund.failed", value.clone()),
                Copies::ONCE,
                0,
            )
            .await,
        );
    }
    Json(json!({ "refund": value, "deliveries": deliveries })).into_response()
}

pub(super) async fn list_refunds(State(sb): State<Sandbox>) -> Json<Value> {
    let st = sb.state();
    Json(json!({ "object": "list", "data": st.refunds }))
}
