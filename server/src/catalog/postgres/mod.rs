//! The Postgres catalog.
//!
//! Every write to a session first locks the session's row, so commits, deletes and head moves
//! of one session are serialized by Postgres itself, across any number of server instances,
//! while different sessions commit in parallel.

mod feed;
mod gc;
mod keys;
mod refs;
mod rows;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::info;
use uuid::Uuid;

use crate::catalog::{
    BlobRecord, BlobStamp, BranchRecord, Catalog, CatalogError, CheckpointFilter, CheckpointRecord,
    DeletedBlob, Edge, EventPage, ImportOutcome, LeaseRecord, Location, NewBlob, NewCheckpoint,
    PoolUse, RefKind, RefLogRecord, Result, RetentionCandidate, SessionImport, SessionRecord,
    TagRecord,
};
use crate::core::hash::Hash;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Columns of a checkpoint joined with its session's name, in [`CheckpointRow`] order.
const CHECKPOINT_COLUMNS: &str = "c.id, s.name AS session, c.seq, c.branch, c.parent_id, \
     c.merge_parent_id, c.generation, c.created_at, c.metadata::text AS metadata, c.message, \
     c.manifest_root, c.entry_count, c.logical_bytes, c.stored_bytes";

use self::gc::COLLECTION_LOCK;
use self::rows::*;

/// The catalog on a Postgres database.
#[derive(Debug, Clone)]
pub struct PostgresCatalog {
    pool: PgPool,
}

impl PostgresCatalog {
    /// Connects with a pool of `max_connections` and applies pending migrations.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            CatalogError::Unavailable(format!("bad database URL: {e}"))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await
            .map_err(classify)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| CatalogError::Unavailable(format!("migrations failed: {e}")))?;
        info!(
            max_connections,
            "postgres catalog ready, migrations applied"
        );
        Ok(Self { pool })
    }

    /// The pool, for tests and health checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn lock_session(
        tx: &mut Transaction<'static, Postgres>,
        name: &str,
    ) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT id FROM sessions WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)
    }

    /// Finds the session, creating it when absent, and locks its row.
    async fn lock_or_create_session(
        tx: &mut Transaction<'static, Postgres>,
        name: &str,
    ) -> Result<i64> {
        if let Some(id) = Self::lock_session(tx, name).await? {
            return Ok(id);
        }
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO sessions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?;
        match inserted {
            Some(id) => Ok(id),
            // Another writer created it first; its insert has committed, so lock that row.
            None => Self::lock_session(tx, name).await?.ok_or_else(|| {
                CatalogError::Unavailable(format!("session {name} is being deleted"))
            }),
        }
    }

    /// Registers new blobs stamped with `epoch` (stamping those registered meanwhile by someone
    /// else) and returns the stored bytes of those that were not there yet.
    async fn insert_blobs(
        tx: &mut Transaction<'static, Postgres>,
        blobs: &[NewBlob],
        epoch: i64,
    ) -> Result<i64> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let columns = BlobColumns::new(blobs);
        // UNNEST binds one array per column: any number of blobs in eight parameters. A row
        // that is already there is stamped instead (its row lock orders this commit against a
        // sweep deleting it); `xmax = 0` tells an inserted row from an updated one.
        sqlx::query_scalar(
            "WITH written AS ( \
                 INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data, object_key, \
                                     touched_epoch) \
                 SELECT h, k, c, r, s, d, o, $8 FROM UNNEST($1::bytea[], $2::int2[], $3::int2[], \
                     $4::int8[], $5::int8[], $6::bytea[], $7::text[]) AS u(h, k, c, r, s, d, o) \
                 ON CONFLICT (hash) DO UPDATE SET touched_epoch = EXCLUDED.touched_epoch \
                     WHERE chunks.touched_epoch < EXCLUDED.touched_epoch \
                 RETURNING stored_len, xmax = 0 AS inserted) \
             SELECT COALESCE(SUM(stored_len) FILTER (WHERE inserted), 0)::int8 FROM written",
        )
        .bind(columns.hashes)
        .bind(columns.kinds)
        .bind(columns.codecs)
        .bind(columns.raw_lens)
        .bind(columns.stored_lens)
        .bind(columns.datas)
        .bind(columns.keys)
        .bind(epoch)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)
    }
}

