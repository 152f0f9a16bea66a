//! The shop API's answers to bad input: the right status, a stable code, and the field.

use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Backend, spawn};
use crate::on_both_stores;

on_both_stores!(
    bad_input_names_the_field,
    admin_needs_the_token,
    openapi_document_is_the_routes,
);

async fn bad_input_names_the_field(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    app.http
        .put(format!("{}/api/admin/skus/EURO", app.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Euro thing", "price_minor": 100, "currency": "eur", "stock": 1}))
        .send()
        .await
        .expect("put");
    let cases = [
        (
            json!({"customer_email": "a@b.com", "items": [{"sku": "NOPE", "qty": 1}]}),
            422,
            "items[0].sku",
        ),
        (
            json!({"customer_email": "a@b.com", "items": [{"sku": "SEAT", "qty": 0}]}),
            422,
            "items[0].qty",
        ),
        (
            json!({"customer_email": "a@b.com", "items": [{"sku": "SEAT", "qty": 1}, {"sku": "SEAT", "qty": -2}]}),
            422,
            "items[1].qty",
        ),
        // The cap holds for the merged line: two lines of 10,000 are not one of 20,000.
        (
            json!({"customer_email": "a@b.com", "items": [{"sku": "SEAT", "qty": 10000}, {"sku": "SEAT", "qty": 10000}]}),
            422,
            "items[0].qty",
        ),
        (
            json!({"customer_email": "not-an-email", "items": [{"sku": "SEAT", "qty": 1}]}),
            422,
            "customer_email",
        ),
        // Addresses the mailer would refuse, or read as another, after payment.
        (
            json!({"customer_email": "buyer@[127.0.0.1]", "items": [{"sku": "SEAT", "qty": 1}]}),
            422,
            "customer_email",
        ),
        (
            json!({"customer_email": "\"buyer\"@example.com", "items": [{"sku": "SEAT", "qty": 1}]}),
            422,
            "customer_email",
        ),
        (
            json!({"customer_email": "a@b.com", "items": []}),
            422,
            "items",
        ),
        (
            json!({"customer_email": "a@b.com", "items": [{"sku": "SEAT", "qty": 1}, {"sku": "EURO", "qty": 1}]}),
            422,
            "items[1].sku",
        ),
        (
            json!({"items": [{"sku": "SEAT", "qty": 1}]}),
            422,
            "customer_email",
        ),
    ];
    for (body, status, field) in cases {
        let r = app
            .http
            .post(format!("{}/api/orders", app.url))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), status, "{body}");
        let e: Value = r.json().await.expect("json");
        let named = e["error"]["field"] == field
            || e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field));
        assert!(named, "{body} → {e}");
    }
    let r = app
        .http
        .post(format!("{}/api/orders", app.url))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);

    let r = app
        .http
        .get(format!(
            "{}/api/orders/ord_00000000000000000000000000",
            app.url
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .get(format!("{}/api/orders/nonsense", app.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["field"], "id");

    for (body, status, code) in [
        // Opening a checkout takes the order's buyer token, which nobody has for an order
        // that does not exist.
        (
            json!({"order_id": "ord_00000000000000000000000000", "provider": "stripe"}),
            401,
            "buyer_token_required",
        ),
        (
            json!({"order_id": "ord_00000000000000000000000000", "provider": "square"}),
            422,
            "invalid_field",
        ),
        (
            json!({"order_id": "x", "provider": "stripe"}),
            422,
            "invalid_field",
        ),
    ] {
        let r = app
            .http
            .post(format!("{}/api/payments/create-order", app.url))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), status, "{body}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], code, "{body} → {e}");
    }
    let r = app
        .http
        .post(format!("{}/webhooks/square", app.url))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "unknown_provider");
    app.finish().await;
}

