//! Idempotent creates, leases and the change feed on SQLite.

use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::{Sqlite, Transaction};
use uuid::Uuid;

use super::SqliteCatalog;
use super::rows::{from_micros, now_micros};
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
    expires_at: i64,
}

impl From<LeaseRow> for LeaseRecord {
    fn from(row: LeaseRow) -> Self {
        Self {
            session: row.session,
            branch: row.branch,
            holder: row.holder,
            token: row.token as u64,
            expires_at: from_micros(row.expires_at),
        }
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    session: String,
    ref_kind: i64,
    ref_name: String,
    old_head: Option<Uuid>,
    new_head: Option<Uuid>,
    op: String,
    created_at: i64,
}

impl From<EventRow> for EventRecord {
    fn from(row: EventRow) -> Self {
        Self {
            id: row.id,
            session: row.session,
            kind: RefKind::from_i64(row.ref_kind),
            name: row.ref_name,
            old: row.old_head,
            new: row.new_head,
            op: row.op,
            at: from_micros(row.created_at),
        }
    }
}

const LEASE_COLUMNS: &str = "session, branch, holder, token, expires_at";

fn micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

impl SqliteCatalog {
    /// Refuses a write on `branch` that a live lease does not admit (see
    /// [`lease_refusal`]). Runs in the write transaction, which holds SQLite's one write lock,
    /// so no lease can change before the write commits.
    pub(super) async fn check_lease(
        tx: &mut Transaction<'static, Sqlite>,
        session: &str,
        branch: &str,
        token: Option<u64>,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE session = ?1 AND branch = ?2 AND expires_at > ?3"
        );
        let live: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .bind(now_micros())
            .fetch_optional(&mut **tx)
            .await
            .map_err(super::classify)?;
        let live = live.map(LeaseRecord::from);
        match lease_refusal(branch, live.as_ref(), token) {
            Some(why) => Err(CatalogError::FailedPrecondition(why)),
            None => Ok(()),
        }
    }

    /// Refuses to delete a session while any of its branches has a live lease.
    pub(super) async fn refuse_if_leased(
        tx: &mut Transaction<'static, Sqlite>,
        session: &str,
    ) -> Result<()> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE session = ?1 AND expires_at > ?2 \
             ORDER BY branch LIMIT 1"
        );
        let live: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(now_micros())
            .fetch_optional(&mut **tx)
            .await
            .map_err(super::classify)?;
        match live {
            Some(lease) => Err(leased_session(session, lease.into())),
            None => Ok(()),
        }
    }

    /// Fails with [`CatalogError::Replayed`] when the request id was committed before.
    pub(super) async fn check_request(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        request_id: Option<&str>,
    ) -> Result<()> {
        let Some(request_id) = request_id else {
            return Ok(());
        };
        let earlier: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM checkpoints WHERE session_id = ?1 AND request_id = ?2",
        )
        .bind(session_id)
        .bind(request_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(super::classify)?;
        match earlier {
            Some(id) => Err(CatalogError::Replayed(id)),
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
             WHERE s.name = ?1 AND c.request_id = ?2",
        )
        .bind(session)
        .bind(request_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(super::classify)
    }

    pub(super) async fn acquire_lease_impl(
        &self,
        session: &str,
        branch: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseRecord> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let sql = format!(
            "INSERT INTO leases ({LEASE_COLUMNS}) VALUES (?1, ?2, ?3, 1, ?4) \
             ON CONFLICT (session, branch) DO UPDATE SET holder = excluded.holder, \
             token = leases.token + 1, expires_at = excluded.expires_at \
             WHERE leases.expires_at <= ?5 RETURNING {LEASE_COLUMNS}"
        );
        let taken: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .bind(holder)
            .bind(now.saturating_add(micros(ttl)))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(super::classify)?;
        let Some(taken) = taken else {
            let sql =
                format!("SELECT {LEASE_COLUMNS} FROM leases WHERE session = ?1 AND branch = ?2");
            let held: LeaseRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(session)
                .bind(branch)
                .fetch_one(&mut *tx)
                .await
                .map_err(super::classify)?;
            return Err(held_by(branch, held.into()));
        };
        tx.commit().await.map_err(super::classify)?;
        Ok(taken.into())
    }

    pub(super) async fn renew_lease_impl(
        &self,
        session: &str,
        branch: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<LeaseRecord> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let sql = format!(
            "UPDATE leases SET expires_at = ?4 WHERE session = ?1 AND branch = ?2 AND token = ?3 \
             AND expires_at > ?5 RETURNING {LEASE_COLUMNS}"
        );
        let renewed: Option<LeaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .bind(token as i64)
            .bind(now.saturating_add(micros(ttl)))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(super::classify)?;
        tx.commit().await.map_err(super::classify)?;
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
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(
            "UPDATE leases SET expires_at = min(expires_at, ?4) \
             WHERE session = ?1 AND branch = ?2 AND token = ?3",
        )
        .bind(session)
        .bind(branch)
        .bind(token as i64)
        .bind(now_micros())
        .execute(&mut *tx)
        .await
        .map_err(super::classify)?
        .rows_affected();
        tx.commit().await.map_err(super::classify)?;
        if released == 0 {
            return Err(lease_not_current(branch, token));
        }
        Ok(())
    }

    pub(super) async fn events_after_impl(&self, after: i64, limit: u32) -> Result<EventPage> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT id, session, ref_kind, ref_name, old_head, new_head, op, created_at \
             FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(super::classify)?;
        // One writer at a time: ids are taken in commit order, so no transaction is ever
        // running below what a reader sees.
        Ok(EventPage {
            events: rows.into_iter().map(EventRecord::from).collect(),
            xmin: 0,
            xmax: 0,
        })
    }

    pub(super) async fn last_event_impl(&self) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT max(COALESCE((SELECT MAX(id) FROM events), 0), pruned_through) \
             FROM feed_horizon",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(super::classify)
    }

    pub(super) async fn feed_horizon_impl(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT pruned_through FROM feed_horizon")
            .fetch_one(&self.reader)
            .await
            .map_err(super::classify)
    }

    pub(super) async fn expire_feed_impl(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let (count, last): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MAX(id) FROM \
             (SELECT id FROM events WHERE created_at < ?1 ORDER BY id LIMIT ?2)",
        )
        .bind(before.timestamp_micros())
        .bind(i64::from(limit))
        .fetch_one(&mut *tx)
        .await
        .map_err(super::classify)?;
        let Some(last) = last else {
            return Ok(0);
        };
        sqlx::query("DELETE FROM events WHERE id <= ?1 AND created_at < ?2")
            .bind(last)
            .bind(before.timestamp_micros())
            .execute(&mut *tx)
            .await
            .map_err(super::classify)?;
        sqlx::query("UPDATE feed_horizon SET pruned_through = max(pruned_through, ?1)")
            .bind(last)
            .execute(&mut *tx)
            .await
            .map_err(super::classify)?;
        tx.commit().await.map_err(super::classify)?;
        Ok(count as u64)
    }
}