/// New blobs as one array per `chunks` column, for an UNNEST insert: any number of blobs in
/// seven parameters. A hash listed twice is kept once.
struct BlobColumns {
    hashes: Vec<Vec<u8>>,
    kinds: Vec<i16>,
    codecs: Vec<i16>,
    raw_lens: Vec<i64>,
    stored_lens: Vec<i64>,
    datas: Vec<Option<Vec<u8>>>,
    keys: Vec<Option<String>>,
}

impl BlobColumns {
    fn new(blobs: &[NewBlob]) -> Self {
        let mut seen = HashSet::with_capacity(blobs.len());
        let blobs: Vec<&NewBlob> = blobs.iter().filter(|b| seen.insert(b.hash)).collect();
        let mut columns = Self {
            hashes: Vec::with_capacity(blobs.len()),
            kinds: Vec::with_capacity(blobs.len()),
            codecs: Vec::with_capacity(blobs.len()),
            raw_lens: Vec::with_capacity(blobs.len()),
            stored_lens: Vec::with_capacity(blobs.len()),
            datas: Vec::with_capacity(blobs.len()),
            keys: Vec::with_capacity(blobs.len()),
        };
        for blob in blobs {
            columns.hashes.push(blob.hash.0.to_vec());
            columns.kinds.push(blob.kind as i16);
            columns.codecs.push(blob.codec as i16);
            columns.raw_lens.push(blob.raw_len as i64);
            columns.stored_lens.push(blob.stored_len as i64);
            match &blob.location {
                Location::Inline(data) => {
                    columns.datas.push(Some(data.to_vec()));
                    columns.keys.push(None);
                }
                Location::Object(key) => {
                    columns.datas.push(None);
                    columns.keys.push(Some(key.clone()));
                }
            }
        }
        columns
    }
}

/// Maps the errors `ckpt_commit` raises (see its migration for the codes) to catalog errors.
fn commit_error(err: sqlx::Error, branch: &str) -> CatalogError {
    let Some(db) = err.as_database_error() else {
        return classify(err);
    };
    let detail = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|e| e.detail())
        .unwrap_or_default();
    match db.code().as_deref() {
        Some("CKH01") => CatalogError::HeadMoved {
            branch: branch.to_owned(),
            current: detail.parse().ok(),
        },
        Some("CKN01") => CatalogError::NotFound(db.message().to_owned()),
        Some("CKA01") => crate::catalog::collected(detail.parse().unwrap_or(1)),
        Some("CKU01") => CatalogError::Unavailable(db.message().to_owned()),
        Some("CKR01") => match detail.parse() {
            Ok(id) => CatalogError::Replayed(id),
            Err(_) => CatalogError::Internal(format!("replayed request names {detail:?}")),
        },
        Some("CKL01") => CatalogError::FailedPrecondition(db.message().to_owned()),
        _ => classify(err),
    }
}

/// Rows one statement of a session delete removes.
const DELETE_BATCH: u64 = 5_000;

impl PostgresCatalog {
    /// Deletes up to [`DELETE_BATCH`] of a session's rows from `table` under its lock.
    async fn delete_batch(&self, session_id: i64, table: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
            .bind(session_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} WHERE session_id = $1 LIMIT $2)"
        )))
        .bind(session_id)
        .bind(DELETE_BATCH as i64)
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        if table == "checkpoints" {
            sqlx::query(
                "UPDATE sessions SET checkpoint_count = checkpoint_count - $2 WHERE id = $1",
            )
            .bind(session_id)
            .bind(deleted as i64)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(deleted)
    }
}

#[async_trait]
impl Catalog for PostgresCatalog {
    fn pool_use(&self) -> Vec<PoolUse> {
        vec![PoolUse::of("main", &self.pool)]
    }

    async fn existing_blobs(&self, hashes: &[Hash]) -> Result<HashSet<Hash>> {
        if hashes.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let found: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM chunks WHERE hash = ANY($1)")
                .bind(keys)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        Ok(found.iter().filter_map(|h| Hash::from_slice(h)).collect())
    }

