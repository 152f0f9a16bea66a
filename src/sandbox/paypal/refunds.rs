//! Captures' refunds (`POST /v2/payments/captures/{id}/refund`, `GET
//! /v2/payments/refunds/{id}`), how they start and end, and disputes.

use super::*;

/// `GET /v2/payments/refunds/{id}`.
pub(super) async fn get_refund(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().refunds.iter().find(|(_, r)| r.id == id) {
        Some((_, r)) => Json(r.clone()).into_response(),
        None => not_found(),
    }
}

pub(super) async fn refund(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let key = request_key(&headers, "refund");
    if let Some(r) = replay(&sb, &key) {
        return r;
    }
    let asked: Option<wire::Money> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["amount"].clone()).ok());
    if let Some(r) = asked.as_ref().and_then(money_refused) {
        return r;
    }
    let refunded_so_far = |st: &St| -> i64 {
        st.refunds
            .iter()
            .filter(|(cid, _)| *cid == id)
            .filter(|(_, r)| !matches!(r.status.as_str(), "FAILED" | "CANCELLED"))
            .filter_map(|(_, r)| r.amount.as_ref().and_then(wire::Money::minor))
            .sum()
    };
    let refund = {
        let mut st = sb.state();
        let before = refunded_so_far(&st);
        let outcome = with_capture(&mut st, &id, |c| {
            if !matches!(c.status.as_str(), "COMPLETED" | "PARTIALLY_REFUNDED") {
                return Err(unprocessable(
                    "CAPTURE_FULLY_REFUNDED",
                    "The capture has already been fully refunded or is not completed.",
                ));
            }
            let Ok(currency) = Currency::parse("c", &c.amount.currency_code) else {
                return Err(not_found());
            };
            let total = currency.parse_decimal(&c.amount.value).unwrap_or(0);
            let amount = match &asked {
                Some(m) => match currency.parse_decimal(&m.value) {
                    Some(v) if m.currency_code == c.amount.currency_code && v > 0 => v,
                    _ => {
                        return Err(unprocessable(
                            "DECIMAL_PRECISION",
                            "The refund amount must be a positive amount in the capture's currency.",
                        ));
                    }
                },
                None => total - before,
            };
            if amount > total - before {
                return Err(unprocessable(
                    "REFUND_AMOUNT_EXCEEDED",
                    "The refund amount must be less than or equal to the capture amount that has not yet been refunded.",
                ));
            }
            c.status = if before + amount == total {
                "REFUNDED"
            } else {
                "PARTIALLY_REFUNDED"
            }
            .into();
            Ok(wire::Money {
                currency_code: c.amount.currency_code.clone(),
                value: currency.decimal(amount),
            })
        });
        let amount = match outcome {
            None => return not_found(),
            Some(Err(r)) => return r,
            Some(Ok(m)) => m,
        };
        let r = wire::Refund {
            id: pp_id(),
            status: if st.refunds_pending {
                "PENDING"
            } else {
                "COMPLETED"
            }
            .into(),
            amount: Some(amount),
            custom_id: serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["custom_id"].as_str().map(str::to_owned)),
            create_time: Some(rfc3339_now()),
            links: vec![wire::Link {
                href: format!("{}/v2/payments/captures/{id}", sb.inner.base),
                rel: "up".into(),
                method: Some("GET".into()),
            }],
        };
        st.refunds.push((id.clone(), r.clone()));
        r
    };
    // PayPal announces every refund, whoever made it, once it is done.
    if refund.status == "COMPLETED" {
        announce_refund(&sb, &refund).await;
    }
    let body = serde_json::to_value(&refund).unwrap_or_default();
    remember(&sb, key, StatusCode::CREATED, body)
}

