//! The collection calls on SQLite. One write transaction runs at a time, so the lease, the
//! epoch and the sweep's deletes need no locking beyond `BEGIN IMMEDIATE`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SqliteCatalog;
use super::rows::{classify, from_micros, hex_array, now_micros, uuid_array};
use crate::catalog::{
    BlobKind, BlobStamp, CatalogError, DeletedBlob, Result, RetentionCandidate, manifest_root,
    parse_hash,
};
use crate::core::hash::Hash;

impl SqliteCatalog {
    pub(super) async fn acquire_collector_impl(&self, holder: &str, ttl: Duration) -> Result<bool> {
        let now = now_micros();
        let taken = sqlx::query(
            "UPDATE gc_state SET holder = ?1, lease_until = ?2 \
             WHERE id = 1 AND (holder IS NULL OR holder = ?1 OR lease_until < ?3)",
        )
        .bind(holder)
        .bind(now.saturating_add(ttl.as_micros() as i64))
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(taken.rows_affected() == 1)
    }

    pub(super) async fn release_collector_impl(&self, holder: &str) -> Result<()> {
        sqlx::query(
            "UPDATE gc_state SET holder = NULL, lease_until = NULL WHERE id = 1 AND holder = ?1",
        )
        .bind(holder)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn advance_epoch_impl(&self) -> Result<u64> {
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE gc_state SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
        )
        .fetch_one(&self.writer)
        .await
        .map_err(classify)?;
        Ok(epoch as u64)
    }

    pub(super) async fn retention_candidates_impl(
        &self,
        session: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RetentionCandidate>> {
        let rows: Vec<(Uuid, i64, String, i64)> = sqlx::query_as(
            "SELECT id, seq, branch, created_at FROM checkpoints \
             WHERE session_id = (SELECT id FROM sessions WHERE name = ?1) AND seq > ?2 \
             ORDER BY seq LIMIT ?3",
        )
        .bind(session)
        .bind(after_seq as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(id, seq, branch, created_at)| RetentionCandidate {
                id,
                seq: seq as u64,
                branch,
                created_at: from_micros(created_at),
            })
            .collect())
    }

    pub(super) async fn delete_unpinned_impl(
        &self,
        session: &str,
        ids: &[Uuid],
    ) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let Some(session_id) = Self::session_id(&mut tx, session).await? else {
            return Ok(Vec::new());
        };
        let deleted: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM checkpoints WHERE session_id = ?1 \
               AND id IN (SELECT unhex(value) FROM json_each(?2)) \
               AND id NOT IN (SELECT head FROM branches WHERE session_id = ?1) \
               AND id NOT IN (SELECT checkpoint_id FROM tags WHERE session_id = ?1) \
             RETURNING id",
        )
        .bind(session_id)
        .bind(uuid_array(ids))
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "UPDATE sessions SET checkpoint_count = checkpoint_count - ?2, updated_at = ?3 \
             WHERE id = ?1",
        )
        .bind(session_id)
        .bind(deleted.len() as i64)
        .bind(now_micros())
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
             WHERE (?1 IS NULL OR session_id = (SELECT id FROM sessions WHERE name = ?1)) \
               AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
        )
        .bind(session)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(id, root)| Ok((id, manifest_root(id, root)?)))
            .collect()
    }

    pub(super) async fn manifest_roots_impl(&self) -> Result<Vec<(Uuid, Option<Hash>)>> {
        // One statement reads one snapshot (WAL), however many rows it returns.
        let rows: Vec<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT id, manifest_root FROM checkpoints")
                .fetch_all(&self.reader)
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
        let rows: Vec<(Vec<u8>, i64, i64, i64, bool)> = sqlx::query_as(
            "SELECT hash, touched_epoch, stored_len, kind, object_key IS NOT NULL FROM chunks WHERE ?1 IS NULL OR hash > ?1 \
             ORDER BY hash LIMIT ?2",
        )
        .bind(after.map(|h| h.0.to_vec()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(hash, epoch, stored_len, kind, in_object)| {
                Ok(BlobStamp {
                    hash: parse_hash(&hash)?,
                    touched_epoch: epoch as u64,
                    stored_len: stored_len as u64,
                    kind: BlobKind::from_code(kind),
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
        let mut tx = self.begin_write().await?;
        let rows: Vec<(Vec<u8>, i64, i64, Option<String>)> = sqlx::query_as(
            "DELETE FROM chunks WHERE hash IN (SELECT unhex(value) FROM json_each(?1)) \
               AND touched_epoch < ?2 \
             RETURNING hash, kind, stored_len, object_key",
        )
        .bind(hex_array(hashes))
        .bind(epoch as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        let now = now_micros();
        for key in rows.iter().filter_map(|r| r.3.as_deref()) {
            sqlx::query(
                "INSERT INTO gc_pending_deletes (object_key, queued_at) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        rows.into_iter()
            .map(|(hash, kind, stored_len, object_key)| {
                Ok(DeletedBlob {
                    hash: parse_hash(&hash)?,
                    kind: BlobKind::from_code(kind),
                    stored_len: stored_len as u64,
                    object_key,
                })
            })
            .collect()
    }

    pub(super) async fn pending_deletes_impl(&self, limit: u32) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT object_key FROM gc_pending_deletes ORDER BY queued_at, object_key LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    pub(super) async fn clear_pending_deletes_impl(&self, keys: &[String]) -> Result<()> {
        let list = serde_json::Value::from(keys.to_vec()).to_string();
        sqlx::query(
            "DELETE FROM gc_pending_deletes WHERE object_key IN (SELECT value FROM json_each(?1))",
        )
        .bind(list)
        .execute(&self.writer)
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
        let hashes: Vec<Hash> = objects.iter().map(|(h, _)| *h).collect();
        let keys: Vec<String> = objects.iter().map(|(_, k)| k.clone()).collect();
        let keys = serde_json::Value::from(keys).to_string();
        let known: Vec<String> = sqlx::query_scalar(
            "SELECT object_key FROM chunks WHERE hash IN (SELECT unhex(value) FROM json_each(?1)) \
               AND object_key IN (SELECT value FROM json_each(?2)) \
             UNION SELECT object_key FROM gc_pending_deletes \
               WHERE object_key IN (SELECT value FROM json_each(?2))",
        )
        .bind(hex_array(&hashes))
        .bind(keys)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(known.into_iter().collect())
    }

    pub(super) async fn record_collection_impl(
        &self,
        started_at: DateTime<Utc>,
        dry_run: bool,
        report: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO gc_runs (started_at, finished_at, dry_run, report) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(started_at.timestamp_micros())
        .bind(now_micros())
        .bind(dry_run)
        .bind(report)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        // A pass deletes many rows at once; fold the write-ahead log back into the database
        // file so the disk space it took is returned (readers still active make this a no-op).
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
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
             WHERE session_id = (SELECT id FROM sessions WHERE name = ?1) ORDER BY branch",
        )
        .bind(session)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    pub(super) async fn set_retention_policy_impl(
        &self,
        session: &str,
        branch: &str,
        policy: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let session_id = Self::session_id(&mut tx, session)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {session}")))?;
        match policy {
            Some(policy) => sqlx::query(
                "INSERT INTO retention_policies (session_id, branch, policy, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (session_id, branch) \
                 DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
            )
            .bind(session_id)
            .bind(branch)
            .bind(policy)
            .bind(now_micros()),
            None => {
                sqlx::query("DELETE FROM retention_policies WHERE session_id = ?1 AND branch = ?2")
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