async fn admin_needs_the_token(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let body = json!({"name": "Seat", "price_minor": 100, "currency": "usd", "stock": 1});
    let url = format!("{}/api/admin/skus/SEAT", app.url);
    let r = app.http.put(&url).json(&body).send().await.expect("put");
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .put(&url)
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "unauthorized");
    assert!(
        app.store.get_sku("SEAT").await.expect("query").is_none(),
        "nothing written"
    );
    for (bad, field) in [
        (
            json!({"name": "", "price_minor": 1, "currency": "usd", "stock": 1}),
            "name",
        ),
        (
            json!({"name": "x", "price_minor": -1, "currency": "usd", "stock": 1}),
            "price_minor",
        ),
        (
            json!({"name": "x", "price_minor": 1, "currency": "dollars", "stock": 1}),
            "currency",
        ),
        (
            json!({"name": "x", "price_minor": 1, "currency": "usd", "stock": -1}),
            "stock",
        ),
    ] {
        let r = app
            .http
            .put(&url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&bad)
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 422, "{bad}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["field"], field, "{bad} → {e}");
    }
    // Every admin route: 401 without the token and with a wrong one, whatever else is wrong.
    for (method, path) in [
        ("GET", "/api/admin/dead-letters"),
        ("POST", "/api/admin/dead-letters/retry"),
        ("POST", "/api/admin/steps/1/retry"),
        ("POST", "/api/admin/steps/x/discard"),
        ("GET", "/api/admin/steps/1/attempts"),
        ("POST", "/api/admin/queue/purge"),
        ("GET", "/api/admin/events"),
        ("POST", "/api/admin/events/1/replay"),
        ("POST", "/api/admin/reconcile"),
        ("GET", "/api/admin/reconciliations"),
        ("POST", "/api/payments/refund"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        for token in [None, Some("wrong")] {
            let mut req = app.http.request(m.clone(), format!("{}{path}", app.url));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.json(&json!({})).send().await.expect(path);
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
        }
    }
    let (status, e) = app.admin("POST", "/api/admin/steps/x/retry", None).await;
    assert_eq!((status, e["error"]["field"].clone()), (422, json!("id")));
    let (status, e) = app
        .admin("GET", "/api/admin/dead-letters?limit=0", None)
        .await;
    assert_eq!((status, e["error"]["field"].clone()), (422, json!("limit")));
    app.finish().await;
}

/// `path` with each `{param}` filled with a value of the right shape.
pub fn concrete(path: &str) -> String {
    path.replace("{provider}", "stripe")
        .replace("{sku}", "SEAT")
        .replace("{id}", "1")
}

/// Every `.route("PATH", METHOD(…))` in the intake's and the admin's source: (method,
/// path). The admin's routes that are not absolute (`/api/…`, the dashboard's `/admin…`) are
/// nested under `/api/admin`, as `admin::router` nests them.
fn routed() -> std::collections::BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = std::collections::BTreeSet::new();
    let files = ["src/intake", "src/admin"].into_iter().flat_map(|dir| {
        std::fs::read_dir(root.join(dir))
            .expect(dir)
            .map(move |entry| (dir, entry.expect("entry").path()))
    });
    for (dir, path) in files {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let nested = dir == "src/admin";
        let text = std::fs::read_to_string(&path).expect("source");
        for (i, _) in text.match_indices(".route(") {
            let rest = text[i + 7..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let Some(end) = rest.find('"') else { continue };
            let route = &rest[..end];
            let after = rest[end + 1..]
                .trim_start()
                .trim_start_matches(',')
                .trim_start();
            let method: String = after
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            assert!(
                !method.is_empty(),
                "{}: route {route} without a method",
                path.display()
            );
            let route = if nested && !route.starts_with("/api/") && !route.starts_with("/admin") {
                format!("/api/admin{route}")
            } else {
                route.to_owned()
            };
            found.insert((method, route));
        }
    }
    found
}

/// The OpenAPI document lists exactly the routes the routers serve (read from their
/// source), and every operation it lists answers on a live engine (none is a routing 404 or
/// a 405).
async fn openapi_document_is_the_routes(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let r = app
        .http
        .get(format!("{}/api/openapi.json", app.url))
        .send()
        .await
        .expect("openapi");
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            documented.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(documented, routed(), "the document and the routers differ");
    for (method, path) in &documented {
        let r = app
            .http
            .request(
                method.to_ascii_uppercase().parse().expect("method"),
                format!("{}{}", app.url, concrete(path)),
            )
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("call");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert!(
            status != 405 && !(status == 404 && body.is_empty()),
            "{method} {path}: {status} {body}"
        );
    }
    app.finish().await;
}
