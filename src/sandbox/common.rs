//! What every provider's sandbox shares: delivering signed webhooks (once, twice, late,
//! held), injected API faults and timeouts, the gate that keeps the sandbox to loopback
//! callers, a provider's router around its API, and the controls' small helpers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde_json::{Value, json};

use crate::config::Config;

/// The headers that sign one delivery of `body` (an event with id `event_id`), as the
/// provider signs them.
pub(super) type Sign = dyn Fn(&str, &[u8]) -> Vec<(&'static str, String)> + Send + Sync;

/// Events as (id, body), in the order they happened.
pub(super) type Events = Vec<(String, Vec<u8>)>;

/// Delivers one provider's webhooks to the engine.
#[derive(Clone)]
pub(super) struct Courier {
    http: reqwest::Client,
    target: String,
    sign: Arc<Sign>,
    /// Events held back (`"webhook": "held"`), in the order they happened.
    held: Arc<std::sync::Mutex<Events>>,
    /// Every event sent or held, oldest first, and whether a delivery of it was answered 2xx:
    /// what a provider's "list events" API reads.
    log: Arc<std::sync::Mutex<Vec<Logged>>>,
}

/// An event in a provider's log.
#[derive(Debug, Clone)]
pub(super) struct Logged {
    id: String,
    body: Vec<u8>,
    delivered: bool,
}

impl Courier {
    /// A courier to `{webhook_target}/webhooks/{provider}`.
    pub(super) fn new(config: &Config, provider: &str, sign: Arc<Sign>) -> Courier {
        Courier {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            target: format!(
                "{}/webhooks/{provider}",
                config.sandbox.webhook_target.trim_end_matches('/')
            ),
            sign,
            held: Arc::default(),
            log: Arc::default(),
        }
    }

    pub(super) fn log(&self) -> std::sync::MutexGuard<'_, Vec<Logged>> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events sent or held so far, oldest first: (body, delivered).
    pub(super) fn sent(&self) -> Vec<(Vec<u8>, bool)> {
        self.log()
            .iter()
            .map(|l| (l.body.clone(), l.delivered))
            .collect()
    }

    pub(super) async fn post(&self, id: &str, body: Vec<u8>) -> Value {
        let mut req = self
            .http
            .post(&self.target)
            .header("content-type", "application/json");
        for (name, value) in (self.sign)(id, &body) {
            req = req.header(name, value);
        }
        match req.body(body).send().await {
            Ok(r) => {
                if r.status().is_success()
                    && let Some(l) = self.log().iter_mut().find(|l| l.id == id)
                {
                    l.delivered = true;
                }
                json!({ "status": r.status().as_u16() })
            }
            Err(e) => json!({ "error": e.to_string() }),
        }
    }

    /// Delivers the events (id, body) in order, each `copies` times at once, as retries
    /// racing each other would, or holds them back. Without a delay it waits for the
    /// answers and reports them; with one it returns at once.
    pub(super) async fn deliver(
        &self,
        events: Events,
        copies: Copies,
        delay_ms: u64,
    ) -> Vec<Value> {
        {
            let mut log = self.log();
            for (id, body) in &events {
                if !log.iter().any(|l| &l.id == id) {
                    log.push(Logged {
                        id: id.clone(),
                        body: body.clone(),
                        delivered: false,
                    });
                }
            }
        }
        let copies = match copies {
            Copies::Send(n) => n,
            Copies::Hold => {
                let n = events.len();
                self.held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(events);
                return vec![json!({ "held": true }); n];
            }
        };
        let n = events.len() * copies;
        let courier = self.clone();
        let run = async move {
            let mut out = Vec::with_capacity(n);
            for (id, body) in events {
                let sends = (0..copies).map(|_| courier.post(&id, body.clone()));
                out.extend(futures::future::join_all(sends).await);
            }
            out
        };
        if delay_ms == 0 {
            return run.await;
        }
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let results = run.await;
            tracing::info!(?results, "sandbox delivered delayed webhooks");
        });
        vec![json!({ "scheduled_in_ms": delay_ms }); n]
    }
}

