//! The SQLite catalog: the embedded default, one file, no server to install.
//!
//! WAL mode lets reads run beside a write. Writes go through a pool of exactly one connection,
//! so they queue inside the server instead of failing with "database is locked"; the busy
//! timeout covers a second process opening the same file.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tracing::info;
use uuid::Uuid;

use super::{
    BlobRecord, BranchRecord, Catalog, CatalogError, CheckpointFilter, CheckpointRecord, Edge,
    ImportOutcome, ImportedBranch, ImportedCheckpoint, Location, NewBlob, NewCheckpoint, RefKind,
    RefLogRecord, Result, SessionImport, SessionRecord, TagRecord, json_contains,
};
use crate::core::codec::Codec;
use crate::core::hash::Hash;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a write waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const CHECKPOINT_COLUMNS: &str = "c.id, s.name AS session, c.seq, c.branch, c.parent_id, \
     c.merge_parent_id, c.generation, c.created_at, c.metadata, c.message, c.manifest_root, \
     c.entry_count, c.logical_bytes, c.stored_bytes";

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    id: Uuid,
    session: String,
    seq: i64,
    branch: String,
    parent_id: Option<Uuid>,
    merge_parent_id: Option<Uuid>,
    generation: i64,
    created_at: i64,
    metadata: String,
    message: String,
    manifest_root: Option<Vec<u8>>,
    entry_count: i64,
    logical_bytes: i64,
    stored_bytes: i64,
}

impl TryFrom<CheckpointRow> for CheckpointRecord {
    type Error = CatalogError;

