//! The buyer's part: Checkout.js's stand-in and its frame, paying an order, and the
//! events a payment sends.

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pay {
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    capture: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// The amount the payment reports, when it should differ from the order's.
    #[serde(default)]
    amount: Option<i64>,
    /// The events the account's webhook is subscribed to (a Razorpay webhook is set up per
    /// event in the Dashboard); the others are not delivered. Default: all of them.
    #[serde(default)]
    events: Option<Vec<String>>,
}

pub(super) fn event(
    kind: &str,
    payment: Option<&wire::Payment>,
    order: Option<&wire::Order>,
) -> (String, wire::Event) {
    let mut contains = Vec::new();
    let mut payload = wire::EventPayload::default();
    if let Some(p) = payment {
        contains.push("payment".to_owned());
        payload.payment = Some(wire::Wrapped { entity: p.clone() });
    }
    if let Some(o) = order {
        contains.push("order".to_owned());
        payload.order = Some(wire::Wrapped { entity: o.clone() });
    }
    let ev = wire::Event {
        entity: "event".into(),
        account_id: "acc_Sandbox0000000".into(),
        event: kind.into(),
        contains,
        payload,
        created_at: now_s(),
    };
    (rand_id("evt_", 14), ev)
}

/// Delivers the events in order, each `copies` times, signed as Razorpay signs them.
pub(super) async fn deliver(
    sb: &Sandbox,
    events: &[(String, wire::Event)],
    copies: Copies,
    delay_ms: u64,
) -> Vec<Value> {
    let bodies = events
        .iter()
        .filter_map(|(id, ev)| serde_json::to_vec(ev).ok().map(|b| (id.clone(), b)))
        .collect();
    sb.inner.courier.deliver(bodies, copies, delay_ms).await
}

pub(super) async fn pay(
    State(sb): State<Sandbox>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let d: Pay = match control_body(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let copies = match copies(d.webhook.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (manual, race) = match d.capture.as_deref().unwrap_or("automatic") {
        "automatic" => (false, false),
        "manual" => (true, false),
        "race" => (true, true),
        _ => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "capture must be \"automatic\", \"manual\" or \"race\"",
                Some("capture"),
            );
        }
    };
    let failed = match d.outcome.as_deref().unwrap_or("paid") {
        "paid" => false,
        "failed" => true,
        _ => {
            return rz_error(
                StatusCode::BAD_REQUEST,
                "outcome must be \"paid\" or \"failed\"",
                Some("outcome"),
            );
        }
    };
    let (payment, order) = {
        let mut st = sb.state();
        let Some(o) = st.orders.get_mut(&id) else {
            return no_such_id();
        };
        if o.status == "paid" {
            return rz_error(StatusCode::BAD_REQUEST, "Order has already been paid", None);
        }
        o.attempts += 1;
        let status = if failed {
            "failed"
        } else if manual {
            "authorized"
        } else {
            "captured"
        };
        let amount = d.amount.unwrap_or(o.amount);
        if status == "captured" {
            o.status = "paid".into();
            o.amount_paid = amount;
            o.amount_due = 0;
        } else {
            o.status = "attempted".into();
        }
        let payment = wire::Payment {
            id: rand_id("pay_", 14),
            entity: "payment".into(),
            amount,
            currency: o.currency.clone(),
            status: status.into(),
            order_id: Some(o.id.clone()),
            method: Some("upi".into()),
            captured: status == "captured",
            amount_refunded: 0,
            email: Some("buyer@example.com".into()),
            notes: json!([]),
            error_code: failed.then(|| "BAD_REQUEST_ERROR".into()),
            error_description: failed.then(|| "Payment failed because the bank declined it".into()),
            created_at: now_s(),
        };
        let order = o.clone();
        st.payments.insert(payment.id.clone(), payment.clone());
        if race {
            st.capture_after_read.insert(payment.id.clone());
        }
        (payment, order)
    };
    let mut events = Vec::new();
    if failed {
        events.push(event("payment.failed", Some(&payment), None));
    } else {
        let mut authorized = payment.clone();
        authorized.status = "authorized".into();
        authorized.captured = false;
        events.push(event("payment.authorized", Some(&authorized), None));
        if !manual {
            events.push(event("payment.captured", Some(&payment), None));
            events.push(event("order.paid", Some(&payment), Some(&order)));
        }
    }
    if let Some(subscribed) = &d.events {
        events.retain(|(_, ev)| subscribed.contains(&ev.event));
    }
    let deliveries = deliver(&sb, &events, copies, d.delay_ms.unwrap_or(0)).await;
    let sent: Vec<Value> = events
        .iter()
        .map(|(id, ev)| json!({ "id": id, "body": serde_json::to_string(ev).unwrap_or_default() }))
        .collect();
    Json(json!({
        "razorpay_payment_id": payment.id,
        "razorpay_order_id": order.id,
        "razorpay_signature": sign_payment(&sb.inner.key_secret, &order.id, &payment.id),
        "events": sent,
        "deliveries": deliveries,
    }))
    .into_response()
}

