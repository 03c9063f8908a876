//! The SQLite catalog: the embedded default, one file, no server to install.
//!
//! WAL mode lets reads run beside a write. Writes go through a pool of exactly one connection,
//! so they queue inside the server instead of failing with "database is locked"; the busy
//! timeout covers a second process opening the same file.

mod feed;
mod gc;
mod keys;
mod refs;
mod rows;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tracing::info;
use uuid::Uuid;

use crate::catalog::{
    BlobRecord, BlobStamp, BranchRecord, Catalog, CatalogError, CheckpointFilter, CheckpointRecord,
    DeletedBlob, Edge, EventPage, ImportOutcome, LeaseRecord, Location, NewBlob, NewCheckpoint,
    PoolUse, RefKind, RefLogRecord, Result, RetentionCandidate, SessionImport, SessionRecord,
    TagRecord, json_contains,
};
use crate::core::hash::Hash;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Blob rows one insert statement writes.
const INSERT_BATCH: usize = 1_000;

/// How long a write waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const CHECKPOINT_COLUMNS: &str = "c.id, s.name AS session, c.seq, c.branch, c.parent_id, \
     c.merge_parent_id, c.generation, c.created_at, c.metadata, c.message, c.manifest_root, \
     c.entry_count, c.logical_bytes, c.stored_bytes";

use self::rows::*;

/// The catalog in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// Bytes of the database file each connection maps into memory for reading.
const MMAP_BYTES: u64 = 1 << 30;
/// Page cache per connection, as SQLite takes it: a negative number of KiB.
const CACHE_KIB: i64 = -32 * 1024;

