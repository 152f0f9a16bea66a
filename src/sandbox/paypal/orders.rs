//! Orders v2: the OAuth token, create, get, capture; and the buyer's part (approve,
//! the approval page, void) and a pending capture's settling.

use super::*;

pub(super) async fn token(State(sb): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let creds = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(basic_credentials);
    let expected = format!("{}:{}", sb.inner.client_id, sb.inner.client_secret);
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        let body = wire::OAuthError {
            error: error.into(),
            error_description: description.into(),
        };
        (status, Json(body)).into_response()
    };
    if creds.as_deref() != Some(expected.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client Authentication failed",
        );
    }
    let grant = form_urlencoded::parse(&body).find(|(k, _)| k == "grant_type");
    if grant.as_ref().map(|(_, v)| v.as_ref()) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Grant Type is NULL",
        );
    }
    let t = wire::Token {
        scope: "https://uri.paypal.com/services/payments/payment https://uri.paypal.com/services/payments/refund".into(),
        access_token: rand_id("A21AA", 90),
        token_type: "Bearer".into(),
        app_id: "APP-80W284485P519543T".into(),
        expires_in: 32_400,
        nonce: format!("{}{}", rfc3339_now(), rand_id("", 43)),
    };
    sb.state().tokens.push(t.access_token.clone());
    Json(t).into_response()
}

pub(super) fn order_links(base: &str, o: &wire::Order) -> Vec<wire::Link> {
    let link = |href: String, rel: &str, method: &str| wire::Link {
        href,
        rel: rel.into(),
        method: Some(method.into()),
    };
    let me = format!("{base}/v2/checkout/orders/{}", o.id);
    let mut links = vec![link(me.clone(), "self", "GET")];
    match o.status.as_str() {
        "CREATED" | "PAYER_ACTION_REQUIRED" => {
            let rel = if o.status == "CREATED" {
                "approve"
            } else {
                "payer-action"
            };
            links.push(link(
                format!("{base}/sandbox/paypal/checkoutnow?token={}", o.id),
                rel,
                "GET",
            ));
        }
        "APPROVED" => links.push(link(format!("{me}/capture"), "capture", "POST")),
        _ => {}
    }
    links
}

/// PayPal's refusal of an amount in a currency it does not take, or with more decimals than
/// the currency has at PayPal (<https://developer.paypal.com/api/rest/reference/currency-codes/>:
/// HUF, JPY and TWD "do not support decimals"; the others take two), with the Orders API's
/// documented issues `CURRENCY_NOT_SUPPORTED` and `DECIMAL_PRECISION`.
pub(super) fn money_refused(m: &wire::Money) -> Option<Response> {
    const TAKEN: [&str; 25] = [
        "AUD", "BRL", "CAD", "CNY", "CZK", "DKK", "EUR", "HKD", "HUF", "ILS", "INR", "JPY", "MYR",
        "MXN", "TWD", "NZD", "NOK", "PHP", "PLN", "GBP", "SGD", "SEK", "CHF", "THB", "USD",
    ];
    if !TAKEN.contains(&m.currency_code.as_str()) {
        return Some(unprocessable(
            "CURRENCY_NOT_SUPPORTED",
            "Currency code is not currently supported.",
        ));
    }
    let decimals = m.value.split_once('.').map_or(0, |(_, f)| f.len());
    let allowed = if matches!(m.currency_code.as_str(), "HUF" | "JPY" | "TWD") {
        0
    } else {
        2
    };
    (decimals > allowed).then(|| {
        unprocessable(
            "DECIMAL_PRECISION",
            "If the currency supports decimals, only two decimal place precision is supported.",
        )
    })
}

