//! Idempotency keys of our own API (`Idempotency-Key` on `POST /api/…`), with Stripe's
//! semantics: the first request with a key locks it and its response is kept; the same key
//! with the same request gets that response again; with a different request, a refusal;
//! while the first still runs, "in flight". A request that ends in "try again" (5xx, a
//! conflict) unlocks the key instead of keeping the answer. Keys are removed after
//! `api.idempotency_ttl_secs`.

use super::{Result, Store};
use crate::clock::now_ms;

/// What to do with a request that carries a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is ours now: run the request, then [`Store::idempotency_complete`] or
    /// [`Store::idempotency_release`].
    Run,
    /// Answer with the first request's response.
    Replay {
        status: u16,
        body: Vec<u8>,
        content_type: Option<String>,
    },
    /// The key was used with a different request.
    Mismatch,
    /// The first request with this key has not finished.
    InFlight,
}

type KeyRow = (
    String,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
    Option<String>,
    i64,
);

impl Store {
    /// Takes the key for a request with `fingerprint`, or says why not. A lock older than
    /// `lock_ms` belongs to a request that died (its process stopped) and is taken over; a
    /// key older than `ttl_ms` is forgotten.
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        lock_ms: i64,
        ttl_ms: i64,
    ) -> Result<Begin> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, locked_until, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now + lock_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(Begin::Run);
        }
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT fingerprint, locked_until, response_status, response_body, content_type, created_at
             FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((fp, locked_until, status, body, content_type, created_at)) = row else {
            // Released between our insert and our read: the caller may simply try again.
            return Ok(Begin::InFlight);
        };
        let expired = created_at < now - ttl_ms;
        let abandoned = status.is_none() && locked_until.is_none_or(|l| l < now);
        if expired || abandoned {
            sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = $1, locked_until = $2, response_status = NULL,
                        response_body = NULL, content_type = NULL, created_at = $3
                 WHERE scope = $4 AND key = $5",
            )
            .bind(fingerprint)
            .bind(now + lock_ms)
            .bind(now)
            .bind(scope)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Begin::Run);
        }
        tx.commit().await?;
        if fp != fingerprint {
            return Ok(Begin::Mismatch);
        }
        Ok(match status {
            Some(status) => Begin::Replay {
                status: u16::try_from(status).unwrap_or(500),
                body: body.unwrap_or_default(),
                content_type,
            },
            None => Begin::InFlight,
        })
    }

    /// Keeps the response of the request that held the key.
    pub async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<()> {
        let _writer = self.write_guard().await;
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, response_body = $2, content_type = $3,
                    locked_until = NULL
             WHERE scope = $4 AND key = $5",
        )
        .bind(i64::from(status))
        .bind(body.to_vec())
        .bind(content_type)
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Unlocks the key without keeping an answer: the same request may be tried again.
    pub async fn idempotency_release(&self, scope: &str, key: &str) -> Result<()> {
        let _writer = self.write_guard().await;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND response_status IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes keys older than `ttl_ms`; returns how many.
    pub async fn idempotency_cleanup(&self, ttl_ms: i64) -> Result<u64> {
        let _writer = self.write_guard().await;
        let r = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now_ms() - ttl_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
