//! Idempotent creates, leases and the change feed on Postgres. Lease times come from the
//! database's clock, so every server instance agrees on when a lease ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::PostgresCatalog;
use super::rows::classify;
use crate::catalog::{
    CatalogError, EventPage, EventRecord, LeaseRecord, RefKind, Result, held_by, lease_not_current,
    lease_refusal, leased_session,
};

#[derive(sqlx::FromRow)]
struct LeaseRow {
    session: String,
    branch: String,
    holder: String,
    token: i64,
    expires_at: DateTime<Utc>,
}

impl From<LeaseRow> for LeaseRecord {
    fn from(row: LeaseRow) -> Self {
        Self {
            session: row.session,
            branch: row.branch,
            holder: row.holder,
            token: row.token as u64,
            expires_at: row.expires_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    session: String,
    ref_kind: i16,
    ref_name: String,
    old_head: Option<Uuid>,
    new_head: Option<Uuid>,
    op: String,
    created_at: DateTime<Utc>,
}

impl From<EventRow> for EventRecord {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            session: row.session,
            kind: RefKind::from_i64(row.ref_kind.into()),
            name: row.ref_name,
            old: row.old_head,
            new: row.new_head,
            op: row.op,
            at: row.created_at,
        }
    }
}

const LEASE_COLUMNS: &str = "session, branch, holder, token, expires_at";

/// A time to live as Postgres reads an interval, in microseconds.
fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

impl PostgresCatalog {
    /// Refuses a write on `branch` that a live lease does not admit. The lease row is held
    /// (FOR SHARE) until the write commits, so a takeover waits for it.
    pub(super) async fn check_lease(
        tx: &mut Transaction<'static, Postgres>,
        session: &str,
        branch: &str,
        token: Option<u64>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE session = $1 AND branch = $2 \
             AND expires_at > now() FOR SHARE"
        );
        let live: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)?;
        let live = live.map(LeaseRecord::from);
        match lease_refusal(branch, live.as_ref(), token) {
            Some(why) => Err(CatalogError::FailedPrecondition(why)),
            None => Ok(()),
        }
    }

    /// Refuses to delete a session while any of its branches has a live lease.
    pub(super) async fn refuse_if_leased(
        tx: &mut Transaction<'static, Postgres>,
        session: &str,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE session = $1 AND expires_at > now() \
             ORDER BY branch LIMIT 1 FOR SHARE"
        );
        let live: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)?;
        match live {
            Some(lease) => Err(leased_session(session, lease.into())),
            None => Ok(()),
        }
    }

    pub(super) async fn created_by_request_impl(
        &self,
        session: &str,
        request_id: &str,
    ) -> Result<Option<Uuid>> {
        sqlx::query_scalar(
            "SELECT c.id FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE s.name = $1 AND c.request_id = $2",
        )
        .bind(session)
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    pub(super) async fn acquire_lease_impl(
        &self,
        session: &str,
        branch: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseRecord> {
        // The token outlives its holders: a new holder gets the last token + 1.
        let sql = format!(
            "INSERT INTO leases ({LEASE_COLUMNS}) \
             VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4::float8 / 1e6)) \
             ON CONFLICT (session, branch) DO UPDATE SET holder = EXCLUDED.holder, \
             token = leases.token + 1, expires_at = EXCLUDED.expires_at \
             WHERE leases.expires_at <= now() RETURNING {LEASE_COLUMNS}"
        );
        let taken: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .bind(holder)
            .bind(micros(ttl))
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        if let Some(taken) = taken {
            return Ok(taken.into());
        }
        let sql = format!("SELECT {LEASE_COLUMNS} FROM leases WHERE session = $1 AND branch = $2");
        let held: LeaseRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Err(held_by(branch, held.into()))
    }

    pub(super) async fn renew_lease_impl(
        &self,
        session: &str,
        branch: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<LeaseRecord> {
        let sql = format!(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $4::float8 / 1e6) \
             WHERE session = $1 AND branch = $2 AND token = $3 AND expires_at > now() \
             RETURNING {LEASE_COLUMNS}"
        );
        let renewed: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .bind(token as i64)
            .bind(micros(ttl))
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        renewed
            .map(LeaseRecord::from)
            .ok_or_else(|| lease_not_current(branch, token))
    }

    pub(super) async fn release_lease_impl(
        &self,
        session: &str,
        branch: &str,
        token: u64,
    ) -> Result<()> {
        let released = sqlx::query(
            "UPDATE leases SET expires_at = LEAST(expires_at, now()) \
             WHERE session = $1 AND branch = $2 AND token = $3",
        )
        .bind(session)
        .bind(branch)
        .bind(token as i64)
        .execute(&self.pool)
        .await
        .map_err(classify)?
        .rows_affected();
        if released == 0 {
            return Err(lease_not_current(branch, token));
        }
        Ok(())
    }

    pub(super) async fn events_after_impl(&self, after: i64, limit: u32) -> Result<EventPage> {
        // The snapshot bounds come from the statement that reads the rows, so they describe
        // exactly what it could see.
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let (xmin, xmax): (String, String) = sqlx::query_as(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, \
             pg_snapshot_xmax(pg_current_snapshot())::text",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, session, ref_kind, ref_name, old_head, new_head, op, created_at \
             FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        let parse = |text: String| {
            text.parse::<u64>()
                .map_err(|e| CatalogError::Internal(format!("snapshot bound {text:?}: {e}")))
        };
        Ok(EventPage {
            events: rows.into_iter().map(EventRecord::from).collect(),
            xmin: parse(xmin)?,
            xmax: parse(xmax)?,
        })
    }

    pub(super) async fn last_event_impl(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT GREATEST((SELECT COALESCE(MAX(id), 0) FROM events), pruned_through) \
             FROM feed_horizon",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(classify)
    }

    pub(super) async fn feed_horizon_impl(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT pruned_through FROM feed_horizon")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    pub(super) async fn expire_feed_impl(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        // The horizon moves in the statement that deletes, so no reader sees events gone
        // without it.
        let gone: i64 = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM events WHERE id IN \
                 (SELECT id FROM events WHERE created_at < $1 ORDER BY id LIMIT $2) \
                 RETURNING id), \
             moved AS (UPDATE feed_horizon \
                 SET pruned_through = GREATEST(pruned_through, (SELECT MAX(id) FROM gone)) \
                 WHERE EXISTS (SELECT 1 FROM gone)) \
             SELECT COUNT(*) FROM gone",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        Ok(gone as u64)
    }
}