pub(super) async fn create_order(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = request_key(&headers, "orders");
    if let Some(r) = replay(&sb, &key) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return invalid_request(
            "MALFORMED_REQUEST_JSON",
            "",
            "The request JSON is not well formed.",
        );
    };
    if !matches!(b["intent"].as_str(), Some("CAPTURE" | "AUTHORIZE")) {
        return invalid_request(
            "INVALID_PARAMETER_VALUE",
            "/intent",
            "intent must be CAPTURE or AUTHORIZE.",
        );
    }
    let Some(units) = b["purchase_units"].as_array().filter(|u| !u.is_empty()) else {
        return invalid_request(
            "MISSING_REQUIRED_PARAMETER",
            "/purchase_units",
            "A required field / parameter is missing.",
        );
    };
    let mut purchase_units = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let unit: wire::PurchaseUnit = match serde_json::from_value(u.clone()) {
            Ok(u) => u,
            Err(_) => {
                return invalid_request(
                    "MISSING_REQUIRED_PARAMETER",
                    &format!("/purchase_units/{i}/amount"),
                    "A required field / parameter is missing.",
                );
            }
        };
        if let Some(r) = money_refused(&unit.amount) {
            return r;
        }
        let valid = unit.amount.minor().is_some_and(|v| v > 0);
        if !valid {
            return unprocessable(
                "DECIMAL_PRECISION",
                "If the currency supports decimals, only two decimal place precision is supported.",
            );
        }
        purchase_units.push(unit);
    }
    let status = if b.get("payment_source").is_some() {
        "PAYER_ACTION_REQUIRED"
    } else {
        "CREATED"
    };
    let mut order = wire::Order {
        id: pp_id(),
        intent: b["intent"].as_str().unwrap_or("CAPTURE").into(),
        status: status.into(),
        purchase_units,
        payer: None,
        create_time: Some(rfc3339_now()),
        links: Vec::new(),
    };
    order.links = order_links(&sb.inner.base, &order);
    {
        let mut st = sb.state();
        let back = &b["payment_source"]["paypal"]["experience_context"]["return_url"];
        if let Some(url) = back.as_str() {
            st.return_urls.insert(order.id.clone(), url.to_owned());
        }
        st.orders.insert(order.id.clone(), order.clone());
    }
    let body = serde_json::to_value(&order).unwrap_or_default();
    remember(&sb, key, StatusCode::CREATED, body)
}

pub(super) async fn get_order(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match sb.state().orders.get(&id) {
        Some(o) => Json(o.clone()).into_response(),
        None => not_found(),
    }
}

pub(super) async fn capture(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let key = request_key(&headers, "capture");
    if let Some(r) = replay(&sb, &key) {
        return r;
    }
    let (order, captured, elsewhere) = {
        let mut st = sb.state();
        let plan = st.plans.get(&id).cloned();
        let Some(o) = st.orders.get_mut(&id) else {
            return not_found();
        };
        match o.status.as_str() {
            "APPROVED" => {}
            "COMPLETED" => {
                return unprocessable(
                    "ORDER_ALREADY_CAPTURED",
                    "Order already captured.If 'intent=CAPTURE' only one capture per order is allowed.",
                );
            }
            _ => {
                return unprocessable(
                    "ORDER_NOT_APPROVED",
                    "Payer has not yet approved the Order for payment. Please redirect the payer to the 'rel':'approve' url returned as part of the HATEOAS links within the Create Order call or provide a valid payment_source in the request.",
                );
            }
        }
        let plan = plan.unwrap_or(Plan {
            capture: "completed".into(),
            amount: None,
        });
        // Another capture of this order (the buyer's JS SDK, another deployment) wins the
        // race: the order is captured, and this call answers as PayPal answers a second
        // capture of an `intent=CAPTURE` order (Orders v2 capture errors,
        // <https://developer.paypal.com/api/rest/reference/orders/v2/errors/>).
        let elsewhere = plan.capture == "elsewhere";
        // A refusal that is about the merchant's account, not the buyer's money: the
        // account requires unique invoice ids (Orders v2 capture errors, same page).
        if plan.capture == "duplicate_invoice" {
            return unprocessable(
                "DUPLICATE_INVOICE_ID",
                "Duplicate Invoice ID detected. To avoid a potential duplicate transaction your account setting requires that Invoice Id be unique for each transaction.",
            );
        }
        if plan.capture == "declined" {
            return unprocessable(
                "INSTRUMENT_DECLINED",
                "The instrument presented  was either declined by the processor or bank, or it can't be used for this payment.",
            );
        }
        let Some(unit) = o.purchase_units.first_mut() else {
            return not_found();
        };
        let mut amount = unit.amount.clone();
        if let Some(v) = plan.amount {
            amount.value = v;
        }
        let capture = wire::Capture {
            id: pp_id(),
            status: if plan.capture == "pending" {
                "PENDING"
            } else {
                "COMPLETED"
            }
            .into(),
            amount,
            custom_id: unit.custom_id.clone(),
            final_capture: true,
            supplementary_data: Some(wire::SupplementaryData {
                related_ids: wire::RelatedIds {
                    order_id: Some(id.clone()),
                },
            }),
            create_time: Some(rfc3339_now()),
            links: Vec::new(),
        };
        unit.payments = Some(wire::Payments {
            captures: vec![capture.clone()],
        });
        o.status = "COMPLETED".into();
        let base = sb.inner.base.clone();
        o.links = order_links(&base, o);
        let order = o.clone();
        st.captures.insert(capture.id.clone(), id.clone());
        (order, capture, elsewhere)
    };
    let kind = if captured.status == "PENDING" {
        "PAYMENT.CAPTURE.PENDING"
    } else {
        "PAYMENT.CAPTURE.COMPLETED"
    };
    sb.inner
        .courier
        .deliver(vec![capture_event(kind, &captured)], Copies::ONCE, 0)
        .await;
    if elsewhere {
        return unprocessable(
            "ORDER_ALREADY_CAPTURED",
            "Order already captured.If 'intent=CAPTURE' only one capture per order is allowed.",
        );
    }
    let body = serde_json::to_value(&order).unwrap_or_default();
    remember(&sb, key, StatusCode::CREATED, body)
}