/// `POST /sandbox/{provider}/webhooks/release` `{"order": "as_sent"|"reversed"}`:
/// delivers the held events once each, one after the other, in the order they happened or
/// the reverse (a refund event before the capture it refunds, a failure before a success).
pub(super) async fn release_held(courier: &Courier, body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse;
    #[derive(Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Release {
        #[serde(default)]
        order: Option<String>,
    }
    let r: Release = match control_body(body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut events = std::mem::take(&mut *courier.held.lock().unwrap_or_else(|p| p.into_inner()));
    match r.order.as_deref().unwrap_or("as_sent") {
        "as_sent" => {}
        "reversed" => events.reverse(),
        other => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"code": "invalid_field", "field": "order",
                    "message": format!("{other:?} is not \"as_sent\" or \"reversed\"")}})),
            )
                .into_response();
        }
    }
    let ids: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
    let deliveries = courier.deliver(events, Copies::ONCE, 0).await;
    axum::Json(json!({ "released": ids, "deliveries": deliveries })).into_response()
}

/// `prefix` + `len` random alphanumerics, like the providers' ids.
pub(super) fn rand_id(prefix: &str, len: usize) -> String {
    use rand::Rng;
    let s: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{s}")
}

/// How a control call wants its webhooks delivered: `n` copies of each, at once (0: the
/// provider's "test mode", nothing is delivered), or held back until
/// `POST /sandbox/{provider}/webhooks/release` — which can deliver them out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Copies {
    Send(usize),
    Hold,
}

impl Copies {
    pub(super) const ONCE: Copies = Copies::Send(1);
}

/// The `webhook` field of a control call: "once" (default), "twice", "none" or "held".
pub(super) fn copies(webhook: Option<&str>) -> Result<Copies, axum::response::Response> {
    use axum::response::IntoResponse;
    match webhook.unwrap_or("once") {
        "once" => Ok(Copies::Send(1)),
        "twice" => Ok(Copies::Send(2)),
        "none" => Ok(Copies::Send(0)),
        "held" => Ok(Copies::Hold),
        other => Err((
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(
                serde_json::json!({"error": {"code": "invalid_field", "field": "webhook",
                "message": format!("{other:?} is not \"once\", \"twice\", \"none\" or \"held\"")}}),
            ),
        )
            .into_response()),
    }
}

/// The `user:password` of a Basic `Authorization` header value (after `Basic `).
pub(super) fn basic_credentials(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// What the next API call of one provider suffers (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Answer with this error status, doing nothing; Stripe's answer carries
    /// `Stripe-Should-Retry` when the second field says so.
    Status(u16, Option<bool>),
    /// Do the work, then hold the answer back for this long: the caller times out not
    /// knowing that its request took effect — the case idempotency keys exist for.
    /// `"timeout"` holds it 3 s; `"hang"` 30 s, long enough to kill the caller mid-call.
    Hold(Duration),
}

/// The faults the next API calls of one provider suffer, in order, and how many API calls
/// it has served.
#[derive(Debug, Default)]
pub(super) struct Faults {
    queue: std::sync::Mutex<std::collections::VecDeque<Fault>>,
    calls: std::sync::atomic::AtomicU64,
}

impl Faults {
    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Fault>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error status the next call fails with, if the next fault is one, and the
    /// `Stripe-Should-Retry` its answer carries.
    pub(super) fn next(&self) -> Option<(u16, Option<bool>)> {
        let mut q = self.queue();
        match q.front() {
            Some(Fault::Status(s, retry)) => {
                let s = (*s, *retry);
                q.pop_front();
                Some(s)
            }
            _ => None,
        }
    }

    /// How long the next call's answer is to be held back, if it is (taking that fault).
    pub(super) fn take_hold(&self) -> Option<Duration> {
        let mut q = self.queue();
        match q.front() {
            Some(Fault::Hold(d)) => {
                let d = *d;
                q.pop_front();
                Some(d)
            }
            _ => None,
        }
    }

    /// Answers `POST /sandbox/{provider}/faults` `{"api_errors": [503, "timeout", "hang",
    /// {"status": 400, "should_retry": true}, …]}` (`should_retry` is sent by Stripe only).
    pub(super) fn handle(&self, body: &[u8]) -> axum::response::Response {
        use axum::response::IntoResponse;
        match Self::parse(body) {
            Ok(faults) => {
                *self.queue() = faults.into();
                axum::Json(serde_json::json!({ "ok": true })).into_response()
            }
            Err(r) => r,
        }
    }