    fn try_from(row: CheckpointRow) -> Result<Self> {
        let manifest_root = match row.manifest_root {
            Some(bytes) => Some(Hash::from_slice(&bytes).ok_or_else(|| {
                CatalogError::Internal(format!(
                    "checkpoint {} has a malformed manifest hash",
                    row.id
                ))
            })?),
            None => None,
        };
        Ok(Self {
            id: row.id,
            session: row.session,
            seq: row.seq as u64,
            branch: row.branch,
            parents: row
                .parent_id
                .into_iter()
                .chain(row.merge_parent_id)
                .collect(),
            generation: row.generation as u64,
            created_at: from_micros(row.created_at),
            metadata: row.metadata,
            message: row.message,
            manifest_root,
            entry_count: row.entry_count as u64,
            logical_bytes: row.logical_bytes as u64,
            stored_bytes: row.stored_bytes as u64,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    name: String,
    created_at: i64,
    updated_at: i64,
    checkpoint_count: i64,
}

impl From<SessionRow> for SessionRecord {
    fn from(row: SessionRow) -> Self {
        Self {
            name: row.name,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
            checkpoint_count: row.checkpoint_count as u64,
        }
    }
}

#[derive(sqlx::FromRow)]
struct BranchRow {
    name: String,
    head: Uuid,
    created_at: i64,
    updated_at: i64,
}

impl From<BranchRow> for BranchRecord {
    fn from(row: BranchRow) -> Self {
        Self {
            name: row.name,
            head: row.head,
            created_at: from_micros(row.created_at),
            updated_at: from_micros(row.updated_at),
        }
    }
}

#[derive(sqlx::FromRow)]
struct TagRow {
    name: String,
    checkpoint_id: Uuid,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct RefLogRow {
    id: i64,
    ref_kind: i64,
    ref_name: String,
    old_head: Option<Uuid>,
    new_head: Option<Uuid>,
    op: String,
    actor: Option<String>,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct EdgeRow {
    id: Uuid,
    parent_id: Option<Uuid>,
    merge_parent_id: Option<Uuid>,
    generation: i64,
}

#[derive(sqlx::FromRow)]
struct BlobRow {
    hash: Vec<u8>,
    codec: i64,
    raw_len: i64,
    data: Option<Vec<u8>>,
    object_key: Option<String>,
}

impl TryFrom<BlobRow> for BlobRecord {
    type Error = CatalogError;

    fn try_from(row: BlobRow) -> Result<Self> {
        let bad = |what: &str| CatalogError::Internal(format!("blob row has a malformed {what}"));
        let location = match (row.data, row.object_key) {
            (Some(data), None) => Location::Inline(Bytes::from(data)),
            (None, Some(key)) => Location::Object(key),
            _ => return Err(bad("location")),
        };
        let codec = i16::try_from(row.codec)
            .ok()
            .and_then(Codec::from_i16)
            .ok_or_else(|| bad("codec"))?;
        Ok(Self {
            hash: Hash::from_slice(&row.hash).ok_or_else(|| bad("hash"))?,
            codec,
            raw_len: row.raw_len as u64,
            location,
        })
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The hashes as a JSON array of hex strings, for `json_each` (SQLite has no array binds).
fn hex_array(hashes: &[Hash]) -> String {
    serde_json::Value::from(hashes.iter().map(Hash::to_hex).collect::<Vec<_>>()).to_string()
}

/// The ids as a JSON array of hex strings, for `json_each`.
fn uuid_array(ids: &[Uuid]) -> String {
    serde_json::Value::from(
        ids.iter()
            .map(|id| id.simple().to_string())
            .collect::<Vec<_>>(),
    )
    .to_string()
}

/// The catalog in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    writer: SqlitePool,
    reader: SqlitePool,
}

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
            .busy_timeout(BUSY_TIMEOUT);
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

    async fn insert_blobs(
        tx: &mut Transaction<'static, Sqlite>,
        blobs: &[NewBlob],
        now: i64,
    ) -> Result<i64> {
        let mut stored = 0;
        for blob in blobs {
            let (data, key) = match &blob.location {
                Location::Inline(data) => (Some(data.to_vec()), None),
                Location::Object(key) => (None, Some(key.as_str())),
            };
            let inserted = sqlx::query(
                "INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data, object_key, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (hash) DO NOTHING",
            )
            .bind(blob.hash.0.to_vec())
            .bind(blob.kind as i64)
            .bind(blob.codec as i64)
            .bind(blob.raw_len as i64)
            .bind(blob.stored_len as i64)
            .bind(data)
            .bind(key)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
            if inserted.rows_affected() == 1 {
                stored += blob.stored_len as i64;
            }
        }
        Ok(stored)
    }
}

impl SqliteCatalog {
    /// Records a ref move in the ref-log, inside the transaction that makes it.
    #[allow(clippy::too_many_arguments)]
    async fn log_ref(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        kind: RefKind,
        name: &str,
        old: Option<Uuid>,
        new: Option<Uuid>,
        op: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ref_log (session_id, ref_kind, ref_name, old_head, new_head, op, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(session_id)
        .bind(kind as i64)
        .bind(name)
        .bind(old)
        .bind(new)
        .bind(op)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn existing_session(tx: &mut Transaction<'static, Sqlite>, name: &str) -> Result<i64> {
        Self::session_id(tx, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))
    }

    async fn require_checkpoint(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        session: &str,
        id: Uuid,
    ) -> Result<()> {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM checkpoints WHERE id = ?1 AND session_id = ?2")
                .bind(id)
                .bind(session_id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        found
            .map(|_| ())
            .ok_or_else(|| CatalogError::NotFound(format!("checkpoint {id} in session {session}")))
    }

    async fn head_of(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        name: &str,
    ) -> Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT head FROM branches WHERE session_id = ?1 AND name = ?2")
            .bind(session_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)
    }

    /// One batch of a listing, every filter applied except metadata containment.
    async fn list_batch(
        &self,
        session: &str,
        filter: &CheckpointFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE s.name = ?1 AND (?2 IS NULL OR c.branch = ?2) AND (?3 IS NULL OR c.seq < ?3) \
               AND (?5 IS NULL OR c.id IN \
                    (SELECT t.checkpoint_id FROM tags t WHERE t.session_id = s.id AND t.name = ?5)) \
               AND (?6 IS NULL OR c.created_at >= ?6) AND (?7 IS NULL OR c.created_at < ?7) \
               AND (?8 IS NULL OR instr(lower(c.message), lower(?8)) > 0) \
             ORDER BY c.seq DESC LIMIT ?4"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(filter.branch.as_deref())
            .bind(before.map(|b| b as i64))
            .bind(i64::from(limit))
            .bind(filter.tag.as_deref())
            .bind(filter.created_after.map(|t| t.timestamp_micros()))
            .bind(filter.created_before.map(|t| t.timestamp_micros()))
            .bind(filter.message.as_deref())
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    /// Inserts one imported checkpoint unless present; returns whether it was inserted.
    async fn import_checkpoint(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        cp: &ImportedCheckpoint,
        now: i64,
    ) -> Result<bool> {
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT session_id FROM checkpoints WHERE id = ?1")
                .bind(cp.id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        match owner {
            Some(owner) if owner == session_id => return Ok(false),
            Some(_) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "checkpoint {} already exists in another session",
                    cp.id
                )));
            }
            None => {}
        }
        let seq: i64 = sqlx::query_scalar(
            "UPDATE sessions SET last_seq = last_seq + 1, checkpoint_count = checkpoint_count + 1, \
             updated_at = ?2 WHERE id = ?1 RETURNING last_seq",
        )
        .bind(session_id)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id, \
             generation, created_at, metadata, message, manifest_root, entry_count, \
             logical_bytes, stored_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )
        .bind(cp.id)
        .bind(session_id)
        .bind(seq)
        .bind(&cp.branch)
        .bind(cp.parents.first())
        .bind(cp.parents.get(1))
        .bind(cp.generation as i64)
        .bind(cp.created_at.timestamp_micros())
        .bind(&cp.metadata)
        .bind(&cp.message)
        .bind(cp.manifest_root.map(|h| h.0.to_vec()))
        .bind(cp.entry_count as i64)
        .bind(cp.logical_bytes as i64)
        .bind(cp.stored_bytes as i64)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(true)
    }

    /// Creates or fast-forwards one imported branch; returns whether it changed.
    async fn import_branch(
        tx: &mut Transaction<'static, Sqlite>,
        session_id: i64,
        branch: &ImportedBranch,
        now: i64,
    ) -> Result<bool> {
        let head: Option<Uuid> =
            sqlx::query_scalar("SELECT head FROM branches WHERE session_id = ?1 AND name = ?2")
                .bind(session_id)
                .bind(&branch.name)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        match head {
            Some(current) if current == branch.head => return Ok(false),
            Some(current) if !branch.ancestors.contains(&current) => {
                return Err(CatalogError::FailedPrecondition(format!(
                    "branch {} has diverged: its head {current} is not in the bundle's history of {}",
                    branch.name, branch.head
                )));
            }
            _ => {}
        }
        sqlx::query(
            "INSERT INTO branches (session_id, name, head, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
             ON CONFLICT (session_id, name) DO UPDATE SET head = excluded.head, updated_at = excluded.updated_at",
        )
        .bind(session_id)
        .bind(&branch.name)
        .bind(branch.head)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Self::log_ref(
            tx,
            session_id,
            RefKind::Branch,
            &branch.name,
            head,
            Some(branch.head),
            "import",
            now,
        )
        .await?;
        Ok(true)
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
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
        let stored_bytes = Self::insert_blobs(&mut tx, &cp.blobs, now).await?;

        sqlx::query(
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id, \
             generation, created_at, metadata, message, manifest_root, entry_count, logical_bytes, \
             stored_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?14, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
        let rows: Vec<BranchRow> = sqlx::query_as(
            "SELECT b.name, b.head, b.created_at, b.updated_at FROM branches b \
             JOIN sessions s ON s.id = b.session_id WHERE s.name = ?1 ORDER BY b.name",
        )
        .bind(session)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(BranchRecord::from).collect())
    }

    async fn import(&self, import: SessionImport) -> Result<ImportOutcome> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let session_id = match Self::session_id(&mut tx, &import.session).await? {
            Some(id) => id,
            None => sqlx::query_scalar(
                "INSERT INTO sessions (name, created_at, updated_at) VALUES (?1, ?2, ?2) RETURNING id",
            )
            .bind(&import.session)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?,
        };
        let mut outcome = ImportOutcome {
            stored_bytes: Self::insert_blobs(&mut tx, &import.blobs, now).await? as u64,
            ..ImportOutcome::default()
        };
        for cp in &import.checkpoints {
            if Self::import_checkpoint(&mut tx, session_id, cp, now).await? {
                outcome.imported += 1;
            } else {
                outcome.present += 1;
            }
        }
        for branch in &import.branches {
            if Self::import_branch(&mut tx, session_id, branch, now).await? {
                outcome.branches_updated += 1;
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    async fn checkpoints(&self, ids: &[Uuid]) -> Result<Vec<CheckpointRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE c.id IN (SELECT unhex(value) FROM json_each(?1))"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(uuid_array(ids))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    async fn ancestry(
        &self,
        from: Uuid,
        first_parent: bool,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        // Parents always commit before their children, so sequence order is history order.
        let steps = if first_parent {
            "SELECT c.parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id WHERE c.parent_id IS NOT NULL"
        } else {
            "SELECT c.parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id WHERE c.parent_id IS NOT NULL \
             UNION \
             SELECT c.merge_parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
             WHERE c.merge_parent_id IS NOT NULL"
        };
        let sql = format!(
            "WITH RECURSIVE ancestry(id) AS (SELECT ?1 UNION {steps}) \
             SELECT {CHECKPOINT_COLUMNS} FROM ancestry a \
             JOIN checkpoints c ON c.id = a.id JOIN sessions s ON s.id = c.session_id \
             WHERE (?2 IS NULL OR c.seq < ?2) ORDER BY c.seq DESC LIMIT ?3"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(before.map(|b| b as i64))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    async fn edges(&self, roots: &[Uuid], min_generation: u64) -> Result<Vec<Edge>> {
        let rows: Vec<EdgeRow> = sqlx::query_as(
            "WITH RECURSIVE ancestry(id) AS ( \
                 SELECT unhex(value) FROM json_each(?1) \
                 UNION \
                 SELECT c.parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
                 WHERE c.parent_id IS NOT NULL AND c.generation >= ?2 \
                 UNION \
                 SELECT c.merge_parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
                 WHERE c.merge_parent_id IS NOT NULL AND c.generation >= ?2) \
             SELECT c.id, c.parent_id, c.merge_parent_id, c.generation \
             FROM ancestry a JOIN checkpoints c ON c.id = a.id",
        )
        .bind(uuid_array(roots))
        .bind(min_generation as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| Edge {
                id: r.id,
                parents: r.parent_id.into_iter().chain(r.merge_parent_id).collect(),
                generation: r.generation as u64,
            })
            .collect())
    }

    async fn branch(&self, session: &str, name: &str) -> Result<Option<BranchRecord>> {
        let row: Option<BranchRow> = sqlx::query_as(
            "SELECT b.name, b.head, b.created_at, b.updated_at FROM branches b \
             JOIN sessions s ON s.id = b.session_id WHERE s.name = ?1 AND b.name = ?2",
        )
        .bind(session)
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        Ok(row.map(BranchRecord::from))
    }

    async fn create_branch(&self, session: &str, name: &str, at: Uuid) -> Result<BranchRecord> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let session_id = Self::existing_session(&mut tx, session).await?;
        Self::require_checkpoint(&mut tx, session_id, session, at).await?;
        let row: Option<BranchRow> = sqlx::query_as(
            "INSERT INTO branches (session_id, name, head, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
             ON CONFLICT (session_id, name) DO NOTHING RETURNING name, head, created_at, updated_at",
        )
        .bind(session_id)
        .bind(name)
        .bind(at)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let row = row.ok_or_else(|| {
            CatalogError::AlreadyExists(format!("branch {name} of session {session}"))
        })?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            name,
            None,
            Some(at),
            "create",
            now,
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        Ok(BranchRecord::from(row))
    }

    async fn move_branch(
        &self,
        session: &str,
        name: &str,
        expected: Uuid,
        to: Uuid,
        op: &str,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let session_id = Self::existing_session(&mut tx, session).await?;
        let head = Self::head_of(&mut tx, session_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("branch {name} of session {session}")))?;
        if head != expected {
            return Err(CatalogError::HeadMoved {
                branch: name.to_owned(),
                current: Some(head),
            });
        }
        Self::require_checkpoint(&mut tx, session_id, session, to).await?;
        sqlx::query(
            "UPDATE branches SET head = ?3, updated_at = ?4 WHERE session_id = ?1 AND name = ?2",
        )
        .bind(session_id)
        .bind(name)
        .bind(to)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            name,
            Some(head),
            Some(to),
            op,
            now,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn delete_branch(&self, session: &str, name: &str, expected: Option<Uuid>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let session_id = Self::existing_session(&mut tx, session).await?;
        let head = Self::head_of(&mut tx, session_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("branch {name} of session {session}")))?;
        if expected.is_some_and(|e| e != head) {
            return Err(CatalogError::HeadMoved {
                branch: name.to_owned(),
                current: Some(head),
            });
        }
        sqlx::query("DELETE FROM branches WHERE session_id = ?1 AND name = ?2")
            .bind(session_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            name,
            Some(head),
            None,
            "delete",
            now,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn set_tag(
        &self,
        session: &str,
        name: &str,
        to: Uuid,
        expected: Option<Uuid>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let session_id = Self::existing_session(&mut tx, session).await?;
        Self::require_checkpoint(&mut tx, session_id, session, to).await?;
        let current: Option<Uuid> = sqlx::query_scalar(
            "SELECT checkpoint_id FROM tags WHERE session_id = ?1 AND name = ?2",
        )
        .bind(session_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        match (current, expected) {
            (Some(c), None) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "tag {name} of session {session} (it names {c}; move it explicitly)"
                )));
            }
            (None, Some(_)) => {
                return Err(CatalogError::NotFound(format!(
                    "tag {name} of session {session}"
                )));
            }
            (Some(c), Some(e)) if c != e => {
                return Err(CatalogError::FailedPrecondition(format!(
                    "tag {name} names {c}, not {e}"
                )));
            }
            _ => {}
        }
        sqlx::query(
            "INSERT INTO tags (session_id, name, checkpoint_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4) \
             ON CONFLICT (session_id, name) DO UPDATE SET checkpoint_id = excluded.checkpoint_id, updated_at = excluded.updated_at",
        )
        .bind(session_id)
        .bind(name)
        .bind(to)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Tag,
            name,
            current,
            Some(to),
            "tag",
            now,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn delete_tag(&self, session: &str, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        let session_id = Self::existing_session(&mut tx, session).await?;
        let removed: Option<Uuid> = sqlx::query_scalar(
            "DELETE FROM tags WHERE session_id = ?1 AND name = ?2 RETURNING checkpoint_id",
        )
        .bind(session_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let removed = removed
            .ok_or_else(|| CatalogError::NotFound(format!("tag {name} of session {session}")))?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Tag,
            name,
            Some(removed),
            None,
            "untag",
            now,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn list_tags(&self, session: &str) -> Result<Vec<TagRecord>> {
        let rows: Vec<TagRow> = sqlx::query_as(
            "SELECT t.name, t.checkpoint_id, t.created_at, t.updated_at FROM tags t \
             JOIN sessions s ON s.id = t.session_id WHERE s.name = ?1 ORDER BY t.name",
        )
        .bind(session)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| TagRecord {
                name: r.name,
                checkpoint: r.checkpoint_id,
                created_at: from_micros(r.created_at),
                updated_at: from_micros(r.updated_at),
            })
            .collect())
    }

    async fn ref_log(
        &self,
        session: &str,
        kind: RefKind,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RefLogRecord>> {
        let rows: Vec<RefLogRow> = sqlx::query_as(
            "SELECT r.id, r.ref_kind, r.ref_name, r.old_head, r.new_head, r.op, r.actor, r.created_at \
             FROM ref_log r JOIN sessions s ON s.id = r.session_id \
             WHERE s.name = ?1 AND r.ref_kind = ?2 AND r.ref_name = ?3 AND (?4 IS NULL OR r.id < ?4) \
             ORDER BY r.id DESC LIMIT ?5",
        )
        .bind(session)
        .bind(kind as i64)
        .bind(name)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| RefLogRecord {
                id: r.id,
                kind: RefKind::from_i64(r.ref_kind).unwrap_or(RefKind::Branch),
                name: r.ref_name,
                old: r.old_head,
                new: r.new_head,
                op: r.op,
                actor: r.actor,
                at: from_micros(r.created_at),
            })
            .collect())
    }

    async fn delete_session(&self, name: &str) -> Result<u64> {
        let deleted: Option<i64> =
            sqlx::query_scalar("DELETE FROM sessions WHERE name = ?1 RETURNING checkpoint_count")
                .bind(name)
                .fetch_optional(&self.writer)
                .await
                .map_err(classify)?;
        deleted
            .map(|n| n as u64)
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))
    }
}

/// Sorts SQLite errors into what a caller can act on.
fn classify(err: sqlx::Error) -> CatalogError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            CatalogError::Unavailable(err.to_string())
        }
        // SQLITE_BUSY (5, and its extended codes such as BUSY_SNAPSHOT 517) and SQLITE_LOCKED
        // (6): another process holds the file past the busy timeout.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|c| matches!(c.as_ref(), "5" | "6" | "261" | "517" | "773")) =>
        {
            CatalogError::Unavailable(err.to_string())
        }
        _ => CatalogError::Internal(err.to_string()),
    }
}
