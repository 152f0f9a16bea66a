//! Deliveries: queued with the change they tell of (`emit`), claimed under a lease by the
//! sender, finished with what the endpoint answered (retried on the schedule, dead after
//! the last), listed, and retried by an admin.

use super::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    /// The `webhook-id`: one per event, the same at every endpoint and attempt.
    pub message_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    pub order_id: Option<String>,
    #[serde(skip)]
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    #[serde(skip)]
    pub tries: i64,
    pub next_run_at: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(super) const DELIVERY_COLS: &str = "id, message_id, endpoint_id, event_type, order_id, payload, status, \
                             attempts, tries, next_run_at, last_error, delivered_at, created_at, updated_at";

/// A claimed delivery: only `token` may finish it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub attempt: i64,
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub response: String,
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Sent {
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<u16>,
    /// The answer's first bytes, or why there was none.
    pub response: String,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The retry schedule and the give-up rule, from `merchant_webhooks`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule_ms: Vec<u64>,
    pub disable_after_ms: u64,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Delivered,
    RetryAt(i64),
    Dead,
    /// Dead, and its endpoint disabled for failing too long.
    EndpointDisabled,
    /// The lease was lost meanwhile.
    LostLease,
}

/// Queues `event_type` about each `(order, extra)` for every enabled endpoint subscribed to
/// it, in the caller's transaction. `extra`'s fields (an object, or null) join the order's
/// in the payload's `data`. One read when nobody listens.
pub async fn emit(tx: &mut Tx, event_type: &str, about: &[(&str, Value)]) -> Result<()> {
    let orders: Vec<&str> = about.iter().map(|(o, _)| *o).collect();
    emit_with(tx, event_type, &orders, |i| about[i].1.clone()).await
}

/// [`emit`] about `orders`, with `extra(i)` made for `orders[i]` only when someone listens
/// (the hot path — a batch of captures, of fulfilments — pays one read and nothing more).
pub async fn emit_with(
    tx: &mut Tx,
    event_type: &str,
    orders: &[&str],
    extra: impl Fn(usize) -> Value,
) -> Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let endpoints: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM merchant_endpoints
         WHERE enabled = 1
           AND (event_types = '*' OR (' ' || event_types || ' ') LIKE ('% ' || $1 || ' %'))
         ORDER BY id",
    )
    .bind(event_type)
    .fetch_all(&mut **tx)
    .await?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let ids = orders;
    let mut q = sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "SELECT id, customer_email, status, total_minor, currency, created_at FROM orders
         WHERE id IN ({})",
        placeholders(1, ids.len())
    )))
    .persistent(false);
    for id in ids {
        q = q.bind(*id);
    }
    let rows_of_orders = q.fetch_all(&mut **tx).await?;
    let mut q =
        sqlx::query_as::<_, (String, String, String, i64, i64)>(sqlx::AssertSqlSafe(format!(
            "SELECT order_id, sku, name, qty, unit_price_minor FROM order_items
             WHERE order_id IN ({}) ORDER BY order_id, line_no",
            placeholders(1, ids.len())
        )))
        .persistent(false);
    for id in ids {
        q = q.bind(*id);
    }
    let items = q.fetch_all(&mut **tx).await?;
    let now = now_ms();
    let timestamp = rfc3339(now);
    let mut rows: Vec<(String, &str, &str, String)> = Vec::new();
    for (i, order_id) in orders.iter().enumerate() {
        let Some(o) = rows_of_orders.iter().find(|o| o.id == *order_id) else {
            continue;
        };
        let lines: Vec<ItemRow> = items
            .iter()
            .filter(|i| i.0 == *order_id)
            .map(|i| ItemRow {
                sku: i.1.clone(),
                name: i.2.clone(),
                qty: i.3,
                unit_price_minor: i.4,
            })
            .collect();
        let mut data = json!({ "order": {
            "id": o.id, "status": o.status, "customer_email": o.customer_email,
            "total_minor": o.total_minor, "currency": o.currency, "created_at": o.created_at,
            "items": lines,
        }});
        if let (Some(d), Value::Object(more)) = (data.as_object_mut(), extra(i)) {
            d.extend(more);
        }
        let payload = json!({ "type": event_type, "timestamp": timestamp, "data": data });
        let message_id = new_id("msg");
        for e in &endpoints {
            rows.push((
                message_id.clone(),
                e.as_str(),
                o.id.as_str(),
                payload.to_string(),
            ));
        }
    }
    // Bounded statements: SQLite takes at most 32766 parameters.
    for chunk in rows.chunks(500) {
        // $1 now, $2 the type; four per row.
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = 3 + 4 * i;
                format!(
                    "(${b}, ${}, $2, ${}, ${}, 'pending', 0, 0, $1, $1, $1)",
                    b + 1,
                    b + 2,
                    b + 3
                )
            })
            .collect();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO merchant_deliveries (message_id, endpoint_id, event_type, order_id, payload,
                 status, attempts, tries, next_run_at, created_at, updated_at)
             VALUES {}",
            values.join(", ")
        )))
        .persistent(false)
        .bind(now)
        .bind(event_type);
        for (m, e, o, p) in chunk {
            q = q.bind(m).bind(*e).bind(*o).bind(p);
        }
        q.execute(&mut **tx).await?;
    }
    tx.emitted = true;
    Ok(())
}

