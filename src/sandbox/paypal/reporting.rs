//! The lists: webhook event notifications (paged, with `next` links on the other
//! loopback host) and the transaction search.

use super::*;

/// `GET /v1/notifications/webhooks-events`: the event notifications sent, newest first,
/// `start_time` … `end_time` (RFC 3339, UTC), `page_size` (default 10, at most 300), with a
/// `next` link while more remain.
pub(super) async fn list_events(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = Params::of(query);
    let start = q.time("start_time").unwrap_or_default();
    let end = q.time("end_time").unwrap_or_else(|| "9999".into());
    let (size, page) = q.paging(10, 300);
    let size = sb.state().event_page_cap.map_or(size, |cap| size.min(cap));
    let mut all: Vec<wire::Event> = sb
        .inner
        .courier
        .sent()
        .into_iter()
        .filter_map(|(body, _)| serde_json::from_slice::<wire::Event>(&body).ok())
        .filter(|e| {
            e.create_time
                .get(..19)
                .is_some_and(|t| t >= start.as_str() && t <= end.as_str())
        })
        .collect();
    all.reverse();
    let events: Vec<&wire::Event> = all.iter().skip((page - 1) * size).take(size).collect();
    let mut links = Vec::new();
    if page * size < all.len() {
        let mut next = form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.0.iter().filter(|(k, _)| k != "page") {
            next.append_pair(k, v);
        }
        next.append_pair("page", &(page + 1).to_string());
        links.push(json!({
            "href": format!("{}/v1/notifications/webhooks-events?{}", other_host(&sb.inner.base), next.finish()),
            "rel": "next",
            "method": "GET",
        }));
    }
    Json(json!({ "events": events, "count": events.len(), "links": links })).into_response()
}

/// `base` with its loopback host's other name (`127.0.0.1` ↔ `localhost`), as PayPal's list
/// pages link to another of its API hosts than the one called.
pub(super) fn other_host(base: &str) -> String {
    let Ok(mut url) = url::Url::parse(base) else {
        return base.to_owned();
    };
    let other = match url.host_str() {
        Some("127.0.0.1") => "localhost",
        Some("localhost") => "127.0.0.1",
        _ => return base.to_owned(),
    };
    if url.set_host(Some(other)).is_err() {
        return base.to_owned();
    }
    url.as_str().trim_end_matches('/').to_owned()
}

#[derive(Default, Deserialize)]
pub(super) struct PagingControl {
    #[serde(default)]
    page_size: usize,
}

pub(super) async fn event_paging(State(sb): State<Sandbox>, body: Bytes) -> Response {
    let d = match control_body::<PagingControl>(&body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    sb.state().event_page_cap = Some(d.page_size.max(1));
    Json(json!({ "page_size": d.page_size.max(1) })).into_response()
}

/// A list call's query parameters.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    fn of(query: Option<String>) -> Params {
        Params(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, k: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    }

    /// `page_size` (default `size`, between 1 and `max`) and the 1-based `page`.
    fn paging(&self, size: usize, max: usize) -> (usize, usize) {
        let number = |k: &str| self.get(k).and_then(|v| v.parse::<usize>().ok());
        let size = number("page_size").unwrap_or(size).clamp(1, max);
        (size, number("page").unwrap_or(1).max(1))
    }

    /// A date-time parameter, to compare as text on its first 19 characters (all are UTC
    /// here).
    fn time(&self, k: &str) -> Option<String> {
        self.get(k)
            .filter(|d| d.len() >= 19)
            .map(|d| d[..19].to_owned())
    }
}

/// `GET /v1/reporting/transactions`: the captures (and refunds, as negative amounts) made
/// between `start_date` and `end_date` (required, at most 31 days apart), `page_size`
/// (≤ 500) per `page`.
pub(super) async fn search_transactions(
    State(sb): State<Sandbox>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q = Params::of(query);
    let (Some(start), Some(end)) = (q.time("start_date"), q.time("end_date")) else {
        return invalid_request(
            "MISSING_REQUIRED_PARAMETER",
            "start_date",
            "start_date and end_date are required.",
        );
    };
    let (size, page) = q.paging(100, 500);
    let mut all = Vec::new();
    {
        let st = sb.state();
        for o in st.orders.values() {
            for c in o
                .purchase_units
                .iter()
                .filter_map(|u| u.payments.as_ref())
                .flat_map(|p| p.captures.iter())
            {
                let when = c.create_time.clone().unwrap_or_default();
                if when
                    .get(..19)
                    .is_none_or(|w| w < start.as_str() || w > end.as_str())
                {
                    continue;
                }
                // Transaction Search's statuses: V is "a successful transaction was
                // reversed and funds were refunded to the original sender".
                let status = match c.status.as_str() {
                    "PENDING" => "P",
                    "DECLINED" | "FAILED" => "D",
                    "REFUNDED" => "V",
                    _ => "S",
                };
                all.push(wire::TransactionDetail {
                    transaction_info: wire::TransactionInfo {
                        transaction_id: c.id.clone(),
                        transaction_event_code: "T0006".into(),
                        transaction_initiation_date: when.replace('Z', "+0000"),
                        transaction_amount: c.amount.clone(),
                        transaction_status: status.into(),
                        custom_field: c.custom_id.clone(),
                    },
                });
            }
        }
    }
    all.sort_by(|a, b| {
        b.transaction_info
            .transaction_initiation_date
            .cmp(&a.transaction_info.transaction_initiation_date)
            .then(
                b.transaction_info
                    .transaction_id
                    .cmp(&a.transaction_info.transaction_id),
            )
    });
    let total_items = all.len();
    let total_pages = total_items.div_ceil(size).max(1);
    let details: Vec<_> = all.into_iter().skip((page - 1) * size).take(size).collect();
    Json(wire::TransactionSearch {
        transaction_details: details,
        page: page as i64,
        total_pages: total_pages as i64,
        total_items: total_items as i64,
    })
    .into_response()
}
