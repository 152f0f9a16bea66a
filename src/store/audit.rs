//! The audit log (`admin_actions`): every change an admin makes, written in the same
//! transaction as its effect — who (the admin token's name), what, on what, why, when, the
//! request that made it, and the person the caller named (`X-Fulfilld-Actor`), kept as that
//! caller's word beside the actor, never as it.

use serde::Serialize;

use super::{Filters, Result, Store, Tx};
use crate::clock::now_ms;

tokio::task_local! {
    /// The person an admin request says acts (its `X-Fulfilld-Actor`), set by the intake's
    /// admin middleware and written beside the token's name by [`record`].
    pub static SAID_BY: Option<String>;
}

/// Writes one audit row in `tx`: `actor` did `action` to `target`.
pub async fn record(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    target: &str,
    reason: Option<&str>,
) -> Result<()> {
    let said_by = SAID_BY.try_with(Clone::clone).ok().flatten();
    sqlx::query(
        "INSERT INTO admin_actions (actor, action, target, reason, at, said_by, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(reason)
    .bind(now_ms())
    .bind(said_by)
    .bind(tx.cause.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One row of the audit log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    /// The admin token's name (`fulfilld` for the engine's own actions).
    pub actor: String,
    /// Who the caller said acts (`X-Fulfilld-Actor`): its word, not a proof.
    pub said_by: Option<String>,
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub at: i64,
}

/// Which part of the log to list, newest first.
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Records an admin action that has no transaction of its own.
    pub async fn audit_action(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        record(&mut tx, actor, action, target, reason).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The audit log, newest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut filters = Filters::default()
            .given("actor = ?", f.actor.as_deref())
            .given("action = ?", f.action.as_deref())
            .given("target = ?", f.target.as_deref());
        if let Some(b) = f.before_id {
            filters = filters.and(format!("id < {b}"));
        }
        let mut q = sqlx::query_as::<_, AuditEntry>(sqlx::AssertSqlSafe(format!(
            "SELECT id, actor, said_by, action, target, reason, request_id, at FROM admin_actions
             {} ORDER BY id DESC LIMIT {}",
            filters.sql(),
            f.limit.max(1)
        )));
        for v in &filters.binds {
            q = q.bind(*v);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }
}
