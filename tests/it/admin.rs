//! The admin API's reads and the `fulfilld admin` CLI over it: the token on every admin
//! route, each step kind's queue as the store holds it, steps by filter, an order's whole
//! record and timeline, and the CLI's tables and `--json` for each.

use fulfilld::clock::now_ms;
use fulfilld::store::overview::KindQueue;
use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, Backend, TestApp, s, spawn, spawn_bare};
use crate::on_both_stores;
use crate::step_batch::two_paid_pipelines;

on_both_stores!(
    every_admin_route_needs_the_token,
    admin_is_off_without_a_token,
    queue_overview_counts_each_state_per_kind,
    an_order_record_holds_its_whole_story,
    manual_actions_on_an_order_are_audited,
    cli_prints_tables_and_json,
    orders_are_found_by_buyer_and_status,
);

/// Every admin route (as the OpenAPI document lists them, which a test holds to the
/// routers), with its path parameters filled in.
fn admin_routes() -> Vec<(&'static str, String)> {
    fulfilld::intake::openapi::OPERATIONS
        .iter()
        .filter(|o| o.admin)
        .map(|o| (o.method, crate::api::concrete(o.path)))
        .collect()
}

/// `method path` at `base` with `Authorization: Bearer token` (none: no header) and a body
/// that would do for any route; the status and the error code.
async fn call(
    app: &TestApp,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut r = app.http.request(
        method.to_ascii_uppercase().parse().expect("method"),
        format!("{base}{path}"),
    );
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let r = r
        .header("content-type", "application/json")
        .body(r#"{"reason": "x", "since": "1h", "name": "n", "price_minor": 1, "currency": "usd", "stock": 1}"#)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].clone())
}

async fn every_admin_route_needs_the_token(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let routes = admin_routes();
    assert!(routes.len() >= 14, "{routes:?}");
    for (method, path) in &routes {
        for token in [None, Some("wrong-token"), Some("")] {
            assert_eq!(
                call(&app, &app.url, method, path, token).await,
                (401, json!("unauthorized")),
                "{method} {path} with token {token:?}"
            );
        }
    }
    // Nothing was done on the way.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM admin_actions WHERE actor <> $1", "")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM skus WHERE sku = $1", "SEAT")
            .await,
        0
    );
    // The right token opens them (one read as a witness).
    let (status, _) = app.admin("GET", "/api/admin/queues", None).await;
    assert_eq!(status, 200);
    app.finish().await;
}

/// An intake with no token configured, and a serve told not to make one: every admin
/// route answers 403 admin_off, whatever token comes; nothing is generated.
async fn admin_is_off_without_a_token(backend: Backend) {
    let app = spawn_bare(backend, &[]).await;
    let intake = app
        .start_role("intake", &[], None, &[("FULFILLD__ADMIN__TOKEN", "")])
        .await;
    let serve = app
        .start_role(
            "serve",
            &[],
            None,
            &[
                ("FULFILLD__ADMIN__TOKEN", ""),
                ("FULFILLD__ADMIN__GENERATE_TOKEN", "false"),
            ],
        )
        .await;
    for p in [&intake, &serve] {
        for (method, path) in admin_routes() {
            for token in [None, Some(ADMIN_TOKEN), Some("")] {
                assert_eq!(
                    call(&app, &p.url, method, &path, token).await,
                    (403, json!("admin_off")),
                    "{method} {path} with token {token:?}"
                );
            }
        }
        assert!(p.log_text().contains("admin API off"), "{}", p.log_text());
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM skus WHERE sku <> $1", "")
            .await,
        0
    );
    assert!(
        !app.dir().join("data/admin-token").exists(),
        "no token was generated"
    );
    app.finish().await;
}