/// The capture with this id and its order, for reading or changing.
pub(super) fn with_capture<T>(
    st: &mut St,
    capture_id: &str,
    f: impl FnOnce(&mut wire::Capture) -> T,
) -> Option<T> {
    let order_id = st.captures.get(capture_id)?.clone();
    let o = st.orders.get_mut(&order_id)?;
    let c = o
        .purchase_units
        .iter_mut()
        .filter_map(|u| u.payments.as_mut())
        .flat_map(|p| p.captures.iter_mut())
        .find(|c| c.id == capture_id)?;
    Some(f(c))
}

pub(super) async fn get_capture(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    match with_capture(&mut sb.state(), &id, |c| c.clone()) {
        Some(c) => Json(c).into_response(),
        None => not_found(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Approve {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    capture: Option<String>,
    #[serde(default)]
    amount: Option<String>,
}

pub(super) async fn approve(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d: Approve = match control_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match copies(d.webhook.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let capture = d.capture.unwrap_or_else(|| "completed".into());
    if !matches!(
        capture.as_str(),
        "completed" | "pending" | "declined" | "elsewhere" | "duplicate_invoice"
    ) {
        return invalid_request(
            "INVALID_PARAMETER_VALUE",
            "capture",
            "capture must be \"completed\", \"pending\", \"declined\", \"elsewhere\" or \"duplicate_invoice\"",
        );
    }
    let payer_id = pp_id()[..13].to_owned();
    let order = {
        let mut st = sb.state();
        let Some(o) = st.orders.get_mut(&id) else {
            return not_found();
        };
        if !matches!(o.status.as_str(), "CREATED" | "PAYER_ACTION_REQUIRED") {
            return unprocessable(
                "ORDER_NOT_APPROVABLE",
                &format!("The order is {} and cannot be approved.", o.status),
            );
        }
        o.status = "APPROVED".into();
        o.payer = Some(json!({
            "name": { "given_name": "Sandbox", "surname": "Buyer" },
            "email_address": "buyer@example.com",
            "payer_id": payer_id,
        }));
        let base = sb.inner.base.clone();
        o.links = order_links(&base, o);
        let order = o.clone();
        st.plans.insert(
            id.clone(),
            Plan {
                capture,
                amount: d.amount,
            },
        );
        order
    };
    let ev = event(
        "CHECKOUT.ORDER.APPROVED",
        "checkout-order",
        "An order has been approved by buyer",
        serde_json::to_value(&order).unwrap_or_default(),
    );
    let sent = json!({ "id": ev.0, "body": String::from_utf8_lossy(&ev.1) });
    let deliveries = sb
        .inner
        .courier
        .deliver(vec![ev], copies, d.delay_ms.unwrap_or(0))
        .await;
    Json(json!({
        "orderID": order.id,
        "payerID": payer_id,
        "paymentID": null,
        "billingToken": null,
        "facilitatorAccessToken": rand_id("A21AA", 60),
        "paymentSource": "paypal",
        "events": [sent],
        "deliveries": deliveries,
    }))
    .into_response()
}

pub(super) async fn void(State(sb): State<Sandbox>, Path(id): Path<String>) -> Response {
    let order = {
        let mut st = sb.state();
        let Some(o) = st.orders.get_mut(&id) else {
            return not_found();
        };
        if o.status == "COMPLETED" {
            return unprocessable(
                "ORDER_ALREADY_COMPLETED",
                "A completed order cannot be voided.",
            );
        }
        o.status = "VOIDED".into();
        o.links = Vec::new();
        o.clone()
    };
    let ev = event(
        "CHECKOUT.ORDER.VOIDED",
        "checkout-order",
        "An order has been voided",
        serde_json::to_value(&order).unwrap_or_default(),
    );
    let deliveries = sb.inner.courier.deliver(vec![ev], Copies::ONCE, 0).await;
    Json(json!({ "order": order, "deliveries": deliveries })).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settle {
    #[serde(default)]
    outcome: Option<String>,
    /// `"none"`: the settlement's event is lost, so only a re-read can learn it.
    #[serde(default)]
    webhook: Option<String>,
}

pub(super) async fn settle(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d: Settle = match control_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match copies(d.webhook.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (status, kind) = match d.outcome.as_deref().unwrap_or("completed") {
        "completed" => ("COMPLETED", "PAYMENT.CAPTURE.COMPLETED"),
        "denied" => ("DECLINED", "PAYMENT.CAPTURE.DENIED"),
        _ => {
            return invalid_request(
                "INVALID_PARAMETER_VALUE",
                "outcome",
                "outcome must be \"completed\" or \"denied\"",
            );
        }
    };
    let captured = with_capture(&mut sb.state(), &id, |c| {
        if c.status != "PENDING" {
            return Err(unprocessable(
                "CAPTURE_NOT_PENDING",
                "Only a pending capture settles.",
            ));
        }
        c.status = status.into();
        Ok(c.clone())
    });
    let captured = match captured {
        None => return not_found(),
        Some(Err(r)) => return r,
        Some(Ok(c)) => c,
    };
    let deliveries = sb
        .inner
        .courier
        .deliver(vec![capture_event(kind, &captured)], copies, 0)
        .await;
    Json(json!({ "capture": captured, "deliveries": deliveries })).into_response()
}

/// `GET /sandbox/paypal/checkoutnow?token={order id}`: the buyer's approval page behind
/// the order's approval link. Its button approves the order (as the control call does) and
/// sends the browser to the order's `return_url` with `token` and `PayerID`, as PayPal does.
pub(super) async fn checkout_page(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let token = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let st = sb.state();
    let Some(o) = st.orders.get(&token) else {
        return (
            StatusCode::NOT_FOUND,
            axum::response::Html("<h1>No such PayPal order</h1>".to_owned()),
        )
            .into_response();
    };
    let esc = crate::text::html_escape;
    let amount = o
        .purchase_units
        .first()
        .map(|u| format!("{} {}", u.amount.value, u.amount.currency_code))
        .unwrap_or_default();
    let back = st.return_urls.get(&token).cloned().unwrap_or_default();
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sandbox PayPal</title></head><body>\
         <h1>fulfilld sandbox — PayPal</h1><p>Order {id}: {amount}, status {st}.</p>\
         <button id=\"approve\" data-back=\"{back}\">Approve</button>\
         <button id=\"approve-pending\" data-back=\"{back}\" data-capture=\"pending\">Approve with an eCheck (the capture stays pending)</button>\
         <script>function approve(){{\
           var back=this.dataset.back, capture=this.dataset.capture;\
           fetch('/sandbox/paypal/orders/{id}/approve',{{method:'POST',headers:{{'content-type':'application/json'}},body:JSON.stringify(capture?{{capture:capture}}:{{}})}}).then(r=>r.json()).then(j=>{{\
             document.body.insertAdjacentHTML('beforeend','<pre>'+JSON.stringify(j.deliveries)+'</pre>');\
             if(back){{var u=new URL(back);u.searchParams.set('token',j.orderID);u.searchParams.set('PayerID',j.payerID);location.href=u}}}})}}\
           document.getElementById('approve').onclick=approve;document.getElementById('approve-pending').onclick=approve;</script>\
         </body></html>",
        id = esc(&o.id),
        st = esc(&o.status),
        amount = esc(&amount),
        back = esc(&back),
    ))
    .into_response()
}