    async fn blobs(&self, hashes: &[Hash]) -> Result<Vec<BlobRecord>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
        let rows: Vec<BlobRow> = sqlx::query_as(
            "SELECT hash, codec, raw_len, data, object_key FROM chunks WHERE hash = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter().map(BlobRecord::try_from).collect()
    }

    async fn commit(&self, cp: NewCheckpoint) -> Result<CheckpointRecord> {
        // One round trip: `ckpt_commit` (migrations/postgres/…_commit_function.sql) runs every
        // step of the commit inside the database, in the statement's own transaction.
        let blobs = BlobColumns::new(&cp.blobs);
        let reused: Vec<Vec<u8>> = cp
            .reused
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|h| h.0.to_vec())
            .collect();
        let op = if cp.merge_parent.is_some() {
            "merge"
        } else {
            "commit"
        };
        let (seq, generation, created_at, stored_bytes): (i64, i64, DateTime<Utc>, i64) =
            sqlx::query_as(
                "SELECT seq, generation, created_at, stored_bytes FROM ckpt_commit( \
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
            )
            .bind(COLLECTION_LOCK)
            .bind(&cp.session)
            .bind(&cp.branch)
            .bind(cp.id)
            .bind(cp.parent)
            .bind(cp.merge_parent)
            .bind(&cp.metadata)
            .bind(&cp.message)
            .bind(cp.manifest_root.map(|h| h.0.to_vec()))
            .bind(cp.entry_count as i64)
            .bind(cp.logical_bytes as i64)
            .bind(&cp.search_text)
            .bind(blobs.hashes)
            .bind(blobs.kinds)
            .bind(blobs.codecs)
            .bind(blobs.raw_lens)
            .bind(blobs.stored_lens)
            .bind(blobs.datas)
            .bind(blobs.keys)
            .bind(reused)
            .bind(cp.source)
            .bind(op)
            .bind(cp.request_id.as_deref())
            .bind(cp.lease.map(|t| t as i64))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| commit_error(e, &cp.branch))?;
        Ok(CheckpointRecord {
            id: cp.id,
            session: cp.session,
            seq: seq as u64,
            branch: cp.branch,
            parents: cp.parent.into_iter().chain(cp.merge_parent).collect(),
            generation: generation as u64,
            created_at,
            metadata: cp.metadata,
            message: cp.message,
            manifest_root: cp.manifest_root,
            entry_count: cp.entry_count,
            logical_bytes: cp.logical_bytes,
            stored_bytes: stored_bytes as u64,
        })
    }

    async fn checkpoint(&self, id: Uuid) -> Result<Option<CheckpointRecord>> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE c.id = $1"
        );
        let row: Option<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(CheckpointRecord::try_from).transpose()
    }

    async fn branch_head(&self, session: &str, branch: &str) -> Result<Option<Uuid>> {
        sqlx::query_scalar(
            "SELECT b.head FROM branches b JOIN sessions s ON s.id = b.session_id \
             WHERE s.name = $1 AND b.name = $2",
        )
        .bind(session)
        .bind(branch)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn list_checkpoints(
        &self,
        session: &str,
        filter: &CheckpointFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE c.session_id = (SELECT id FROM sessions WHERE name = $1) \
               AND ($2::text IS NULL OR c.branch = $2) \
               AND ($3::int8 IS NULL OR c.seq < $3) \
               AND ($5::text IS NULL OR c.id IN \
                    (SELECT t.checkpoint_id FROM tags t WHERE t.session_id = c.session_id AND t.name = $5)) \
               AND ($6::jsonb IS NULL OR c.metadata @> $6::jsonb) \
               AND ($7::timestamptz IS NULL OR c.created_at >= $7) \
               AND ($8::timestamptz IS NULL OR c.created_at < $8) \
               AND ($9::text IS NULL OR strpos(lower(c.message), lower($9)) > 0) \
             ORDER BY c.seq DESC LIMIT $4"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(filter.branch.as_deref())
            .bind(before.map(|b| b as i64))
            .bind(i64::from(limit))
            .bind(filter.tag.as_deref())
            .bind(filter.metadata.as_ref().map(|m| m.to_string()))
            .bind(filter.created_after)
            .bind(filter.created_before)
            .bind(filter.message.as_deref())
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    async fn session(&self, name: &str) -> Result<Option<SessionRecord>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT name, created_at, updated_at, checkpoint_count FROM sessions WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(SessionRecord::from))
    }

    async fn list_sessions(&self, after: Option<&str>, limit: u32) -> Result<Vec<SessionRecord>> {
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT name, created_at, updated_at, checkpoint_count FROM sessions \
             WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(SessionRecord::from).collect())
    }

    async fn delete_checkpoint(&self, id: Uuid) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let not_found = || CatalogError::NotFound(format!("checkpoint {id}"));
        let session_id: i64 =
            sqlx::query_scalar("SELECT session_id FROM checkpoints WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .ok_or_else(not_found)?;
        sqlx::query("SELECT id FROM sessions WHERE id = $1 FOR UPDATE")
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .ok_or_else(not_found)?;
        let heads: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM branches WHERE session_id = $1 AND head = $2 ORDER BY name",
        )
        .bind(session_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        if !heads.is_empty() {
            return Err(CatalogError::FailedPrecondition(format!(
                "checkpoint {id} is the head of branch {}; move or delete the branch first",
                heads.join(", ")
            )));
        }
        let tags: Vec<String> =
            sqlx::query_scalar("SELECT name FROM tags WHERE checkpoint_id = $1 ORDER BY name")
                .bind(id)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?;
        if !tags.is_empty() {
            return Err(CatalogError::FailedPrecondition(format!(
                "checkpoint {id} is tagged {}; remove the tag first",
                tags.join(", ")
            )));
        }
        let deleted = sqlx::query("DELETE FROM checkpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found());
        }
        sqlx::query(
            "UPDATE sessions SET checkpoint_count = checkpoint_count - 1, updated_at = now() WHERE id = $1",
        )
        .bind(session_id)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn list_branches(&self, session: &str) -> Result<Vec<BranchRecord>> {
        self.list_branches_impl(session).await
    }

    async fn import(&self, import: SessionImport) -> Result<ImportOutcome> {
        self.import_impl(import).await
    }

    async fn checkpoints(&self, ids: &[Uuid]) -> Result<Vec<CheckpointRecord>> {
        self.checkpoints_impl(ids).await
    }

    async fn ancestry(
        &self,
        from: Uuid,
        first_parent: bool,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        self.ancestry_impl(from, first_parent, before, limit).await
    }

    async fn edges(&self, roots: &[Uuid], min_generation: u64) -> Result<Vec<Edge>> {
        self.edges_impl(roots, min_generation).await
    }

    async fn branch(&self, session: &str, name: &str) -> Result<Option<BranchRecord>> {
        self.branch_impl(session, name).await
    }

    async fn create_branch(&self, session: &str, name: &str, at: Uuid) -> Result<BranchRecord> {
        self.create_branch_impl(session, name, at).await
    }

    async fn move_branch(
        &self,
        session: &str,
        name: &str,
        expected: Uuid,
        to: Uuid,
        op: &str,
        lease: Option<u64>,
    ) -> Result<()> {
        self.move_branch_impl(session, name, expected, to, op, lease)
            .await
    }

    async fn delete_branch(&self, session: &str, name: &str, expected: Option<Uuid>) -> Result<()> {
        self.delete_branch_impl(session, name, expected).await
    }

    async fn set_tag(
        &self,
        session: &str,
        name: &str,
        to: Uuid,
        expected: Option<Uuid>,
    ) -> Result<()> {
        self.set_tag_impl(session, name, to, expected).await
    }

    async fn delete_tag(&self, session: &str, name: &str) -> Result<()> {
        self.delete_tag_impl(session, name).await
    }

    async fn list_tags(&self, session: &str) -> Result<Vec<TagRecord>> {
        self.list_tags_impl(session).await
    }

    async fn ref_log(
        &self,
        session: &str,
        kind: RefKind,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RefLogRecord>> {
        self.ref_log_impl(session, kind, name, before, limit).await
    }

    async fn created_by_request(&self, session: &str, request_id: &str) -> Result<Option<Uuid>> {
        self.created_by_request_impl(session, request_id).await
    }

    async fn acquire_lease(
        &self,
        session: &str,
        branch: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseRecord> {
        self.acquire_lease_impl(session, branch, holder, ttl).await
    }

    async fn renew_lease(
        &self,
        session: &str,
        branch: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<LeaseRecord> {
        self.renew_lease_impl(session, branch, token, ttl).await
    }

    async fn release_lease(&self, session: &str, branch: &str, token: u64) -> Result<()> {
        self.release_lease_impl(session, branch, token).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage> {
        self.events_after_impl(after, limit).await
    }

    async fn last_event(&self) -> Result<i64> {
        self.last_event_impl().await
    }

    async fn feed_horizon(&self) -> Result<i64> {
        self.feed_horizon_impl().await
    }

    async fn expire_feed(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.expire_feed_impl(before, limit).await
    }

    async fn search(
        &self,
        session: Option<&str>,
        words: &str,
        tag: &str,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        self.search_impl(session, words, tag, offset, limit).await
    }

    async fn acquire_collector(&self, holder: &str, ttl: Duration) -> Result<bool> {
        self.acquire_collector_impl(holder, ttl).await
    }

    async fn release_collector(&self, holder: &str) -> Result<()> {
        self.release_collector_impl(holder).await
    }

    async fn advance_epoch(&self) -> Result<u64> {
        self.advance_epoch_impl().await
    }

    async fn retention_candidates(
        &self,
        session: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RetentionCandidate>> {
        self.retention_candidates_impl(session, after_seq, limit)
            .await
    }

    async fn delete_unpinned(&self, session: &str, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        self.delete_unpinned_impl(session, ids).await
    }

    async fn checkpoint_roots(
        &self,
        session: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<(Uuid, Option<Hash>)>> {
        self.checkpoint_roots_impl(session, after, limit).await
    }

    async fn manifest_roots(&self) -> Result<Vec<(Uuid, Option<Hash>)>> {
        self.manifest_roots_impl().await
    }

    async fn scan_blobs(&self, after: Option<Hash>, limit: u32) -> Result<Vec<BlobStamp>> {
        self.scan_blobs_impl(after, limit).await
    }

    async fn delete_blobs(&self, hashes: &[Hash], epoch: u64) -> Result<Vec<DeletedBlob>> {
        self.delete_blobs_impl(hashes, epoch).await
    }

    async fn pending_deletes(&self, limit: u32) -> Result<Vec<String>> {
        self.pending_deletes_impl(limit).await
    }

    async fn clear_pending_deletes(&self, keys: &[String]) -> Result<()> {
        self.clear_pending_deletes_impl(keys).await
    }

    async fn known_objects(&self, objects: &[(Hash, String)]) -> Result<HashSet<String>> {
        self.known_objects_impl(objects).await
    }

    async fn now(&self) -> Result<DateTime<Utc>> {
        self.now_impl().await
    }

    async fn record_collection(
        &self,
        started_at: DateTime<Utc>,
        dry_run: bool,
        report: &str,
    ) -> Result<()> {
        self.record_collection_impl(started_at, dry_run, report)
            .await
    }

    async fn retention_policies(&self, session: &str) -> Result<Vec<(String, String)>> {
        self.retention_policies_impl(session).await
    }

    async fn set_retention_policy(
        &self,
        session: &str,
        branch: &str,
        policy: Option<&str>,
    ) -> Result<()> {
        self.set_retention_policy_impl(session, branch, policy)
            .await
    }

    async fn delete_session(&self, name: &str) -> Result<u64> {
        // Refs first, in one transaction: from then on the session has no head to write on or
        // read from. Then its rows in batches, each a short transaction under the session
        // lock, so a session of a million checkpoints holds no lock for long; the cascade of
        // the last statement only meets what a writer added meanwhile.
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let id = Self::lock_session(&mut tx, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))?;
        Self::refuse_if_leased(&mut tx, name).await?;
        for table in ["branches", "tags", "retention_policies"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE session_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        let mut deleted = 0;
        for table in ["checkpoints", "ref_log"] {
            loop {
                let n = self.delete_batch(id, table).await?;
                if table == "checkpoints" {
                    deleted += n;
                }
                if n < DELETE_BATCH {
                    break;
                }
            }
        }
        let rest: Option<i64> =
            sqlx::query_scalar("DELETE FROM sessions WHERE id = $1 RETURNING checkpoint_count")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        Ok(deleted + rest.unwrap_or(0).max(0) as u64)
    }
}