/// On a store no worker runs on, steps are put in every state a queue can show; the
/// overview counts each where it belongs.
async fn queue_overview_counts_each_state_per_kind(backend: Backend) {
    let app = spawn_bare(backend, &[]).await;
    let store = &app.store;
    let [a, b] = two_paid_pipelines(store).await;
    let now = now_ms();
    let pool = &store.pool;
    let set = |id: i64, sql: &'static str| async move {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE steps SET {sql} WHERE id = $1"
        )))
        .bind(id)
        .execute(pool)
        .await
        .expect("update step");
    };
    // confirm_capture: a's due for 7 s and never run; b's run twice, failed, retries later.
    sqlx::query("UPDATE steps SET next_run_at = $1 WHERE id = $2")
        .bind(now - 7_000)
        .bind(a[0])
        .execute(&store.pool)
        .await
        .expect("due");
    set(
        b[0],
        "attempts = 2, attempt_base = 0, next_run_at = 99999999999999",
    )
    .await;
    // deduct_stock: one running, one dead.
    set(a[1], "status = 'running', attempts = 1").await;
    set(b[1], "status = 'dead', attempts = 5").await;
    // issue_invoice: done now, and done long ago (not in the last hour).
    sqlx::query("UPDATE steps SET status = 'done', updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(a[2])
        .execute(&store.pool)
        .await
        .expect("done");
    set(b[2], "status = 'done', updated_at = 0").await;
    // send_receipt and grant_entitlement: both orders' wait.

    let got = store.queue_overview().await.expect("overview");
    let q = |kind: &str| -> KindQueue {
        got.iter()
            .find(|q| q.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {got:?}"))
    };
    let confirm = q("confirm_capture");
    assert!(
        (7..60).contains(&confirm.oldest_due_age_s),
        "due 7 s ago: {confirm:?}"
    );
    assert_eq!(
        confirm,
        KindQueue {
            kind: "confirm_capture".into(),
            pending: 1,
            retrying: 1,
            oldest_due_age_s: confirm.oldest_due_age_s,
            ..Default::default()
        }
    );
    assert_eq!(
        q("deduct_stock"),
        KindQueue {
            kind: "deduct_stock".into(),
            running: 1,
            dead: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        q("issue_invoice"),
        KindQueue {
            kind: "issue_invoice".into(),
            done_last_hour: 1,
            ..Default::default()
        }
    );
    for kind in ["send_receipt", "grant_entitlement"] {
        assert_eq!(
            q(kind),
            KindQueue {
                kind: kind.into(),
                waiting: 2,
                ..Default::default()
            }
        );
    }
    // Every kind is listed, in pipeline order, also those with no steps.
    let kinds: Vec<&str> = got.iter().map(|q| q.kind.as_str()).collect();
    let all: Vec<&str> = jobs::StepKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, all);
    assert_eq!(
        q("refund_payment"),
        KindQueue {
            kind: "refund_payment".into(),
            ..Default::default()
        }
    );
    app.finish().await;
}

/// A fulfilled order and one stopped by an amount mismatch, through the real pipeline.
/// Returns (fulfilled, dead) order ids.
pub(crate) async fn fulfilled_and_dead(app: &TestApp) -> (String, String) {
    app.put_sku("SEAT", 1000, 5).await;
    let mut ids = Vec::new();
    for (email, paid) in [("fine@example.com", 1000), ("short@example.com", 999)] {
        let order = app
            .create_order(email, json!([{"sku": "SEAT", "qty": 1}]))
            .await;
        let id = s(&order["id"]).to_owned();
        let co = app.checkout(&id).await;
        app.pay(s(&co["provider_order_id"]), json!({"amount_total": paid}))
            .await;
        ids.push(id);
    }
    app.wait_for(&ids[0], &["fulfilled"]).await;
    app.wait_for(&ids[1], &["needs_review"]).await;
    (ids.remove(0), ids.remove(0))
}

async fn an_order_record_holds_its_whole_story(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let (fine, dead) = fulfilled_and_dead(&app).await;

    // The queue overview through the API is the store's.
    let (status, queues) = app.admin("GET", "/api/admin/queues", None).await;
    assert_eq!(status, 200, "{queues}");
    let from_store = app.store.queue_overview().await.expect("overview");
    assert_eq!(
        queues["queues"],
        serde_json::to_value(&from_store).expect("json")
    );
    let confirm = &queues["queues"][0];
    assert_eq!(
        (
            &confirm["kind"],
            &confirm["dead"],
            &confirm["done_last_hour"]
        ),
        (&json!("confirm_capture"), &json!(1), &json!(1)),
        "{queues:#}"
    );

    // The last hour per minute: every done step, failed run and webhook is in one minute.
    let (status, act) = app
        .admin("GET", "/api/admin/activity?minutes=60", None)
        .await;
    assert_eq!(status, 200, "{act}");
    let minutes = act["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    let sum = |k: &str| {
        minutes
            .iter()
            .map(|m| m[k].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let count = |sql: &'static str| app.count(sql, "");
    assert_eq!(
        sum("steps_done"),
        count("SELECT COUNT(*) FROM steps WHERE status = 'done' AND kind <> $1").await
    );
    assert_eq!(
        sum("steps_failed"),
        count("SELECT COUNT(*) FROM step_attempts WHERE outcome <> $1").await
    );
    assert_eq!(
        sum("webhooks"),
        count("SELECT COUNT(*) FROM webhook_events WHERE provider <> $1").await
    );
    assert!(sum("steps_done") >= 5 && sum("steps_failed") >= 1, "{act}");
    let (status, e) = app
        .admin("GET", "/api/admin/activity?minutes=0", None)
        .await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "minutes"));

    // The dashboard: its own script only, nothing from elsewhere, never framed.
    let r = app
        .http
        .get(format!("{}/admin", app.url))
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = r.text().await.expect("html");
    let script = app
        .http
        .get(format!("{}/admin/app.js", app.url))
        .send()
        .await
        .expect("script")
        .text()
        .await
        .expect("js");
    for text in [&page, &script] {
        // The SVG namespace is a name, not something fetched.
        let text = text.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "no outside URL"
        );
    }
    assert!(page.contains(r#"<script src="/admin/app.js">"#));
    assert!(
        !script.contains("innerHTML"),
        "server values go in as text only"
    );

    let (status, r) = app
        .admin("GET", &format!("/api/admin/orders/{fine}"), None)
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["order"]["status"], "fulfilled");
    let len = |k: &str| r[k].as_array().map_or(0, Vec::len);
    assert_eq!(len("payments"), 1, "{r:#}");
    assert_eq!(len("steps"), 5);
    assert!(
        r["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|st| st["status"] == "done")
    );
    assert_eq!(len("emails"), 1);
    assert_eq!(r["emails"][0]["kind"], "receipt");
    assert_eq!(len("invoices"), 1);
    assert_eq!(len("entitlements"), 1);
    assert_eq!(len("ledger"), 3);
    assert!(len("events") >= 1);
    assert_eq!(r["events"][0]["event_type"], "checkout.session.completed");
    assert!(
        r["invoices"][0].get("html").is_none(),
        "no HTML in the record"
    );
    // The timeline: oldest first, from the order's creation to its last step.
    let timeline = r["timeline"].as_array().expect("timeline");
    let at: Vec<i64> = timeline
        .iter()
        .map(|m| m["at"].as_i64().expect("at"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{timeline:#?}");
    assert_eq!(timeline[0]["what"], "order");
    for what in [
        "payment",
        "event",
        "step",
        "email",
        "invoice",
        "entitlement",
    ] {
        assert!(
            timeline.iter().any(|m| m["what"] == what),
            "no {what} in {timeline:#?}"
        );
    }

    // The stopped order: its dead step with the error, and an admin's retry in its record.
    let (_, d) = app
        .admin("GET", &format!("/api/admin/orders/{dead}"), None)
        .await;
    assert_eq!(d["order"]["status"], "needs_review");
    let step = &d["steps"][0];
    assert_eq!(
        (&step["kind"], &step["status"]),
        (&json!("confirm_capture"), &json!("dead"))
    );
    assert!(s(&step["last_error"]).contains("amount mismatch"), "{step}");
    let (status, _) = app
        .admin(
            "POST",
            &format!("/api/admin/steps/{}/retry", step["id"]),
            Some(json!({"reason": "looking again"})),
        )
        .await;
    assert_eq!(status, 200);
    // The provider still says 999: the step runs once more and is dead again.
    app.wait_until(&dead, "dead again after the retry", |o| {
        o["steps"][0]["status"] == "dead" && o["steps"][0]["attempts"] == 2
    })
    .await;
    let (_, d) = app
        .admin("GET", &format!("/api/admin/orders/{dead}"), None)
        .await;
    let actions = d["admin_actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{d:#}");
    assert_eq!(
        (&actions[0]["action"], &actions[0]["reason"]),
        (&json!("step.retry"), &json!("looking again"))
    );
    assert!(
        d["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["what"] == "admin")
    );
    // Its attempts: the failed run after the retry is recorded.
    assert!(
        !d["attempts"].as_array().expect("attempts").is_empty(),
        "{d:#}"
    );

    // Steps by filter, newest first, a page at a time.
    let (_, page) = app
        .admin(
            "GET",
            &format!("/api/admin/steps?order_id={fine}&limit=3"),
            None,
        )
        .await;
    let ids: Vec<i64> = page["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|x| x["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let (_, rest) = app
        .admin(
            "GET",
            &format!(
                "/api/admin/steps?order_id={fine}&limit=3&before_id={}",
                page["next_before_id"]
            ),
            None,
        )
        .await;
    assert_eq!(rest["steps"].as_array().map(Vec::len), Some(2), "{rest:#}");
    assert_eq!(rest["next_before_id"], Value::Null);
    let (_, dead_steps) = app
        .admin(
            "GET",
            "/api/admin/steps?status=dead&kind=confirm_capture",
            None,
        )
        .await;
    assert_eq!(dead_steps["steps"].as_array().map(Vec::len), Some(1));
    assert_eq!(dead_steps["steps"][0]["order_id"], json!(dead));
    for (query, field) in [
        ("status=asleep", "status"),
        ("kind=nope", "kind"),
        ("limit=0", "limit"),
        ("before_id=0", "before_id"),
    ] {
        let (status, e) = app
            .admin("GET", &format!("/api/admin/steps?{query}"), None)
            .await;
        assert_eq!(
            (status, s(&e["error"]["field"])),
            (422, field),
            "{query}: {e}"
        );
    }
    // A well-formed id of no order is 404; a malformed one says what an id looks like.
    let last = if fine.ends_with('0') { "1" } else { "0" };
    let unknown = format!("{}{last}", &fine[..fine.len() - 1]);
    let (status, e) = app
        .admin("GET", &format!("/api/admin/orders/{unknown}"), None)
        .await;
    assert_eq!((status, s(&e["error"]["code"])), (404, "not_found"), "{e}");
    let (status, e) = app.admin("GET", "/api/admin/orders/nobody", None).await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "id"), "{e}");
    app.finish().await;
}

/// `fulfilld admin …` as an operator runs it: its stdout, after checking it succeeded.
pub async fn cli(app: &TestApp, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(["admin", "--url", &app.url])
        .args(args)
        .env("FULFILLD__ADMIN__TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("fulfilld admin");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

async fn cli_prints_tables_and_json(backend: Backend) {
    let app = spawn(backend, &[]).await;
    let (fine, dead) = fulfilled_and_dead(&app).await;

    let text = cli(&app, &["queues"]).await;
    let confirm = text
        .lines()
        .find(|l| l.starts_with("confirm_capture"))
        .unwrap_or_else(|| panic!("{text}"));
    // KIND WAITING PENDING RETRYING RUNNING DEAD DONE-1H OLDEST
    let cols: Vec<&str> = confirm.split_whitespace().collect();
    assert_eq!(
        cols,
        ["confirm_capture", "0", "0", "0", "0", "1", "1", "0"],
        "{text}"
    );
    let json: Value = serde_json::from_str(&cli(&app, &["--json", "queues"]).await).expect("json");
    assert_eq!(json["queues"][0]["dead"], 1);

    let text = cli(&app, &["dead", "list"]).await;
    assert!(
        text.contains(&dead) && text.contains("amount mismatch"),
        "{text}"
    );
    let step_id = app
        .store
        .dead_steps(&fulfilld::store::dead_letters::Filter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("dead")[0]
        .id;

    let text = cli(&app, &["order", "show", &fine]).await;
    assert!(
        text.starts_with(&format!("order {fine}  fulfilled")),
        "{text}"
    );
    for kind in ["confirm_capture", "grant_entitlement", "receipt"] {
        assert!(text.contains(kind), "no {kind} in {text}");
    }
    let json: Value =
        serde_json::from_str(&cli(&app, &["--json", "order", "show", &fine]).await).expect("json");
    assert_eq!(json["order"]["id"], json!(fine));

    // A partial refund from the CLI, twice with the same key: one refund.
    let args = [
        "order",
        "refund",
        &fine,
        "--amount",
        "100",
        "--reason",
        "late",
        "--key",
        "cli-refund-1",
    ];
    let first = cli(&app, &args).await;
    assert!(
        first.starts_with("refund rfd_") && first.contains("of 100 USD"),
        "{first}"
    );
    assert_eq!(cli(&app, &args).await, first, "the same key refunds once");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM refunds WHERE order_id = $1", &fine)
            .await,
        1
    );

    let text = cli(&app, &["steps", "--order", &dead, "--status", "waiting"]).await;
    assert_eq!(
        text.lines().filter(|l| l.contains(&dead)).count(),
        4,
        "{text}"
    );

    let text = cli(&app, &["events", "list"]).await;
    assert!(text.contains("checkout.session.completed"), "{text}");
    let event_id = app
        .count(
            "SELECT MIN(id) FROM webhook_events WHERE provider = $1",
            "stripe",
        )
        .await;
    let text = cli(
        &app,
        &["events", "replay", &event_id.to_string(), "--dry-run"],
    )
    .await;
    assert!(
        text.contains("(dry run)") && text.contains("nothing changed"),
        "{text}"
    );

    let text = cli(
        &app,
        &[
            "dead",
            "discard",
            &step_id.to_string(),
            "--reason",
            "refunded by phone",
        ],
    )
    .await;
    assert_eq!(text.trim(), format!("discarded step {step_id}"));
    let text = cli(&app, &["dead", "list"]).await;
    assert_eq!(text.trim(), "nothing to show");
    let text = cli(&app, &["dead", "retry", "--all"]).await;
    assert!(text.starts_with("retried 0 dead step(s)"), "{text}");

    // A bad filter is the API's clear error, and a failure exit.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(["admin", "--url", &app.url, "steps", "--status", "asleep"])
        .env("FULFILLD__ADMIN__TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("fulfilld admin");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422") && err.contains("asleep"), "{err}");
    app.finish().await;
}

/// Resolving the stopped order discards its dead step, releases its stock and closes it;
/// rechecking the fulfilled one asks the provider again (which agrees); refunding it is
/// recorded too. Every one is in the order's record with who and why; bad requests change
/// nothing.
const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";
const AUDITOR_TOKEN: &str = "auditor-token-0123456789abcdef";

/// Named admin tokens: Alice may operate, the auditor may only read.
const NAMED_ADMINS: [(&str, &str); 4] = [
    ("FULFILLD__ADMIN__TOKENS__ALICE__TOKEN", ALICE_TOKEN),
    ("FULFILLD__ADMIN__TOKENS__ALICE__ROLE", "operate"),
    ("FULFILLD__ADMIN__TOKENS__AUDITOR__TOKEN", AUDITOR_TOKEN),
    ("FULFILLD__ADMIN__TOKENS__AUDITOR__ROLE", "read"),
];

/// Every manual action is audited under the name of the token that made it (Alice's), with
/// the person the caller named beside it as its word only.
async fn manual_actions_on_an_order_are_audited(backend: Backend) {
    let app = spawn(backend, &NAMED_ADMINS).await;
    let (fine, dead) = fulfilled_and_dead(&app).await;
    let as_alice = |method: &'static str, path: String, body: Value| {
        let app = &app;
        async move {
            let r = app
                .http
                .request(
                    method.parse().expect("method"),
                    format!("{}{path}", app.url),
                )
                .bearer_auth(ALICE_TOKEN)
                .header("x-fulfilld-actor", "Alice Liddell")
                .json(&body)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(
        app.stock("SEAT").await,
        (4, 1),
        "the stopped order holds a seat"
    );
    let products: Value = app
        .http
        .get(format!("{}/api/products", app.url))
        .send()
        .await
        .expect("products")
        .json()
        .await
        .expect("json");
    assert_eq!(
        products["products"],
        json!([{"sku": "SEAT", "name": "SEAT item", "price_minor": 1000, "currency": "USD", "decimals": 2, "available": 3}]),
        "what a shop's page lists: on hand less held"
    );

    // Resolve: a reason is required; only an order that needs review.
    let (status, e) = as_alice(
        "POST",
        format!("/api/admin/orders/{dead}/resolve"),
        json!({}),
    )
    .await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "reason"), "{e}");
    let (status, e) = as_alice(
        "POST",
        format!("/api/admin/orders/{fine}/resolve"),
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(
        (status, s(&e["error"]["code"])),
        (409, "not_in_review"),
        "{e}"
    );
    let (status, r) = as_alice(
        "POST",
        format!("/api/admin/orders/{dead}/resolve"),
        json!({"reason": "paid the rest by bank transfer; shipped by hand"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["discarded_steps"], 1);
    let o = app.order(&dead).await;
    assert_eq!(
        (&o["status"], &o["waiting_on"]),
        (&json!("resolved"), &Value::Null),
        "{o:#}"
    );
    assert_eq!(o["steps"][0]["status"], "discarded");
    assert_eq!(app.stock("SEAT").await, (4, 0), "its seat is released");
    let (_, dead_now) = app.admin("GET", "/api/admin/dead-letters", None).await;
    assert_eq!(dead_now["dead"], json!([]));
    let (status, _) = as_alice(
        "POST",
        format!("/api/admin/orders/{dead}/resolve"),
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(status, 409, "resolved once");

    // Recheck: the provider is asked again and agrees; nothing else moves.
    let (status, r) = as_alice(
        "POST",
        format!("/api/admin/orders/{fine}/recheck-payment"),
        json!({"reason": "buyer says the card was charged twice"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let o = app
        .wait_until(&fine, "the recheck ran", |o| {
            o["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|st| st["kind"] == "reconcile_payment" && st["status"] == "done")
        })
        .await;
    assert_eq!(o["status"], "fulfilled");
    let recheck = o["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|st| st["kind"] == "reconcile_payment")
        .expect("recheck step");
    assert!(s(&recheck["outcome"]).contains("agrees"), "{recheck}");

    // A refund by an admin is recorded as one of theirs.
    let (status, r) = as_alice(
        "POST",
        "/api/payments/refund".to_owned(),
        json!({"order_id": fine, "amount_minor": 300, "reason": "late delivery"}),
    )
    .await;
    assert_eq!(status, 201, "{r}");

    let (_, record) = app
        .admin("GET", &format!("/api/admin/orders/{fine}"), None)
        .await;
    let actions: Vec<(String, String, String)> = record["admin_actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            assert_eq!(a["said_by"], "Alice Liddell", "{a}");
            (
                s(&a["actor"]).to_owned(),
                s(&a["action"]).to_owned(),
                s(&a["reason"]).to_owned(),
            )
        })
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(
        (
            actions[0].0.as_str(),
            actions[0].1.as_str(),
            actions[0].2.as_str()
        ),
        (
            "alice",
            "order.recheck_payment",
            "buyer says the card was charged twice"
        )
    );
    assert_eq!(
        (actions[1].0.as_str(), actions[1].1.as_str()),
        ("alice", "order.refund")
    );
    assert!(
        actions[1].2.contains("300") && actions[1].2.contains("late delivery"),
        "{actions:?}"
    );
    let (_, record) = app
        .admin("GET", &format!("/api/admin/orders/{dead}"), None)
        .await;
    let resolve = &record["admin_actions"][0];
    assert_eq!(
        (&resolve["actor"], &resolve["action"]),
        (&json!("alice"), &json!("order.resolve"))
    );
    assert!(s(&resolve["reason"]).contains("bank transfer"));
    // From the CLI: an order that is not in review is refused with the API's reason.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args([
            "admin", "--url", &app.url, "order", "resolve", &fine, "--reason", "x",
        ])
        .env("FULFILLD__ADMIN__TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("fulfilld admin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only an order that needs review"));

    // The log lists it all, filtered by actor, action and target, a page at a time.
    let (status, log) = app.admin("GET", "/api/admin/audit?actor=alice", None).await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries.iter().map(|a| s(&a["action"])).collect();
    assert_eq!(
        actions,
        ["order.refund", "order.recheck_payment", "order.resolve"],
        "{log:#}"
    );
    assert!(
        entries
            .iter()
            .all(|a| a["actor"] == "alice" && a["request_id"].is_string())
    );
    let (_, page) = app
        .admin("GET", "/api/admin/audit?actor=alice&limit=2", None)
        .await;
    let next = page["next_before_id"].as_i64().expect("another page");
    let (_, rest) = app
        .admin(
            "GET",
            &format!("/api/admin/audit?actor=alice&before_id={next}"),
            None,
        )
        .await;
    assert_eq!(rest["entries"][0]["action"], "order.resolve", "{rest}");
    let (_, skus) = app
        .admin("GET", "/api/admin/audit?action=sku.put&target=SEAT", None)
        .await;
    assert_eq!(
        skus["entries"][0]["actor"], "admin",
        "the catalogue edit, by admin.token: {skus}"
    );
    assert!(s(&skus["entries"][0]["reason"]).contains("stock"), "{skus}");
    let (status, e) = app.admin("GET", "/api/admin/audit?limit=0", None).await;
    assert_eq!((status, s(&e["error"]["field"])), (422, "limit"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fulfilld"))
        .args(["admin", "--url", &app.url, "audit", "--actor", "alice"])
        .env("FULFILLD__ADMIN__TOKEN", ALICE_TOKEN)
        .output()
        .await
        .expect("fulfilld admin audit");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("SAID BY")
            && table.contains("order.refund")
            && table.contains("Alice Liddell"),
        "{table}"
    );

    // A read token reads, but changes nothing and reads no secret.
    let as_auditor = |method: &'static str, path: &str| {
        app.http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", app.url),
            )
            .bearer_auth(AUDITOR_TOKEN)
            .json(&json!({"reason": "x"}))
            .send()
    };
    let r = as_auditor("GET", "/api/admin/audit").await.expect("audit");
    assert_eq!(r.status(), 200);
    let r = as_auditor("GET", &format!("/api/admin/orders/{fine}"))
        .await
        .expect("order");
    assert_eq!(r.status(), 200);
    for (method, path) in [
        ("POST", format!("/api/admin/orders/{dead}/resolve")),
        ("POST", "/api/payments/refund".to_owned()),
        ("PUT", "/api/admin/skus/SEAT".to_owned()),
        ("GET", "/api/admin/webhook-endpoints/ep_x/secret".to_owned()),
    ] {
        let r = as_auditor(method, &path).await.expect("refused");
        assert_eq!(r.status(), 403, "{method} {path}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], "read_only", "{method} {path}: {e}");
    }
    let (_, after) = app
        .admin("GET", "/api/admin/audit?actor=auditor", None)
        .await;
    assert_eq!(
        after["entries"],
        json!([]),
        "nothing was done as the auditor"
    );
    app.finish().await;
}

/// The admin's order search: by the buyer's address in any case, by status, newest first,
/// a page at a time; bad filters are refused by name; the CLI prints the same as a table.
async fn orders_are_found_by_buyer_and_status(backend: Backend) {
    let app = spawn(backend, &[]).await;
    app.put_sku("SEAT", 1000, 10).await;
    let mut ann = Vec::new();
    for _ in 0..3 {
        let o = app
            .create_order("Ann@Example.com", json!([{"sku": "SEAT", "qty": 1}]))
            .await;
        ann.push(s(&o["id"]).to_owned());
    }
    app.create_order("bob@example.com", json!([{"sku": "SEAT", "qty": 1}]))
        .await;
    let (paid, co) = app.seat_checkout("ann@example.com", 1, "stripe").await;
    app.pay(s(&co["provider_order_id"]), json!({})).await;
    app.wait_for(&paid, &["fulfilled"]).await;
    ann.push(paid.clone());
    ann.reverse();

    let ids = |v: &Value| -> Vec<String> {
        v["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .map(|o| s(&o["id"]).to_owned())
            .collect()
    };
    let (status, all) = app
        .admin("GET", "/api/admin/orders?email=ANN%40example.com", None)
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), ann, "newest first, whatever the case");
    assert!(all["next_before_id"].is_null());
    let (_, fulfilled) = app
        .admin(
            "GET",
            "/api/admin/orders?email=ann%40example.com&status=fulfilled",
            None,
        )
        .await;
    assert_eq!(ids(&fulfilled), vec![paid.clone()]);
    // A page at a time.
    let (_, first) = app
        .admin(
            "GET",
            "/api/admin/orders?email=ann%40example.com&limit=3",
            None,
        )
        .await;
    assert_eq!(ids(&first), ann[..3]);
    let next = s(&first["next_before_id"]).to_owned();
    let (_, rest) = app
        .admin(
            "GET",
            &format!("/api/admin/orders?email=ann%40example.com&limit=3&before_id={next}"),
            None,
        )
        .await;
    assert_eq!(ids(&rest), ann[3..]);
    assert!(rest["next_before_id"].is_null());
    // Everyone's, newest first.
    let (_, everyone) = app.admin("GET", "/api/admin/orders", None).await;
    assert_eq!(ids(&everyone).len(), 5);
    for (query, field) in [
        ("status=lost", "status"),
        ("email=not-an-address", "email"),
        ("before_id=42", "before_id"),
        ("limit=0", "limit"),
        ("colour=red", ""),
    ] {
        let (status, e) = app
            .admin("GET", &format!("/api/admin/orders?{query}"), None)
            .await;
        assert_eq!(status, 422, "{query}: {e}");
        if !field.is_empty() {
            assert_eq!(s(&e["error"]["field"]), field, "{query}: {e}");
        }
    }

    let text = cli(&app, &["order", "list", "--email", "ANN@example.com"]).await;
    let listed: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, ann, "{text}");
    assert!(text.starts_with("ID"), "{text}");
    app.finish().await;
}
