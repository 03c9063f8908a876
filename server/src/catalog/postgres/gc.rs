//! Collection on Postgres: the commit side of the protocol (barrier, stamps, held sources),
//! and the collector's calls: the lease, the epoch barrier, retention deletes, the
//! mark's snapshot of roots and the sweep's batches.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::rows::classify;
use sqlx::{Postgres, Transaction};

use super::PostgresCatalog;
use crate::catalog::{
    BlobKind, BlobStamp, CatalogError, DeletedBlob, Result, RetentionCandidate, manifest_root,
    parse_hash,
};
use crate::core::hash::Hash;

/// How long raising the epoch waits for commits in flight. New commits queue behind the
/// waiting exclusive request, so it must be short; the pass retries on its next run.
const BARRIER_TIMEOUT: &str = "5s";

impl PostgresCatalog {
    /// Joins the collection barrier and returns the epoch this transaction stamps blobs with.
    ///
    /// Every transaction that adds references to blobs holds the collection lock shared until
    /// it ends; a pass raises the epoch holding it exclusively, so when the raise returns,
    /// every commit that read the old epoch has finished and is visible to the pass's mark.
    /// Taken before any row lock: a commit waiting for the barrier holds nothing another
    /// commit needs.
    ///
    /// Two statements, not one: a statement reads the snapshot taken when it began, so an
    /// epoch read by the statement that waited for the lock could predate the raise it waited
    /// for (the regression test is the collection soak in tests/collection_faults.rs).
    pub(super) async fn join_epoch(tx: &mut Transaction<'static, Postgres>) -> Result<i64> {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(COLLECTION_LOCK)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        sqlx::query_scalar("SELECT epoch FROM gc_state WHERE id = 1")
            .fetch_one(&mut **tx)
            .await
            .map_err(classify)
    }

    /// Stamps blobs a commit reuses with `epoch`, failing when any is no longer registered.
    ///
    /// The stamp is a write, so a sweep deleting the same row either commits first (and the
    /// count comes up short) or waits and then skips the freshly stamped row. Rows already
    /// stamped with `epoch` are only counted: no pass that began before `epoch` deletes them.
    pub(super) async fn touch_reused(
        tx: &mut Transaction<'static, Postgres>,
        reused: &[Hash],
        epoch: i64,
    ) -> Result<()> {
        if reused.is_empty() {
            return Ok(());
        }
        let unique: HashSet<Hash> = reused.iter().copied().collect();
        let keys: Vec<Vec<u8>> = unique.iter().map(|h| h.0.to_vec()).collect();
        let present: i64 = sqlx::query_scalar(
            "WITH stamped AS ( \
                 UPDATE chunks SET touched_epoch = $2 \
                 WHERE hash = ANY($1) AND touched_epoch < $2 RETURNING 1) \
             SELECT (SELECT count(*) FROM stamped) \
                  + (SELECT count(*) FROM chunks WHERE hash = ANY($1) AND touched_epoch >= $2)",
        )
        .bind(&keys)
        .bind(epoch)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        if present as usize != unique.len() {
            return Err(crate::catalog::collected(unique.len() - present as usize));
        }
        Ok(())
    }

    pub(super) async fn acquire_collector_impl(&self, holder: &str, ttl: Duration) -> Result<bool> {
        let taken = sqlx::query(
            "UPDATE gc_state SET holder = $1, lease_until = now() + $2 \
             WHERE id = 1 AND (holder IS NULL OR holder = $1 OR lease_until < now())",
        )
        .bind(holder)
        .bind(ttl)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(taken.rows_affected() == 1)
    }

