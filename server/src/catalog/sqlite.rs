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
    BlobRecord, BranchRecord, Catalog, CatalogError, CheckpointRecord, ImportOutcome,
    ImportedBranch, ImportedCheckpoint, Location, NewBlob, NewCheckpoint, Result, SessionImport,
    SessionRecord,
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
        let Some(parent) = cp.parent else {
            return Ok(1);
        };
        let generation: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM checkpoints WHERE id = ?1 AND session_id = ?2",
        )
        .bind(parent)
        .bind(session_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?;
        generation.map(|g| g + 1).ok_or_else(|| {
            CatalogError::NotFound(format!(
                "parent checkpoint {parent} in session {}",
                cp.session
            ))
        })
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
        let mut tx = self.writer.begin().await.map_err(classify)?;
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
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, generation, created_at, \
             metadata, message, manifest_root, entry_count, logical_bytes, stored_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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

        tx.commit().await.map_err(classify)?;
        Ok(CheckpointRecord {
            id: cp.id,
            session: cp.session,
            seq: seq as u64,
            branch: cp.branch,
            parents: cp.parent.into_iter().collect(),
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
        branch: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE s.name = ?1 AND (?2 IS NULL OR c.branch = ?2) AND (?3 IS NULL OR c.seq < ?3) \
             ORDER BY c.seq DESC LIMIT ?4"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(session)
            .bind(branch)
            .bind(before.map(|b| b as i64))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
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
        let mut tx = self.writer.begin().await.map_err(classify)?;
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
        let mut tx = self.writer.begin().await.map_err(classify)?;
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
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6): another process holds the file past the
        // busy timeout.
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "5" || c == "6") => {
            CatalogError::Unavailable(err.to_string())
        }
        _ => CatalogError::Internal(err.to_string()),
    }
}
