//! `GET /api/openapi.json`: the OpenAPI 3.1 document of every route the intake serves, made
//! from [`OPERATIONS`]. A test compares that table with the routers' own routes and calls
//! every operation on a live engine, so the document stays true.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::Engine;

/// A field of a request body or a query: name, JSON type, required, what it is.
type Field = (&'static str, &'static str, bool, &'static str);

pub struct Operation {
    pub method: &'static str,
    /// As routed, with `{name}` for a path parameter.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Needs `Authorization: Bearer <admin token>`.
    pub admin: bool,
    /// Needs the order's buyer token in `X-Buyer-Token`.
    pub buyer: bool,
    pub query: &'static [Field],
    pub body: &'static [Field],
    /// The success status, and what it answers.
    pub ok: (u16, &'static str),
}

const fn op(method: &'static str, path: &'static str, tag: &'static str) -> Operation {
    Operation {
        method,
        path,
        tag,
        summary: "",
        admin: false,
        buyer: false,
        query: &[],
        body: &[],
        ok: (200, "OK"),
    }
}

const ADMIN: &str = "admin";
const LIMIT: Field = ("limit", "integer", false, "at most this many (default 100)");
const REASON: Field = ("reason", "string", false, "why (kept in the audit log)");
/// A redirect proof in a read's query: `provider`, and the payload's fields beside it.
const PROOF_QUERY: &[Field] = &[
    (
        "provider",
        "string",
        false,
        "stripe, razorpay or paypal: the other parameters are that provider's redirect proof",
    ),
    (
        "session_id",
        "string",
        false,
        "Stripe: the Checkout Session id",
    ),
    (
        "orderID",
        "string",
        false,
        "PayPal: the approved order's id",
    ),
    (
        "razorpay_order_id",
        "string",
        false,
        "Razorpay: the order id Checkout answered",
    ),
    (
        "razorpay_payment_id",
        "string",
        false,
        "Razorpay: the payment id Checkout answered",
    ),
    (
        "razorpay_signature",
        "string",
        false,
        "Razorpay: the signature Checkout answered",
    ),
];
const KIND: Field = ("kind", "string", false, "a step kind");

/// Every operation, in the order the document lists them.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        summary: "The catalogue: each product's price and how many are available",
        ..op("get", "/api/products", "shop")
    },
    Operation {
        summary: "The reference checkout page: pick products, pay through the provider",
        ok: (200, "HTML"),
        ..op("get", "/checkout", "pages")
    },
    Operation {
        summary: "The reference success page: waits for the payment, then activates access",
        ok: (200, "HTML"),
        ..op("get", "/checkout/success", "pages")
    },
    Operation {
        summary: "The reference page a buyer who cancelled at the provider lands on",
        ok: (200, "HTML"),
        ..op("get", "/checkout/cancel", "pages")
    },
    Operation {
        summary: "The reference sign-in page a buyer on another device asks for a link on, and lands on from it",
        ok: (200, "HTML"),
        ..op("get", "/checkout/sign-in", "pages")
    },
    Operation {
        summary: "The reference pages' style sheet",
        ok: (200, "CSS"),
        ..op("get", "/checkout/shop.css", "pages")
    },
    Operation {
        summary: "The reference pages' script",
        ok: (200, "JavaScript"),
        ..op("get", "/checkout/shop.js", "pages")
    },
    Operation {
        summary: "Price and store an order from the catalogue",
        body: &[
            ("customer_email", "string", true, "the buyer's email"),
            ("items", "array", true, "[{\"sku\", \"qty\"}]"),
        ],
        ok: (
            201,
            "the order, with its total and its buyer_token (answered once: the proof of this order)",
        ),
        ..op("post", "/api/orders", "shop")
    },
    Operation {
        summary: "An order's status and what it waits on; with a proof (X-Buyer-Token: <the order's buyer_token>, or the provider's redirect proof in the query), also its lines, totals, payment, steps, refunds and links (activate, invoice, credit notes); with the admin token, everything",
        query: PROOF_QUERY,
        ..op("get", "/api/orders/{id}", "shop")
    },
    Operation {
        summary: "An invoice or credit note of the order, as HTML, to the order's buyer (the proofs GET /api/orders/{id} takes) or an admin",
        query: PROOF_QUERY,
        ok: (200, "HTML"),
        ..op("get", "/api/orders/{id}/documents/{doc}", "shop")
    },
    Operation {
        summary: "Reserve the order's stock and create the provider's checkout (as the order's buyer: X-Buyer-Token)",
        buyer: true,
        body: &[
            ("order_id", "string", true, "the order"),
            ("provider", "string", true, "stripe, razorpay or paypal"),
        ],
        ok: (
            201,
            "the payment, with the provider's order id and checkout URL",
        ),
        ..op("post", "/api/payments/create-order", "shop")
    },
    Operation {
        summary: "The browser's proof of payment, checked with the provider",
        body: &[
            ("order_id", "string", true, "the order"),
            ("provider", "string", true, "stripe, razorpay or paypal"),
            (
                "payload",
                "object",
                true,
                "what the provider's checkout returned",
            ),
        ],
        ok: (200, "the order's status after the check"),
        ..op("post", "/api/payments/verify", "shop")
    },
    Operation {
        summary: "Refund an order, whole or in part, through its provider",
        admin: true,
        body: &[
            ("order_id", "string", true, "the order"),
            ("amount_minor", "integer", false, "default: what is left"),
            ("reason", "string", false, "why"),
            (
                "restock",
                "boolean",
                false,
                "return the stock (default: refunds.restock)",
            ),
        ],
        ok: (201, "the refund"),
        ..op("post", "/api/payments/refund", "shop")
    },
    Operation {
        summary: "Exchange a paid order for the buyer's signed access cookie (HttpOnly, Secure, SameSite=Lax)",
        body: &[
            ("order_id", "string", true, "a paid order"),
            (
                "buyer_token",
                "string",
                false,
                "the order's buyer_token, from POST /api/orders; or, instead:",
            ),
            (
                "provider",
                "string",
                false,
                "with payload: the provider whose checkout sent the buyer back",
            ),
            (
                "payload",
                "object",
                false,
                "what it handed the page: Stripe {session_id}, Razorpay {razorpay_order_id, razorpay_payment_id, razorpay_signature}, PayPal {orderID}",
            ),
        ],
        ok: (
            200,
            "the access of the orders the cookie proves; Set-Cookie: fulfilld_access",
        ),
        ..op("post", "/api/entitlements/activate", "shop")
    },
    Operation {
        summary: "What the access cookie's buyer may use now (401 without a valid cookie)",
        ok: (200, "the buyer's access now"),
        ..op("get", "/api/entitlements/me", "shop")
    },
    Operation {
        summary: "Email a one-time sign-in link to an address that has access (202 whatever the address)",
        body: &[("email", "string", true, "the buyer's address")],
        ok: (202, "accepted; a link is emailed if the address has access"),
        ..op("post", "/api/entitlements/sign-in", "shop")
    },
    Operation {
        summary: "Exchange a sign-in link's token for the access cookie (once)",
        body: &[("token", "string", true, "the token from the emailed link")],
        ok: (200, "the buyer's access now; Set-Cookie: fulfilld_access"),
        ..op("post", "/api/entitlements/sign-in/confirm", "shop")
    },
    Operation {
        summary: "A provider's webhook, verified on the raw body and stored before the 200",
        ok: (200, "{\"received\": true, \"duplicate\": …}"),
        ..op("post", "/webhooks/{provider}", "webhooks")
    },
    Operation {
        summary: "The process is up",
        ..op("get", "/healthz", "health")
    },
    Operation {
        summary: "The store and the queue answer (503 naming what is down)",
        ..op("get", "/readyz", "health")
    },
    Operation {
        summary: "Counters and timings, Prometheus text format",
        ..op("get", "/metrics", "health")
    },
    Operation {
        summary: "This document",
        ..op("get", "/api/openapi.json", "health")
    },
    Operation {
        summary: "Put a product in the catalogue (create or replace)",
        admin: true,
        body: &[
            ("name", "string", true, "1-200 characters"),
            ("price_minor", "integer", true, "in minor units"),
            ("currency", "string", true, "ISO 4217"),
            ("stock", "integer", true, "on hand"),
        ],
        ..op("put", "/api/admin/skus/{sku}", ADMIN)
    },
    Operation {
        summary: "The audit log, newest first: who (the admin token's name, and the person X-Fulfilld-Actor named) did what to what, why, when, in which request",
        admin: true,
        query: &[
            ("actor", "string", false, "an admin token's name"),
            (
                "action",
                "string",
                false,
                "e.g. sku.put, order.refund, endpoint.read_secret",
            ),
            (
                "target",
                "string",
                false,
                "what was acted on (an order, step, endpoint or SKU id)",
            ),
            (
                "before_id",
                "integer",
                false,
                "the next page: entries older than this id",
            ),
            ("limit", "integer", false, "at most 1000 (default 100)"),
        ],
        ..op("get", "/api/admin/audit", ADMIN)
    },
    Operation {
        summary: "Each step kind's queue: waiting, pending, retrying, running, dead, done in the last hour, oldest due age",
        admin: true,
        ..op("get", "/api/admin/queues", ADMIN)
    },
    Operation {
        summary: "Per minute: steps done, step runs failed, webhooks received",
        admin: true,
        query: &[(
            "minutes",
            "integer",
            false,
            "how far back (default 60, at most 1440)",
        )],
        ..op("get", "/api/admin/activity", ADMIN)
    },
    Operation {
        summary: "The operators' dashboard (a web page; it asks for the admin token)",
        ok: (200, "HTML"),
        ..op("get", "/admin", "dashboard")
    },
    Operation {
        summary: "The dashboard's script",
        ok: (200, "JavaScript"),
        ..op("get", "/admin/app.js", "dashboard")
    },
    Operation {
        summary: "Steps, newest first",
        admin: true,
        query: &[
            KIND,
            ("status", "string", false, "a step status"),
            ("order_id", "string", false, "an order"),
            (
                "before_id",
                "integer",
                false,
                "the next page: steps with a smaller id",
            ),
            LIMIT,
        ],
        ..op("get", "/api/admin/steps", ADMIN)
    },
    Operation {
        summary: "Dead steps",
        admin: true,
        query: &[
            KIND,
            (
                "older_than_secs",
                "integer",
                false,
                "dead for at least this long",
            ),
            LIMIT,
        ],
        ..op("get", "/api/admin/dead-letters", ADMIN)
    },
    Operation {
        summary: "Retry every dead step that matches",
        admin: true,
        body: &[
            KIND,
            (
                "older_than_secs",
                "integer",
                false,
                "dead for at least this long",
            ),
            LIMIT,
            REASON,
        ],
        ..op("post", "/api/admin/dead-letters/retry", ADMIN)
    },
    Operation {
        summary: "Retry a dead step: its order's pipeline resumes where it stopped",
        admin: true,
        body: &[REASON],
        ..op("post", "/api/admin/steps/{id}/retry", ADMIN)
    },
    Operation {
        summary: "Give up on a dead step",
        admin: true,
        body: &[("reason", "string", true, "why (kept in the audit log)")],
        ..op("post", "/api/admin/steps/{id}/discard", ADMIN)
    },
    Operation {
        summary: "A step's runs that failed or were cut off",
        admin: true,
        ..op("get", "/api/admin/steps/{id}/attempts", ADMIN)
    },
    Operation {
        summary: "Drop every queued wake-up (the sweeper sends every due step again)",
        admin: true,
        body: &[REASON],
        ..op("post", "/api/admin/queue/purge", ADMIN)
    },
    Operation {
        summary: "Stored webhook events, newest first",
        admin: true,
        query: &[
            ("provider", "string", false, "one provider's"),
            (
                "parked",
                "boolean",
                false,
                "only those kept but not applied (the reason is the outcome)",
            ),
            LIMIT,
        ],
        ..op("get", "/api/admin/events", ADMIN)
    },
    Operation {
        summary: "Verify a stored event again and apply it again (a no-op if it was applied)",
        admin: true,
        body: &[("dry_run", "boolean", false, "only say what it would change")],
        ..op("post", "/api/admin/events/{id}/replay", ADMIN)
    },
    Operation {
        summary: "Compare the providers' payments since a time with the store",
        admin: true,
        body: &[("since", "string", true, "an age (24h, 7d) or Unix seconds")],
        ..op("post", "/api/admin/reconcile", ADMIN)
    },
    Operation {
        summary: "Past reconciliations and their reports",
        admin: true,
        ..op("get", "/api/admin/reconciliations", ADMIN)
    },
    Operation {
        summary: "Add an endpoint of the merchant's for signed webhooks; answers its secret, this once",
        admin: true,
        body: &[
            (
                "url",
                "string",
                true,
                "http(s) URL (non-public addresses need merchant_webhooks.allow_private)",
            ),
            (
                "event_types",
                "array",
                true,
                "order.paid, order.fulfilled, order.payment_failed, order.refunded, order.refund_failed, order.needs_review, step.dead, or [\"*\"]",
            ),
            ("description", "string", false, "for people"),
        ],
        ok: (201, "the endpoint, with its secret"),
        ..op("post", "/api/admin/webhook-endpoints", ADMIN)
    },
    Operation {
        summary: "The merchant's webhook endpoints (without secrets)",
        admin: true,
        ..op("get", "/api/admin/webhook-endpoints", ADMIN)
    },
    Operation {
        summary: "One webhook endpoint (without secrets)",
        admin: true,
        ..op("get", "/api/admin/webhook-endpoints/{id}", ADMIN)
    },
    Operation {
        summary: "Change a webhook endpoint; enabled: true enables it again, its failures forgotten",
        admin: true,
        body: &[
            ("url", "string", false, "http(s) URL"),
            ("event_types", "array", false, "as when added"),
            ("description", "string", false, "for people"),
            ("enabled", "boolean", false, "send to it or not"),
        ],
        ..op("patch", "/api/admin/webhook-endpoints/{id}", ADMIN)
    },
    Operation {
        summary: "The secrets that sign an endpoint's webhooks now",
        admin: true,
        ..op("get", "/api/admin/webhook-endpoints/{id}/secret", ADMIN)
    },
    Operation {
        summary: "A new signing secret; the old one also signs until the grace ends",
        admin: true,
        body: &[(
            "grace",
            "string",
            false,
            "how long the old secret still signs (default 24h)",
        )],
        ..op(
            "post",
            "/api/admin/webhook-endpoints/{id}/rotate-secret",
            ADMIN,
        )
    },
    Operation {
        summary: "Webhook deliveries to the merchant, newest first",
        admin: true,
        query: &[
            ("endpoint_id", "string", false, "one endpoint's"),
            (
                "status",
                "string",
                false,
                "pending, sending, delivered or dead",
            ),
            ("order_id", "string", false, "about one order"),
            ("before_id", "integer", false, "the next page"),
            LIMIT,
        ],
        ..op("get", "/api/admin/webhook-deliveries", ADMIN)
    },
    Operation {
        summary: "One delivery: its payload and every attempt (status, latency, the answer's start)",
        admin: true,
        ..op("get", "/api/admin/webhook-deliveries/{id}", ADMIN)
    },
    Operation {
        summary: "Send a dead delivery again now, with the whole schedule ahead of it",
        admin: true,
        body: &[REASON],
        ..op("post", "/api/admin/webhook-deliveries/{id}/retry", ADMIN)
    },
    Operation {
        summary: "Orders, newest first, by buyer (whatever the case) and status",
        admin: true,
        query: &[
            ("email", "string", false, "the buyer's address"),
            ("status", "string", false, "an order status"),
            (
                "before_id",
                "string",
                false,
                "the next page: orders older than this one",
            ),
            LIMIT,
        ],
        ok: (200, "{\"orders\": […], \"next_before_id\"}"),
        ..op("get", "/api/admin/orders", ADMIN)
    },
    Operation {
        summary: "Everything about an order, and its timeline",
        admin: true,
        ..op("get", "/api/admin/orders/{id}", ADMIN)
    },
    Operation {
        summary: "Close an order that needs review: its dead steps discarded, its held stock released",
        admin: true,
        body: &[("reason", "string", true, "why (kept in the audit log)")],
        ..op("post", "/api/admin/orders/{id}/resolve", ADMIN)
    },
    Operation {
        summary: "Read the order's latest payment from its provider again; its answer decides",
        admin: true,
        body: &[REASON],
        ..op("post", "/api/admin/orders/{id}/recheck-payment", ADMIN)
    },
];

