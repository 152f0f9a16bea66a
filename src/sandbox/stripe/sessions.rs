//! Checkout Sessions: create (form-encoded, as Stripe takes them), get, list, expire;
//! and the buyer's part: the hosted page, paying, a delayed method settling, an amended
//! amount.

use super::*;

pub(super) fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Stripe's refusal of an amount of `currency` that its rules do not allow
/// (<https://docs.stripe.com/currencies>): ISK amounts are written with two decimals that
/// must be 00 (#special-cases, and the message of Stripe's ISK notice), and
/// the three-decimal currencies BHD, JOD, KWD, OMR and TND need a last digit of 0
/// (#three-decimal).
pub(super) fn amount_refused(currency: &str, amount: i64, param: &str) -> Option<Response> {
    let message = match currency {
        "isk" if amount % 100 != 0 => {
            "Invalid amount. Currency ISK has become effectively zero-decimal and charged amounts must be evenly divisible by 100."
        }
        "bhd" | "jod" | "kwd" | "omr" | "tnd" if amount % 10 != 0 => {
            "Invalid amount. Amounts in three-decimal currencies must be rounded to the nearest ten (the last digit must be 0)."
        }
        _ => return None,
    };
    Some(stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        Some(param),
    ))
}

pub(super) async fn create_session(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fingerprint = format!(
        "POST /v1/checkout/sessions {}",
        String::from_utf8_lossy(&body)
    );
    if let Some(r) = idempotent_replay(&sb, &headers, &fingerprint) {
        return r;
    }
    let f = form(&body);
    let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let mode = get("mode").unwrap_or_default();
    if mode != "payment" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "The sandbox supports mode=payment only.",
            Some("mode"),
        );
    }
    let mut total: i64 = 0;
    let mut currency: Option<String> = None;
    let mut i = 0;
    while let Some(qty) = get(&format!("line_items[{i}][quantity]")) {
        let p = format!("line_items[{i}][price_data]");
        let (Ok(qty), Some(cur), Some(Ok(unit))) = (
            qty.parse::<i64>(),
            get(&format!("{p}[currency]")),
            get(&format!("{p}[unit_amount]")).map(|u| u.parse::<i64>()),
        ) else {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!(
                    "Invalid line_items[{i}]: quantity, price_data[currency] and price_data[unit_amount] are required integers."
                ),
                Some(&format!("line_items[{i}]")),
            );
        };
        if currency.as_ref().is_some_and(|c| *c != cur) {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "All line items must use the same currency.",
                Some("line_items"),
            );
        }
        if let Some(r) = amount_refused(&cur, unit, &format!("{p}[unit_amount]")) {
            return r;
        }
        currency = Some(cur);
        total += qty * unit;
        i += 1;
    }
    let Some(currency) = currency else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Missing required param: line_items.",
            Some("line_items"),
        );
    };
    let id = rand_id("cs_test_", 58);
    let metadata = f
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|r| r.strip_suffix(']'))
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect();
    let now = now_s();
    // Stripe: "It can be anywhere from 30 minutes to 24 hours after Checkout Session
    // creation. By default, this value is 24 hours from creation." (API reference,
    // Create a Checkout Session, `expires_at`.)
    let expires_at = match get("expires_at").map(|v| v.parse::<i64>()) {
        None => now + 86_400,
        Some(Ok(t)) if (now + 1800..=now + 86_400).contains(&t) => t,
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
                Some("expires_at"),
            );
        }
    };
    let session = wire::CheckoutSession {
        id: id.clone(),
        object: "checkout.session".into(),
        amount_subtotal: Some(total),
        amount_total: Some(total),
        cancel_url: get("cancel_url"),
        client_reference_id: get("client_reference_id"),
        created: now,
        currency: Some(currency),
        customer_email: get("customer_email"),
        expires_at,
        livemode: false,
        metadata,
        mode,
        payment_intent: None,
        payment_status: "unpaid".into(),
        status: Some("open".into()),
        success_url: get("success_url"),
        url: Some(format!("{}/c/pay/{id}", sb.inner.base)),
    };
    let value = serde_json::to_value(&session).unwrap_or(Value::Null);
    sb.state().sessions.insert(id, session);
    remember(&sb, &headers, &fingerprint, &value);
    Json(value).into_response()
}

/// Changes session `id` if `allowed` holds for it; otherwise Stripe's 400 with `refusal`'s
/// message. Returns the changed session.
pub(super) fn update_session(
    sb: &Sandbox,
    id: &str,
    allowed: impl FnOnce(&wire::CheckoutSession) -> bool,
    refusal: impl FnOnce(&wire::CheckoutSession) -> String,
    change: impl FnOnce(&mut wire::CheckoutSession),
) -> Result<wire::CheckoutSession, Response> {
    let mut st = sb.state();
    let Some(s) = st.sessions.get_mut(id) else {
        return Err(no_such_session(id));
    };
    if !allowed(s) {
        let msg = refusal(s);
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &msg,
            None,
        ));
    }
    change(s);
    Ok(s.clone())
}

pub(super) fn no_such_session(id: &str) -> Response {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("No such checkout.session: '{id}'"),
        Some("session"),
    )
}