impl Store {
    /// Up to `limit` deliveries due now — pending, or sending under a lease that expired
    /// (its sender died) — leased to the caller until `lease_until`.
    pub async fn claim_deliveries(&self, limit: usize, lease_until: i64) -> Result<Vec<Claimed>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let token = new_id("lease");
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let _writer = self.write_guard().await;
        let rows = sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
            "UPDATE merchant_deliveries SET status = 'sending', lease_token = $1, lease_until = $2,
                 updated_at = $3
             WHERE id IN (SELECT id FROM merchant_deliveries
                          WHERE (status = 'pending' AND next_run_at <= $3)
                             OR (status = 'sending' AND lease_until < $3)
                          ORDER BY next_run_at LIMIT $4{lock})
             RETURNING {DELIVERY_COLS}"
        )))
        .bind(&token)
        .bind(lease_until)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|delivery| Claimed {
                delivery,
                token: token.clone(),
            })
            .collect())
    }

    /// When the next delivery is due, if any: a pending one's time, or when the lease of
    /// one being sent runs out (its sender died) — what [`Store::claim_deliveries`] takes.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(CASE WHEN status = 'pending' THEN next_run_at ELSE lease_until END)
             FROM merchant_deliveries WHERE status IN ('pending', 'sending')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records an attempt and what follows from it: delivered; due again after the
    /// schedule's next wait; or dead after its last — and the endpoint disabled once it has
    /// failed for `policy.disable_after_ms` (its other undelivered messages dead with it).
    pub async fn finish_delivery(
        &self,
        c: &Claimed,
        sent: &Sent,
        policy: &Policy,
    ) -> Result<After> {
        let d = &c.delivery;
        let now = now_ms();
        let mut tx = self.begin().await?;
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM merchant_deliveries WHERE id = $1 AND lease_token = $2 AND status = 'sending'",
        )
        .bind(d.id)
        .bind(&c.token)
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_none() {
            tx.rollback().await?;
            return Ok(After::LostLease);
        }
        let attempt = d.attempts + 1;
        sqlx::query(
            "INSERT INTO merchant_attempts (delivery_id, attempt, started_at, latency_ms, status_code, response)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(d.id)
        .bind(attempt)
        .bind(sent.started_at)
        .bind(sent.latency_ms)
        .bind(sent.status_code.map(i64::from))
        .bind(&sent.response)
        .execute(&mut *tx)
        .await?;
        let after = if sent.ok() {
            sqlx::query(
                "UPDATE merchant_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            )
            .bind(&d.endpoint_id)
            .execute(&mut *tx)
            .await?;
            set_delivery(
                &mut tx,
                d.id,
                "delivered",
                attempt,
                d.tries + 1,
                now,
                None,
                Some(now),
            )
            .await?;
            After::Delivered
        } else {
            let error = match sent.status_code {
                Some(s) => format!("answered {s}"),
                None => sent.response.clone(),
            };
            let since: Option<i64> = sqlx::query_scalar(
                "UPDATE merchant_endpoints SET failing_since = COALESCE(failing_since, $1)
                 WHERE id = $2 RETURNING failing_since",
            )
            .bind(sent.started_at)
            .bind(&d.endpoint_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
            let wait = usize::try_from(d.tries)
                .ok()
                .and_then(|i| policy.schedule_ms.get(i));
            let failing_too_long = since.is_some_and(|s| now - s >= policy.disable_after_ms as i64);
            let (status, next_run_at, after) = if failing_too_long {
                ("dead", now, After::EndpointDisabled)
            } else if let Some(wait) = wait {
                let at = now + *wait as i64;
                ("pending", at, After::RetryAt(at))
            } else {
                ("dead", now, After::Dead)
            };
            let tries = d.tries + 1;
            set_delivery(
                &mut tx,
                d.id,
                status,
                attempt,
                tries,
                next_run_at,
                Some(&error),
                None,
            )
            .await?;
            if let (After::EndpointDisabled, Some(since)) = (&after, since) {
                disable_failing(&mut tx, &d.endpoint_id, since, now).await?;
            }
            after
        };
        tx.commit().await?;
        Ok(after)
    }

    /// A delivery whose endpoint was disabled (or removed) before it was sent: dead, with
    /// no attempt.
    pub async fn drop_delivery(&self, c: &Claimed, why: &str) -> Result<()> {
        let _writer = self.write_guard().await;
        sqlx::query(
            "UPDATE merchant_deliveries SET status = 'dead', last_error = $1, lease_token = NULL,
                 lease_until = NULL, updated_at = $2
             WHERE id = $3 AND lease_token = $4",
        )
        .bind(why)
        .bind(now_ms())
        .bind(c.delivery.id)
        .bind(&c.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deliveries, newest first.
    pub async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let mut filters = crate::store::Filters::default()
            .given("endpoint_id = ?", f.endpoint_id.as_deref())
            .given("status = ?", f.status.as_deref())
            .given("order_id = ?", f.order_id.as_deref());
        if let Some(b) = f.before_id {
            filters = filters.and(format!("id < {b}"));
        }
        let mut q = sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLS} FROM merchant_deliveries {} ORDER BY id DESC LIMIT {}",
            filters.sql(),
            f.limit.max(1)
        )));
        for v in &filters.binds {
            q = q.bind(*v);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// The webhooks about an order, oldest first.
    pub async fn order_deliveries(&self, order_id: &str) -> Result<Vec<Delivery>> {
        Ok(sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLS} FROM merchant_deliveries WHERE order_id = $1 ORDER BY id"
        )))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A delivery, its payload and every attempt.
    pub async fn delivery(&self, id: i64) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let d = sqlx::query_as::<_, Delivery>(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLS} FROM merchant_deliveries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(d) = d else {
            return Ok(None);
        };
        let attempts = sqlx::query_as::<_, Attempt>(
            "SELECT attempt, started_at, latency_ms, status_code, response FROM merchant_attempts
             WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((d, attempts)))
    }

    /// Sends a dead delivery again now, with the whole schedule ahead of it (audited).
    /// Whether it was dead.
    pub async fn retry_delivery(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "UPDATE merchant_deliveries SET status = 'pending', tries = 0, next_run_at = $1,
                 updated_at = $1
             WHERE id = $2 AND status = 'dead'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        crate::store::audit::record(&mut tx, actor, "delivery.retry", &id.to_string(), reason)
            .await?;
        tx.emitted = true;
        tx.commit().await?;
        Ok(true)
    }
}