fn schema(fields: &[Field]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|(name, ty, _, what)| {
            (
                (*name).to_owned(),
                json!({ "type": ty, "description": what }),
            )
        })
        .collect();
    let required: Vec<&str> = fields.iter().filter(|f| f.2).map(|f| f.0).collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

/// What a call needing the buyer token answers without it, or with another order's.
fn responses_for_buyer(responses: &mut Value) {
    responses["401"] = json!({ "description": "no X-Buyer-Token", "content": error_content() });
    responses["403"] = json!({ "description": "X-Buyer-Token is not this order's (or the order does not exist)", "content": error_content() });
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPERATIONS {
        let mut parameters: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        parameters.extend(o.query.iter().map(|(name, ty, required, what)| {
            json!({ "name": name, "in": "query", "required": required,
                    "description": what, "schema": { "type": ty } })
        }));
        let mut responses = json!({
            o.ok.0.to_string(): { "description": o.ok.1 },
            "422": { "description": "a field is wrong", "content": error_content() },
        });
        let limited = (o.method == "post" && super::limits::PUBLIC_POSTS.contains(&o.path))
            || o.path == "/webhooks/{provider}";
        if limited {
            responses["429"] = json!({
                "description": "too many from this client (for webhooks: too many that failed verification); see Retry-After",
                "content": error_content(),
            });
        }
        if o.admin {
            responses["401"] =
                json!({ "description": "no or wrong admin token", "content": error_content() });
            responses["403"] = json!({ "description": "the admin API is off on this process", "content": error_content() });
        }
        let mut operation = json!({
            "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '-', '.'], "_")),
            "tags": [o.tag],
            "summary": o.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if !o.body.is_empty() {
            operation["requestBody"] = json!({
                "required": o.body.iter().any(|f| f.2),
                "content": { "application/json": { "schema": schema(o.body) } },
            });
        }
        if o.admin {
            operation["security"] = json!([{ "admin": [] }]);
        }
        if o.buyer {
            operation["security"] = json!([{ "buyer": [] }]);
            responses_for_buyer(&mut operation["responses"]);
        }
        let item = paths
            .entry(o.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fulfilld",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Payment intake and fulfilment: provider webhooks, the shop's API, and the admin API.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "admin": { "type": "http", "scheme": "bearer" },
                "buyer": { "type": "apiKey", "in": "header", "name": "X-Buyer-Token",
                           "description": "the buyer_token POST /api/orders answered" },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "field": { "type": "string" },
                    }, "required": ["code", "message"] } },
                },
            },
        },
    })
}

fn error_content() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
}

pub fn router() -> Router<Arc<Engine>> {
    Router::new().route("/api/openapi.json", get(|| async { Json(document()) }))
}