pub(super) async fn announce_refund(sb: &Sandbox, refund: &wire::Refund) -> Vec<Value> {
    let ev = event(
        "PAYMENT.CAPTURE.REFUNDED",
        "refund",
        "A payment capture was refunded",
        serde_json::to_value(refund).unwrap_or_default(),
    );
    sb.inner.courier.deliver(vec![ev], Copies::ONCE, 0).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RefundControl {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// `"none"`: a completed refund is not announced (its event is lost).
    #[serde(default)]
    webhook: Option<String>,
}

/// `POST /sandbox/paypal/captures/{id}/dispute`: the buyer opens a dispute on the capture,
/// announced as `CUSTOMER.DISPUTE.CREATED`
/// (<https://developer.paypal.com/api/rest/webhooks/event-names/#disputes>).
pub(super) async fn dispute(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(amount) = with_capture(&mut sb.state(), &id, |c| c.amount.clone()) else {
        return not_found();
    };
    let resource = json!({
        "dispute_id": format!("PP-D-{}", pp_id()), "create_time": rfc3339_now(),
        "update_time": rfc3339_now(),
        "disputed_transactions": [{"seller_transaction_id": id, "gross_amount": amount}],
        "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED", "status": "OPEN",
        "dispute_amount": amount, "dispute_life_cycle_stage": "INQUIRY", "dispute_channel": "INTERNAL",
    });
    let ev = event(
        "CUSTOMER.DISPUTE.CREATED",
        "dispute",
        "A new dispute opened",
        resource.clone(),
    );
    let deliveries = sb.inner.courier.deliver(vec![ev], Copies::ONCE, 0).await;
    Json(json!({ "dispute": resource, "deliveries": deliveries })).into_response()
}

/// `{"status": "pending"|"completed"}`: how refunds made from now on start.
pub(super) async fn refund_mode(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let pending = match d.status.as_deref() {
        Some("pending") => true,
        Some("completed") => false,
        _ => {
            return invalid_request(
                "INVALID_PARAMETER_VALUE",
                "status",
                "status must be \"pending\" or \"completed\"",
            );
        }
    };
    sb.state().refunds_pending = pending;
    Json(json!({ "refunds_start": d.status })).into_response()
}

/// `{"outcome": "completed"|"failed", "webhook"?: "none"}`: a `PENDING` refund ends; a
/// completed one is announced with `PAYMENT.CAPTURE.REFUNDED` (unless its event is lost),
/// and a failed one gives the capture its money back to refund again.
pub(super) async fn settle_refund(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d = match control_body::<RefundControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let status = match d.outcome.as_deref().unwrap_or("completed") {
        "completed" => "COMPLETED",
        "failed" => "FAILED",
        _ => {
            return invalid_request(
                "INVALID_PARAMETER_VALUE",
                "outcome",
                "outcome must be \"completed\" or \"failed\"",
            );
        }
    };
    let refund = {
        let mut st = sb.state();
        let Some((capture, r)) = st.refunds.iter_mut().find(|(_, r)| r.id == id) else {
            return not_found();
        };
        if r.status != "PENDING" {
            return unprocessable("REFUND_NOT_PENDING", "Only a pending refund settles.");
        }
        r.status = status.into();
        let (capture, refund) = (capture.clone(), r.clone());
        if status == "FAILED" {
            // The money stayed with the merchant: the capture is refundable again.
            let still = st
                .refunds
                .iter()
                .filter(|(c, r)| {
                    *c == capture && !matches!(r.status.as_str(), "FAILED" | "CANCELLED")
                })
                .count();
            with_capture(&mut st, &capture, |c| {
                c.status = if still == 0 {
                    "COMPLETED"
                } else {
                    "PARTIALLY_REFUNDED"
                }
                .into();
            });
        }
        refund
    };
    let deliveries = if status == "COMPLETED" && d.webhook.as_deref() != Some("none") {
        announce_refund(&sb, &refund).await
    } else {
        Vec::new()
    };
    Json(json!({ "refund": refund, "deliveries": deliveries })).into_response()
}

pub(super) async fn list_refunds(State(sb): State<Sandbox>) -> Json<Value> {
    let items: Vec<Value> = sb
        .state()
        .refunds
        .iter()
        .map(|(capture, r)| json!({ "capture_id": capture, "refund": r }))
        .collect();
    Json(json!({ "items": items }))
}