/// The stand-in for Razorpay's Checkout.js (`GET /sandbox/razorpay/checkout.js`): the same
/// surface a shop page uses (<https://razorpay.com/docs/payments/payment-gateway/web-integration/standard/build-integration/>)
/// — `new Razorpay({key, order_id, handler, modal: {ondismiss}})`, `.on("payment.failed",
/// cb)`, `.open()` — over a frame served by the sandbox, which answers the page by
/// `postMessage`: the signed `{razorpay_payment_id, razorpay_order_id, razorpay_signature}`
/// to `handler`, or `{error: {code, description, source, step, reason, metadata}}` to the
/// `payment.failed` callbacks while the frame stays open for another try, as Razorpay's does.
pub(super) const CHECKOUT_JS: &str = r#"(function () {
  "use strict";
  var origin = new URL(document.currentScript.src).origin;
  function Razorpay(options) { this.options = options || {}; this.handlers = {}; }
  Razorpay.prototype.on = function (event, cb) {
    (this.handlers[event] = this.handlers[event] || []).push(cb);
  };
  Razorpay.prototype.open = function () {
    var self = this, o = this.options;
    var frame = document.createElement("iframe");
    frame.id = "razorpay-checkout-frame";
    frame.title = "Razorpay Checkout";
    frame.src = origin + "/sandbox/razorpay/checkout?key_id=" + encodeURIComponent(o.key || "") +
      "&order_id=" + encodeURIComponent(o.order_id || "");
    frame.style.cssText = "position:fixed;top:10%;left:20%;width:60%;height:60%;border:1px solid #888;background:#fff;z-index:10";
    function done() { window.removeEventListener("message", listen); frame.remove(); }
    function listen(ev) {
      if (ev.origin !== origin || ev.source !== frame.contentWindow) return;
      var m = ev.data || {};
      if (m.event === "payment.success") { done(); if (o.handler) o.handler(m.response); }
      else if (m.event === "payment.failed") {
        (self.handlers["payment.failed"] || []).forEach(function (cb) { cb(m.response); });
      } else if (m.event === "dismiss") { done(); if (o.modal && o.modal.ondismiss) o.modal.ondismiss(); }
    }
    window.addEventListener("message", listen);
    document.body.appendChild(frame);
  };
  window.Razorpay = Razorpay;
})();
"#;

pub(super) async fn checkout_js() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        CHECKOUT_JS,
    )
        .into_response()
}

/// `GET /sandbox/razorpay/checkout?key_id=…&order_id=…`: the frame Checkout.js opens. The
/// buyer pays (or has the bank decline, to try again); the outcome goes to the page.
pub(super) async fn checkout_frame(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let esc = crate::text::html_escape;
    let (key, id) = (
        q.get("key_id").cloned().unwrap_or_default(),
        q.get("order_id").cloned().unwrap_or_default(),
    );
    let order = sb.state().orders.get(&id).cloned();
    let Some(o) = order.filter(|_| key == sb.inner.key_id) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::response::Html(
                "<h1>Razorpay: the key or the order id is not valid</h1>".to_owned(),
            ),
        )
            .into_response();
    };
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Razorpay Checkout</title></head><body>\
         <h1>fulfilld sandbox — Razorpay</h1><p>Order {id}: {amount} (minor units) {cur}, status {st}.</p>\
         <button id=\"pay\">Pay</button> <button id=\"fail\">Pay, and have the bank decline</button>\
         <p id=\"said\"></p>\
         <script>function pay(fail){{\
           fetch('/sandbox/razorpay/orders/{id}/pay',{{method:'POST',headers:{{'content-type':'application/json'}},\
             body:JSON.stringify(fail?{{outcome:'failed'}}:{{}})}}).then(r=>r.json()).then(j=>{{\
             if(fail){{document.getElementById('said').textContent='Payment failed: try again.';\
               parent.postMessage({{event:'payment.failed',response:{{error:{{code:'BAD_REQUEST_ERROR',\
                 description:'Payment failed because the bank declined it',source:'bank',step:'payment_authorization',\
                 reason:'payment_failed',metadata:{{order_id:j.razorpay_order_id,payment_id:j.razorpay_payment_id}}}}}}}},'*')}}\
             else parent.postMessage({{event:'payment.success',response:{{razorpay_payment_id:j.razorpay_payment_id,\
               razorpay_order_id:j.razorpay_order_id,razorpay_signature:j.razorpay_signature}}}},'*')}})}}\
           document.getElementById('pay').onclick=function(){{pay(false)}};\
           document.getElementById('fail').onclick=function(){{pay(true)}};</script>\
         </body></html>",
        id = esc(&o.id),
        amount = o.amount,
        cur = esc(&o.currency),
        st = esc(&o.status),
    ))
    .into_response()
}