impl SqliteCatalog {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path, read_connections: u32) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                CatalogError::Unavailable(format!("creating {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit that returned survives a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // SQLite's default page cache is 2 MiB per connection: a catalog holding small
            // values inline outgrows it at once, and every insert then re-read its b-tree
            // pages with read(2) (a create of 1,000 small values took 160 ms). Pages are read
            // through a memory map instead, and each connection caches up to 32 MiB.
            .pragma("mmap_size", MMAP_BYTES.to_string())
            .pragma("cache_size", CACHE_KIB.to_string());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(classify)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| CatalogError::Unavailable(format!("migrations failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(read_connections.max(1))
            .connect_with(options.read_only(true))
            .await
            .map_err(classify)?;
        info!(path = %path.display(), "sqlite catalog ready, migrations applied");
        Ok(Self { writer, reader })
    }

    /// Starts a write transaction holding the write lock from its first statement.
    ///
    /// A deferred transaction that reads and then writes fails with SQLITE_BUSY_SNAPSHOT when
    /// another process committed in between, and SQLite then skips the busy handler; taking
    /// the lock up front makes a second process wait for it (up to the busy timeout) instead.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)
    }

    /// Opens a catalog from a `sqlite://PATH` URL or a plain path.
    pub async fn open_url(url: &str, read_connections: u32) -> Result<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        Self::open(Path::new(path), read_connections).await
    }

    async fn session_id(tx: &mut Transaction<'static, Sqlite>, name: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT id FROM sessions WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)
    }

    async fn check_head(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        cp: &NewCheckpoint,
    ) -> Result<i64> {
        let head: Option<Uuid> =
            sqlx::query_scalar("SELECT head FROM branches WHERE session_id = ?1 AND name = ?2")
                .bind(session_id)
                .bind(&cp.branch)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        if head.is_some() && head != cp.parent {
            return Err(CatalogError::HeadMoved {
                branch: cp.branch.clone(),
                current: head,
            });
        }
        let mut generation = 1;
        for parent in cp.parent.iter().chain(&cp.merge_parent) {
            let parent_generation: Option<i64> = sqlx::query_scalar(
                "SELECT generation FROM checkpoints WHERE id = ?1 AND session_id = ?2",
            )
            .bind(parent)
            .bind(session_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)?;
            let parent_generation = parent_generation.ok_or_else(|| {
                CatalogError::NotFound(format!(
                    "parent checkpoint {parent} in session {}",
                    cp.session
                ))
            })?;
            generation = generation.max(parent_generation + 1);
        }
        Ok(generation)
    }

    /// The collection epoch this write stamps blobs with. SQLite runs one write transaction at
    /// a time, so the epoch cannot change under it: the barrier Postgres needs is free here.
    async fn current_epoch(tx: &mut Transaction<'static, Sqlite>) -> Result<i64> {
        sqlx::query_scalar("SELECT epoch FROM gc_state WHERE id = 1")
            .fetch_one(&mut **tx)
            .await
            .map_err(classify)
    }

    /// Registers new blobs stamped with `epoch`, stamps those registered meanwhile by another
    /// writer, and returns the stored bytes of those that were not there yet.
    async fn insert_blobs(
        tx: &mut Transaction<'static, Sqlite>,
        blobs: &[NewBlob],
        now: i64,
        epoch: i64,
    ) -> Result<i64> {
        let mut stored = 0;
        let mut present = Vec::new();
        // Multi-row inserts, 9 parameters a row: far below SQLite's limit of 32,766 per
        // statement. RETURNING names the rows inserted; the others were there already.
        let mut seen = HashSet::with_capacity(blobs.len());
        let blobs: Vec<&NewBlob> = blobs.iter().filter(|b| seen.insert(b.hash)).collect();
        for batch in blobs.chunks(INSERT_BATCH) {
            let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data, object_key, \
                 created_at, touched_epoch) ",
            );
            insert.push_values(batch, |mut row, blob| {
                let (data, key) = match &blob.location {
                    Location::Inline(data) => (Some(data.to_vec()), None),
                    Location::Object(key) => (None, Some(key.clone())),
                };
                row.push_bind(blob.hash.0.to_vec())
                    .push_bind(blob.kind as i64)
                    .push_bind(blob.codec as i64)
                    .push_bind(blob.raw_len as i64)
                    .push_bind(blob.stored_len as i64)
                    .push_bind(data)
                    .push_bind(key)
                    .push_bind(now)
                    .push_bind(epoch);
            });
            insert.push(" ON CONFLICT (hash) DO NOTHING RETURNING hash");
            let inserted: HashSet<Vec<u8>> = insert
                .build_query_scalar::<Vec<u8>>()
                .fetch_all(&mut **tx)
                .await
                .map_err(classify)?
                .into_iter()
                .collect();
            for blob in batch {
                if inserted.contains(blob.hash.0.as_slice()) {
                    stored += blob.stored_len as i64;
                } else {
                    present.push(blob.hash);
                }
            }
        }
        Self::touch_reused(tx, &present, epoch).await?;
        Ok(stored)
    }

    /// Stamps blobs a write reuses with `epoch`, failing when any is no longer registered.
    async fn touch_reused(
        tx: &mut Transaction<'static, Sqlite>,
        reused: &[Hash],
        epoch: i64,
    ) -> Result<()> {
        if reused.is_empty() {
            return Ok(());
        }
        let unique: HashSet<Hash> = reused.iter().copied().collect();
        let unique: Vec<Hash> = unique.into_iter().collect();
        let list = hex_array(&unique);
        sqlx::query(
            "UPDATE chunks SET touched_epoch = ?2 \
             WHERE hash IN (SELECT unhex(value) FROM json_each(?1)) AND touched_epoch < ?2",
        )
        .bind(&list)
        .bind(epoch)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        let present: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM chunks WHERE hash IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(&list)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        if present as usize != unique.len() {
            return Err(crate::catalog::collected(unique.len() - present as usize));
        }
        Ok(())
    }

    /// Checks that a fork's source still exists (no other write can delete it meanwhile).
    async fn hold_source(tx: &mut Transaction<'static, Sqlite>, source: Uuid) -> Result<()> {
        let held: Option<i64> = sqlx::query_scalar("SELECT 1 FROM checkpoints WHERE id = ?1")
            .bind(source)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)?;
        held.map(|_| ())
            .ok_or_else(|| CatalogError::NotFound(format!("checkpoint {source}")))
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn pool_use(&self) -> Vec<PoolUse> {
        vec![
            PoolUse::of("writer", &self.writer),
            PoolUse::of("reader", &self.reader),
        ]
    }

    async fn existing_blobs(&self, hashes: &[Hash]) -> Result<HashSet<Hash>> {
        if hashes.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT hash FROM chunks WHERE hash IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(hex_array(hashes))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(found.iter().filter_map(|h| Hash::from_slice(h)).collect())
    }

    async fn blobs(&self, hashes: &[Hash]) -> Result<Vec<BlobRecord>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<BlobRow> = sqlx::query_as(
            "SELECT hash, codec, raw_len, data, object_key FROM chunks \
             WHERE hash IN (SELECT unhex(value) FROM json_each(?1))",
        )
        .bind(hex_array(hashes))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        rows.into_iter().map(BlobRecord::try_from).collect()
    }

    async fn commit(&self, cp: NewCheckpoint) -> Result<CheckpointRecord> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let epoch = Self::current_epoch(&mut tx).await?;

        let session_id = match (Self::session_id(&mut tx, &cp.session).await?, cp.parent) {
            (Some(id), _) => id,
            (None, Some(parent)) => {
                return Err(CatalogError::NotFound(format!("parent checkpoint {parent} in session {}", cp.session)));
            }
            (None, None) => sqlx::query_scalar(
                "INSERT INTO sessions (name, created_at, updated_at) VALUES (?1, ?2, ?2) RETURNING id",
            )
            .bind(&cp.session)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?,
        };
        Self::check_request(&mut tx, session_id, cp.request_id.as_deref()).await?;
        Self::check_lease(&mut tx, &cp.session, &cp.branch, cp.lease).await?;
        let generation = Self::check_head(&mut tx, session_id, &cp).await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE sessions SET last_seq = last_seq + 1, checkpoint_count = checkpoint_count + 1, \
             updated_at = ?2 WHERE id = ?1 RETURNING last_seq",
        )
        .bind(session_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let stored_bytes = Self::insert_blobs(&mut tx, &cp.blobs, now, epoch).await?;
        Self::touch_reused(&mut tx, &cp.reused, epoch).await?;
        if let Some(source) = cp.source {
            Self::hold_source(&mut tx, source).await?;
        }

        sqlx::query(
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id, \
             generation, created_at, metadata, message, manifest_root, entry_count, logical_bytes, \
             stored_bytes, search_text, request_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?14, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?16)",
        )
        .bind(cp.id)
        .bind(session_id)
        .bind(seq)
        .bind(&cp.branch)
        .bind(cp.parent)
        .bind(generation)
        .bind(now)
        .bind(&cp.metadata)
        .bind(&cp.message)
        .bind(cp.manifest_root.map(|h| h.0.to_vec()))
        .bind(cp.entry_count as i64)
        .bind(cp.logical_bytes as i64)
        .bind(stored_bytes)
        .bind(cp.merge_parent)
        .bind(&cp.search_text)
        .bind(cp.request_id.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO branches (session_id, name, head, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
             ON CONFLICT (session_id, name) DO UPDATE SET head = excluded.head, updated_at = excluded.updated_at",
        )
        .bind(session_id)
        .bind(&cp.branch)
        .bind(cp.id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let op = if cp.merge_parent.is_some() {
            "merge"
        } else {
            "commit"
        };
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            &cp.branch,
            cp.parent,
            Some(cp.id),
            op,
            now,
        )
        .await?;

        tx.commit().await.map_err(classify)?;
        Ok(CheckpointRecord {
            id: cp.id,
            session: cp.session,
            seq: seq as u64,
            branch: cp.branch,
            parents: cp.parent.into_iter().chain(cp.merge_parent).collect(),
            generation: generation as u64,
            created_at: from_micros(now),
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
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id WHERE c.id = ?1"
        );
        let row: Option<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(classify)?;
        row.map(CheckpointRecord::try_from).transpose()
    }

    async fn branch_head(&self, session: &str, branch: &str) -> Result<Option<Uuid>> {
        sqlx::query_scalar(
            "SELECT b.head FROM branches b JOIN sessions s ON s.id = b.session_id WHERE s.name = ?1 AND b.name = ?2",
        )
        .bind(session)
        .bind(branch)
        .fetch_optional(&self.reader)
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
        // SQLite has no JSON containment operator: the metadata filter runs here, over
        // batches read newest first until the page is full.
        let batch = if filter.metadata.is_some() {
            limit.max(256)
        } else {
            limit
        };
        let mut out = Vec::new();
        let mut cursor = before;
        loop {
            let rows = self.list_batch(session, filter, cursor, batch).await?;
            let exhausted = rows.len() < batch as usize;
            cursor = rows.last().map(|r| r.seq);
            for record in rows {
                let keep = match &filter.metadata {
                    Some(pattern) => serde_json::from_str(&record.metadata)
                        .is_ok_and(|doc: serde_json::Value| json_contains(&doc, pattern)),
                    None => true,
                };
                if keep {
                    out.push(record);
                    if out.len() == limit as usize {
                        return Ok(out);
                    }
                }
            }
            if exhausted {
                return Ok(out);
            }
        }
    }

    async fn session(&self, name: &str) -> Result<Option<SessionRecord>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT name, created_at, updated_at, checkpoint_count FROM sessions WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        Ok(row.map(SessionRecord::from))
    }

    async fn list_sessions(&self, after: Option<&str>, limit: u32) -> Result<Vec<SessionRecord>> {
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT name, created_at, updated_at, checkpoint_count FROM sessions \
             WHERE (?1 IS NULL OR name > ?1) ORDER BY name LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(SessionRecord::from).collect())
    }

    async fn delete_checkpoint(&self, id: Uuid) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let not_found = || CatalogError::NotFound(format!("checkpoint {id}"));
        let session_id: i64 =
            sqlx::query_scalar("SELECT session_id FROM checkpoints WHERE id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?
                .ok_or_else(not_found)?;
        let heads: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM branches WHERE session_id = ?1 AND head = ?2 ORDER BY name",
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
            sqlx::query_scalar("SELECT name FROM tags WHERE checkpoint_id = ?1 ORDER BY name")
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
        sqlx::query("DELETE FROM checkpoints WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query("UPDATE sessions SET checkpoint_count = checkpoint_count - 1, updated_at = ?2 WHERE id = ?1")
            .bind(session_id)
            .bind(now_micros())
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
        // Embedded: the database's clock is this host's.
        Ok(chrono::Utc::now())
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
        // As on Postgres: refs first, then rows in batches, so the one writer connection is
        // never held for a whole large session.
        let mut tx = self.begin_write().await?;
        let id = Self::session_id(&mut tx, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))?;
        Self::refuse_if_leased(&mut tx, name).await?;
        for table in ["branches", "tags", "retention_policies"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE session_id = ?1"
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
            sqlx::query_scalar("DELETE FROM sessions WHERE id = ?1 RETURNING checkpoint_count")
                .bind(id)
                .fetch_optional(&self.writer)
                .await
                .map_err(classify)?;
        Ok(deleted + rest.unwrap_or(0).max(0) as u64)
    }
}

/// Rows one statement of a session delete removes.
const DELETE_BATCH: u64 = 5_000;

impl SqliteCatalog {
    /// Deletes up to [`DELETE_BATCH`] of a session's rows from `table`.
    async fn delete_batch(&self, session_id: i64, table: &str) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE id IN \
             (SELECT id FROM {table} WHERE session_id = ?1 LIMIT ?2)"
        )))
        .bind(session_id)
        .bind(DELETE_BATCH as i64)
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        if table == "checkpoints" {
            sqlx::query(
                "UPDATE sessions SET checkpoint_count = checkpoint_count - ?2 WHERE id = ?1",
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