pub(super) async fn get_session(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().sessions.get(&id) {
        Some(s) => Json(s.clone()).into_response(),
        None => no_such_session(&id),
    }
}

pub(super) async fn expire_session(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let session = match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("open"),
        |s| {
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                s.status.as_deref().unwrap_or("")
            )
        },
        |s| s.status = Some("expired".into()),
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Stripe answers with the session itself. The event is delivered before answering, so
    // a caller sees the engine's reaction as soon as this returns.
    let ev = event("checkout.session.expired", &session);
    let deliveries = deliver(&sb, &ev, Copies::ONCE, 0).await;
    tracing::info!(session = %session.id, ?deliveries, "sandbox expired a session");
    Json(session).into_response()
}

/// `GET /v1/checkout/sessions`: newest first; `created[gte]`, `limit` (1-100, default 10)
/// and `starting_after` as Stripe reads them.
pub(super) async fn list_sessions(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let all: Vec<wire::CheckoutSession> = sb.state().sessions.values().cloned().collect();
    page(
        all,
        query,
        "/v1/checkout/sessions",
        "checkout.session",
        |s| (s.created, s.id.as_str()),
    )
}

pub(super) async fn pay(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d = match control_body::<Delivery>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match d.copies() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let status = d.payment_status.clone().unwrap_or_else(|| "paid".into());
    if status != "paid" && status != "unpaid" {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "payment_status must be \"paid\" or \"unpaid\"",
            Some("payment_status"),
        );
    }
    let session = match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("open"),
        |s| {
            format!(
                "This Checkout Session is {} and can no longer be paid.",
                s.status.as_deref().unwrap_or("")
            )
        },
        |s| {
            s.status = Some("complete".into());
            s.payment_status = status;
            s.payment_intent = Some(rand_id("pi_", 24));
            if let Some(a) = d.amount_total {
                s.amount_total = Some(a);
            }
        },
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ev = event("checkout.session.completed", &session);
    let deliveries = deliver(&sb, &ev, copies, d.delay_ms.unwrap_or(0)).await;
    Json(json!({ "session": session, "event": ev, "deliveries": deliveries })).into_response()
}

pub(super) async fn settle(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d = match control_body::<Delivery>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match d.copies() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let succeeded = match d.outcome.as_deref().unwrap_or("succeeded") {
        "succeeded" => true,
        "failed" => false,
        _ => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "outcome must be \"succeeded\" or \"failed\"",
                Some("outcome"),
            );
        }
    };
    let session = match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("complete") && s.payment_status == "unpaid",
        |_| "Only a completed, unpaid (delayed) payment can be settled.".into(),
        |s| {
            if succeeded {
                s.payment_status = "paid".into();
            }
        },
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let kind = if succeeded {
        "checkout.session.async_payment_succeeded"
    } else {
        "checkout.session.async_payment_failed"
    };
    let ev = event(kind, &session);
    let deliveries = deliver(&sb, &ev, copies, d.delay_ms.unwrap_or(0)).await;
    Json(json!({ "session": session, "event": ev, "deliveries": deliveries })).into_response()
}

/// Corrects what a completed session reports as captured (the provider's record fixed after
/// a mismatch, e.g. the rest of the amount collected). No event is sent.
pub(super) async fn amend(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d = match control_body::<Delivery>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(amount) = d.amount_total.filter(|a| *a >= 0) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "amount_total (a non-negative integer) is required",
            Some("amount_total"),
        );
    };
    match update_session(
        &sb,
        &id,
        |s| s.status.as_deref() == Some("complete"),
        |_| "Only a completed session can be amended.".into(),
        |s| s.amount_total = Some(amount),
    ) {
        Ok(session) => Json(json!({ "session": session })).into_response(),
        Err(r) => r,
    }
}

pub(super) async fn checkout_page(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let Some(s) = sb.state().sessions.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>".to_owned()),
        )
            .into_response();
    };
    let amount = s.amount_total.unwrap_or(0);
    let cur = s.currency.clone().unwrap_or_default().to_uppercase();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox checkout</title></head><body>\
         <h1>fulfilld sandbox — Stripe Checkout</h1><p>Session {id}: {amount} minor units of {cur}, status {st}.</p>\
         <button onclick=\"fetch('/sandbox/stripe/checkout/sessions/{id}/pay',{{method:'POST'}}).then(r=>r.json()).then(j=>{{document.body.insertAdjacentHTML('beforeend','<pre>'+JSON.stringify(j.deliveries)+'</pre>');if('{ok}')location.href='{ok}'}})\">Pay</button>\
         </body></html>",
        st = s.status.unwrap_or_default(),
        // Stripe fills in the session's id where the URL names it
        // (https://docs.stripe.com/payments/checkout/custom-success-page).
        ok = s
            .success_url
            .unwrap_or_default()
            .replace("{CHECKOUT_SESSION_ID}", &id)
            .replace('\'', "%27"),
    ))
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Delivery {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// Pay: the amount the session reports as captured, when it should differ from the
    /// amount it was created with (a tampered or mismatched checkout).
    #[serde(default)]
    amount_total: Option<i64>,
}

impl Delivery {
    fn copies(&self) -> Result<Copies, Response> {
        copies(self.webhook.as_deref())
    }
}