/// Which deliveries [`Store::deliveries`] lists.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<String>,
    pub status: Option<String>,
    pub order_id: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// The delivery states, for filters.
pub const DELIVERY_STATUSES: [&str; 4] = ["pending", "sending", "delivered", "dead"];

#[allow(clippy::too_many_arguments)]
pub(super) async fn set_delivery(
    tx: &mut Tx,
    id: i64,
    status: &str,
    attempts: i64,
    tries: i64,
    next_run_at: i64,
    error: Option<&str>,
    delivered_at: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "UPDATE merchant_deliveries SET status = $1, attempts = $2, tries = $3, next_run_at = $4,
             last_error = $5, delivered_at = $6, lease_token = NULL, lease_until = NULL,
             updated_at = $7
         WHERE id = $8",
    )
    .bind(status)
    .bind(attempts)
    .bind(tries)
    .bind(next_run_at)
    .bind(error)
    .bind(delivered_at)
    .bind(now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Disables an endpoint that has failed since `since`; its undelivered messages are dead
/// (an admin who enables it again retries them).
pub(super) async fn disable_failing(tx: &mut Tx, id: &str, since: i64, now: i64) -> Result<()> {
    let reason = format!("every attempt failed since {}", rfc3339(since));
    sqlx::query(
        "UPDATE merchant_endpoints SET enabled = 0, disabled_reason = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(&reason)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE merchant_deliveries SET status = 'dead', last_error = 'endpoint disabled',
             lease_token = NULL, lease_until = NULL, updated_at = $1
         WHERE endpoint_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    crate::store::audit::record(tx, "fulfilld", "endpoint.disable", id, Some(&reason)).await?;
    tracing::warn!(endpoint_id = id, %reason, "merchant endpoint disabled");
    Ok(())
}