    pub(super) fn parse(body: &[u8]) -> Result<Vec<Fault>, axum::response::Response> {
        use axum::response::IntoResponse;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            api_errors: Vec<Value>,
        }
        let bad = |m: String| {
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"error": {"code": "invalid_field", "field": "api_errors", "message": m}})),
            )
                .into_response()
        };
        let b: Body = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Answered {
            status: u64,
            should_retry: Option<bool>,
        }
        let status = |s: u64, retry| {
            (400..600)
                .contains(&s)
                .then_some(Fault::Status(s as u16, retry))
        };
        b.api_errors
            .iter()
            .map(|v| {
                let fault = match (v.as_u64(), v.as_str()) {
                    (Some(s), _) => status(s, None),
                    (_, Some("timeout")) => Some(Fault::Hold(Duration::from_secs(3))),
                    (_, Some("hang")) => Some(Fault::Hold(Duration::from_secs(30))),
                    _ => serde_json::from_value::<Answered>(v.clone())
                        .ok()
                        .and_then(|a| status(a.status, a.should_retry)),
                };
                fault.ok_or_else(|| {
                    bad(format!(
                        "{v} is neither a status 400-599, {{\"status\", \"should_retry\"}}, \"timeout\" nor \"hang\""
                    ))
                })
            })
            .collect()
    }
}

/// A provider's part of the sandbox, finished: its API routes (`api`, with `timeout`
/// faults applied to them) and the controls every provider has —
/// `POST /sandbox/{name}/faults`, `POST /sandbox/{name}/webhooks/release`, and
/// `GET /sandbox/{name}/requests` (`{"api_requests": n}`: the API calls served so far).
pub(super) fn provider_router(
    name: &str,
    api: Router,
    courier: Courier,
    faults: Arc<Faults>,
) -> Router {
    use axum::body::Bytes;
    use axum::routing::post;
    let controls = Router::new()
        .route(&format!("/sandbox/{name}/requests"), {
            let faults = faults.clone();
            axum::routing::get(move || {
                let n = faults.calls.load(std::sync::atomic::Ordering::Relaxed);
                async move { axum::Json(json!({ "api_requests": n })) }
            })
        })
        .route(&format!("/sandbox/{name}/faults"), {
            let faults = faults.clone();
            post(move |body: Bytes| {
                let faults = faults.clone();
                async move { faults.handle(&body) }
            })
        })
        .route(
            &format!("/sandbox/{name}/webhooks/release"),
            post(move |body: Bytes| {
                let courier = courier.clone();
                async move { release_held(&courier, &body).await }
            }),
        );
    with_timeouts(api, faults).merge(controls)
}

/// `router`'s routes behind `gate`, which every call of a provider's API meets first:
/// authentication, then an injected fault, each answered in the provider's own envelope.
pub(super) fn gated<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    sb: S,
    gate: fn(&S, &axum::http::HeaderMap) -> Result<(), axum::response::Response>,
) -> Router<S> {
    router.route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let sb = sb.clone();
            async move {
                match gate(&sb, req.headers()) {
                    Ok(()) => next.run(req).await,
                    Err(refused) => refused,
                }
            }
        },
    ))
}

/// Applies `timeout` faults to a provider's API routes (the `/sandbox/…` controls are
/// exempt): the request is served, and its answer held back.
pub(super) fn with_timeouts(router: Router, faults: Arc<Faults>) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let faults = faults.clone();
            async move {
                let api = !req.uri().path().starts_with("/sandbox/");
                if api {
                    faults
                        .calls
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(hold) = api.then(|| faults.take_hold()).flatten() {
                    let answer = next.run(req).await;
                    tokio::time::sleep(hold).await;
                    return answer;
                }
                next.run(req).await
            }
        },
    ))
}

/// A control call's optional JSON body: empty means all defaults; anything else must parse.
pub(super) fn control_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, axum::response::Response> {
    use axum::response::IntoResponse;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(
                serde_json::json!({"error": {"code": "invalid_json", "message": e.to_string()}}),
            ),
        )
            .into_response()
    })
}