    pub(super) async fn release_collector_impl(&self, holder: &str) -> Result<()> {
        sqlx::query(
            "UPDATE gc_state SET holder = NULL, lease_until = NULL WHERE id = 1 AND holder = $1",
        )
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn advance_epoch_impl(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{BARRIER_TIMEOUT}'"
        )))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(COLLECTION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE gc_state SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(epoch as u64)
    }

    pub(super) async fn retention_candidates_impl(
        &self,
        session: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RetentionCandidate>> {
        let rows = sqlx::query(
            "SELECT id, seq, branch, created_at FROM checkpoints \
             WHERE session_id = (SELECT id FROM sessions WHERE name = $1) AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(session)
        .bind(after_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                Ok(RetentionCandidate {
                    id: row.try_get("id").map_err(classify)?,
                    seq: row.try_get::<i64, _>("seq").map_err(classify)? as u64,
                    branch: row.try_get("branch").map_err(classify)?,
                    created_at: row.try_get("created_at").map_err(classify)?,
                })
            })
            .collect()
    }

    pub(super) async fn delete_unpinned_impl(
        &self,
        session: &str,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let Some(session_id) = Self::lock_session(&mut tx, session).await? else {
            return Ok(Vec::new());
        };
        // Pins are checked again under the session lock: a branch reset or a tag set since
        // retention decided keeps the checkpoint.
        let deleted: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM checkpoints c WHERE c.session_id = $1 AND c.id = ANY($2) \
               AND NOT EXISTS (SELECT 1 FROM branches b WHERE b.session_id = $1 AND b.head = c.id) \
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.session_id = $1 AND t.checkpoint_id = c.id) \
             RETURNING c.id",
        )
        .bind(session_id)
        .bind(ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "UPDATE sessions SET checkpoint_count = checkpoint_count - $2, updated_at = now() \
             WHERE id = $1",
        )
        .bind(session_id)
        .bind(deleted.len() as i64)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(deleted)
    }

    pub(super) async fn checkpoint_roots_impl(
        &self,
        session: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<(Uuid, Option<Hash>)>> {
        let rows: Vec<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, manifest_root FROM checkpoints \
             WHERE ($1::text IS NULL OR session_id = (SELECT id FROM sessions WHERE name = $1)) \
               AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(session)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(id, root)| Ok((id, manifest_root(id, root)?)))
            .collect()
    }

    pub(super) async fn manifest_roots_impl(&self) -> Result<Vec<(Uuid, Option<Hash>)>> {
        // One statement reads one snapshot, however many rows it streams.
        let rows: Vec<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT id, manifest_root FROM checkpoints")
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        rows.into_iter()
            .map(|(id, root)| Ok((id, manifest_root(id, root)?)))
            .collect()
    }

    pub(super) async fn scan_blobs_impl(
        &self,
        after: Option<Hash>,
        limit: u32,
    ) -> Result<Vec<BlobStamp>> {
        let rows: Vec<(Vec<u8>, i64, i64, i16, bool)> = sqlx::query_as(
            "SELECT hash, touched_epoch, stored_len, kind, object_key IS NOT NULL FROM chunks WHERE ($1::bytea IS NULL OR hash > $1) \
             ORDER BY hash LIMIT $2",
        )
        .bind(after.map(|h| h.0.to_vec()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(hash, epoch, stored_len, kind, in_object)| {
                Ok(BlobStamp {
                    hash: parse_hash(&hash)?,
                    touched_epoch: epoch as u64,
                    stored_len: stored_len as u64,
                    kind: BlobKind::from_code(i64::from(kind)),
                    in_object,
                })
            })
            .collect()
    }

    pub(super) async fn delete_blobs_impl(
        &self,
        hashes: &[Hash],
        epoch: u64,
    ) -> Result<Vec<DeletedBlob>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let rows: Vec<(Vec<u8>, i16, i64, Option<String>)> = sqlx::query_as(
            "DELETE FROM chunks WHERE hash = ANY($1) AND touched_epoch < $2 \
             RETURNING hash, kind, stored_len, object_key",
        )
        .bind(&keys)
        .bind(epoch as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        let objects: Vec<&str> = rows.iter().filter_map(|r| r.3.as_deref()).collect();
        sqlx::query(
            "INSERT INTO gc_pending_deletes (object_key) SELECT * FROM UNNEST($1::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&objects)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        rows.into_iter()
            .map(|(hash, kind, stored_len, object_key)| {
                Ok(DeletedBlob {
                    hash: parse_hash(&hash)?,
                    kind: BlobKind::from_code(i64::from(kind)),
                    stored_len: stored_len as u64,
                    object_key,
                })
            })
            .collect()
    }

    pub(super) async fn pending_deletes_impl(&self, limit: u32) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT object_key FROM gc_pending_deletes ORDER BY queued_at, object_key LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    pub(super) async fn clear_pending_deletes_impl(&self, keys: &[String]) -> Result<()> {
        sqlx::query("DELETE FROM gc_pending_deletes WHERE object_key = ANY($1)")
            .bind(keys)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn known_objects_impl(
        &self,
        objects: &[(Hash, String)],
    ) -> Result<HashSet<String>> {
        if objects.is_empty() {
            return Ok(HashSet::new());
        }
        let hashes: Vec<Vec<u8>> = objects.iter().map(|(h, _)| h.0.to_vec()).collect();
        let keys: Vec<&str> = objects.iter().map(|(_, k)| k.as_str()).collect();
        let known: Vec<String> = sqlx::query_scalar(
            "SELECT object_key FROM chunks WHERE hash = ANY($1) AND object_key = ANY($2) \
             UNION SELECT object_key FROM gc_pending_deletes WHERE object_key = ANY($2)",
        )
        .bind(&hashes)
        .bind(&keys)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(known.into_iter().collect())
    }

    pub(super) async fn now_impl(&self) -> Result<DateTime<Utc>> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    pub(super) async fn record_collection_impl(
        &self,
        started_at: DateTime<Utc>,
        dry_run: bool,
        report: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO gc_runs (started_at, dry_run, report) VALUES ($1, $2, $3)")
            .bind(started_at)
            .bind(dry_run)
            .bind(report)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn retention_policies_impl(
        &self,
        session: &str,
    ) -> Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT branch, policy FROM retention_policies \
             WHERE session_id = (SELECT id FROM sessions WHERE name = $1) ORDER BY branch",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    pub(super) async fn set_retention_policy_impl(
        &self,
        session: &str,
        branch: &str,
        policy: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_session(&mut tx, session)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {session}")))?;
        match policy {
            Some(policy) => sqlx::query(
                "INSERT INTO retention_policies (session_id, branch, policy) VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id, branch) \
                 DO UPDATE SET policy = EXCLUDED.policy, updated_at = now()",
            )
            .bind(session_id)
            .bind(branch)
            .bind(policy),
            None => {
                sqlx::query("DELETE FROM retention_policies WHERE session_id = $1 AND branch = $2")
                    .bind(session_id)
                    .bind(branch)
            }
        }
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }
}

/// The advisory lock key of the collection barrier (an arbitrary constant: "ckpt" in ASCII).
pub(super) const COLLECTION_LOCK: i64 = 0x636b_7074;
