//! Events: the list API (`GET /v1/events`, paged by `starting_after`) and delivering an
//! event to the webhook target.

use super::*;

/// `GET /v1/events`: like sessions, plus `delivery_success=false` for the events no webhook
/// delivery succeeded for (what a receiver that was down missed).
pub(super) async fn list_events(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = form(query.clone().unwrap_or_default().as_bytes());
    let delivery = q
        .iter()
        .find(|(k, _)| k == "delivery_success")
        .map(|(_, v)| v.clone());
    let want = match delivery.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "delivery_success must be true or false.",
                Some("delivery_success"),
            );
        }
    };
    let all: Vec<wire::Event> = sb
        .inner
        .courier
        .sent()
        .into_iter()
        .filter(|(_, delivered)| want.is_none_or(|w| w == *delivered))
        .filter_map(|(body, _)| serde_json::from_slice(&body).ok())
        .collect();
    page(all, query, "/v1/events", "event", |e| {
        (e.created, e.id.as_str())
    })
}

/// One page of a Stripe list, newest first: `created[gte]`, `limit` (1-100, default 10) and
/// `starting_after` as Stripe reads them. `key` gives an item's (created, id).
pub(super) fn page<T: serde::Serialize + Clone>(
    mut all: Vec<T>,
    query: Option<String>,
    url: &str,
    object: &str,
    key: impl Fn(&T) -> (i64, &str),
) -> Response {
    let q = form(query.unwrap_or_default().as_bytes());
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let since: i64 = get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit = match get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "This value must be greater than or equal to 1 and less than or equal to 100.",
                Some("limit"),
            );
        }
    };
    all.retain(|t| key(t).0 >= since);
    all.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.cmp(&ka.0).then(kb.1.cmp(ka.1))
    });
    let start = match get("starting_after") {
        Some(after) => match all.iter().position(|t| key(t).1 == after) {
            Some(i) => i + 1,
            None => {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("No such {object}: '{after}'"),
                    Some("starting_after"),
                );
            }
        },
        None => 0,
    };
    let data: Vec<T> = all.iter().skip(start).take(limit).cloned().collect();
    let list = wire::List {
        object: "list".into(),
        has_more: start + data.len() < all.len(),
        data,
        url: url.into(),
    };
    Json(list).into_response()
}

pub(super) fn event(kind: &str, session: &wire::CheckoutSession) -> wire::Event {
    event_about(kind, serde_json::to_value(session).unwrap_or(Value::Null))
}

pub(super) fn event_about(kind: &str, object: Value) -> wire::Event {
    wire::Event {
        id: rand_id("evt_", 24),
        object: "event".into(),
        api_version: Some(API_VERSION.into()),
        created: now_s(),
        data: wire::EventData { object },
        livemode: false,
        pending_webhooks: 1,
        request: Some(wire::EventRequest {
            id: None,
            idempotency_key: None,
        }),
        kind: kind.into(),
    }
}

/// Delivers `ev` `copies` times, signed as Stripe signs it (`Stripe-Signature`, with the
/// first configured webhook secret).
pub(super) async fn deliver(
    sb: &Sandbox,
    ev: &wire::Event,
    copies: Copies,
    delay_ms: u64,
) -> Vec<Value> {
    let Ok(body) = serde_json::to_vec(ev) else {
        return Vec::new();
    };
    sb.inner
        .courier
        .deliver(vec![(ev.id.clone(), body)], copies, delay_ms)
        .await
}
