//! The Postgres catalog.
//!
//! Every write to a session first locks the session's row, so commits, deletes and head moves
//! of one session are serialized by Postgres itself, across any number of server instances,
//! while different sessions commit in parallel.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::info;
use uuid::Uuid;

use super::{
    BlobRecord, BranchRecord, Catalog, CatalogError, CheckpointFilter, CheckpointRecord, Edge,
    ImportOutcome, ImportedBranch, ImportedCheckpoint, Location, NewBlob, NewCheckpoint, RefKind,
    RefLogRecord, Result, SessionImport, SessionRecord, TagRecord,
};
use crate::core::codec::Codec;
use crate::core::hash::Hash;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Columns of a checkpoint joined with its session's name, in [`CheckpointRow`] order.
const CHECKPOINT_COLUMNS: &str = "c.id, s.name AS session, c.seq, c.branch, c.parent_id, \
     c.merge_parent_id, c.generation, c.created_at, c.metadata::text AS metadata, c.message, \
     c.manifest_root, c.entry_count, c.logical_bytes, c.stored_bytes";

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    id: Uuid,
    session: String,
    seq: i64,
    branch: String,
    parent_id: Option<Uuid>,
    merge_parent_id: Option<Uuid>,
    generation: i64,
    created_at: DateTime<Utc>,
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
            created_at: row.created_at,
            // jsonb prints its own spacing and key order; hand back the canonical text every
            // catalog uses.
            metadata: canonical_json(&row.metadata)?,
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
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    checkpoint_count: i64,
}

impl From<SessionRow> for SessionRecord {
    fn from(row: SessionRow) -> Self {
        Self {
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
            checkpoint_count: row.checkpoint_count as u64,
        }
    }
}

#[derive(sqlx::FromRow)]
struct BranchRow {
    name: String,
    head: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<BranchRow> for BranchRecord {
    fn from(row: BranchRow) -> Self {
        Self {
            name: row.name,
            head: row.head,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TagRow {
    name: String,
    checkpoint_id: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RefLogRow {
    id: i64,
    ref_kind: i16,
    ref_name: String,
    old_head: Option<Uuid>,
    new_head: Option<Uuid>,
    op: String,
    actor: Option<String>,
    created_at: DateTime<Utc>,
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
    codec: i16,
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
        Ok(Self {
            hash: Hash::from_slice(&row.hash).ok_or_else(|| bad("hash"))?,
            codec: Codec::from_i16(row.codec).ok_or_else(|| bad("codec"))?,
            raw_len: row.raw_len as u64,
            location,
        })
    }
}

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

    /// Checks that the branch's head is `parent` and returns the new checkpoint's generation.
    async fn check_head(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        cp: &NewCheckpoint,
    ) -> Result<i64> {
        let head: Option<Uuid> =
            sqlx::query_scalar("SELECT head FROM branches WHERE session_id = $1 AND name = $2")
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
                "SELECT generation FROM checkpoints WHERE id = $1 AND session_id = $2",
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

    /// Registers new blobs and returns the stored bytes of those that were not there yet.
    async fn insert_blobs(
        tx: &mut Transaction<'static, Postgres>,
        blobs: &[NewBlob],
    ) -> Result<i64> {
        if blobs.is_empty() {
            return Ok(0);
        }
        let mut hashes = Vec::with_capacity(blobs.len());
        let mut kinds = Vec::with_capacity(blobs.len());
        let mut codecs = Vec::with_capacity(blobs.len());
        let mut raw_lens = Vec::with_capacity(blobs.len());
        let mut stored_lens = Vec::with_capacity(blobs.len());
        let mut datas: Vec<Option<Vec<u8>>> = Vec::with_capacity(blobs.len());
        let mut keys: Vec<Option<String>> = Vec::with_capacity(blobs.len());
        for blob in blobs {
            hashes.push(blob.hash.0.to_vec());
            kinds.push(blob.kind as i16);
            codecs.push(blob.codec as i16);
            raw_lens.push(blob.raw_len as i64);
            stored_lens.push(blob.stored_len as i64);
            match &blob.location {
                Location::Inline(data) => {
                    datas.push(Some(data.to_vec()));
                    keys.push(None);
                }
                Location::Object(key) => {
                    datas.push(None);
                    keys.push(Some(key.clone()));
                }
            }
        }
        // UNNEST binds one array per column: any number of blobs in seven parameters.
        sqlx::query_scalar(
            "WITH inserted AS ( \
                 INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data, object_key) \
                 SELECT * FROM UNNEST($1::bytea[], $2::int2[], $3::int2[], $4::int8[], \
                                      $5::int8[], $6::bytea[], $7::text[]) \
                 ON CONFLICT (hash) DO NOTHING \
                 RETURNING stored_len) \
             SELECT COALESCE(SUM(stored_len), 0)::int8 FROM inserted",
        )
        .bind(hashes)
        .bind(kinds)
        .bind(codecs)
        .bind(raw_lens)
        .bind(stored_lens)
        .bind(datas)
        .bind(keys)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)
    }
}

impl PostgresCatalog {
    /// Records a ref move in the ref-log, inside the transaction that makes it.
    #[allow(clippy::too_many_arguments)]
    async fn log_ref(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        kind: RefKind,
        name: &str,
        old: Option<Uuid>,
        new: Option<Uuid>,
        op: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ref_log (session_id, ref_kind, ref_name, old_head, new_head, op) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session_id)
        .bind(kind as i16)
        .bind(name)
        .bind(old)
        .bind(new)
        .bind(op)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Locks an existing session's row; NOT_FOUND when there is none.
    async fn lock_existing(tx: &mut Transaction<'static, Postgres>, name: &str) -> Result<i64> {
        Self::lock_session(tx, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))
    }

    /// Checks that a checkpoint belongs to the session.
    async fn require_checkpoint(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        session: &str,
        id: Uuid,
    ) -> Result<()> {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM checkpoints WHERE id = $1 AND session_id = $2")
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
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        name: &str,
    ) -> Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT head FROM branches WHERE session_id = $1 AND name = $2")
            .bind(session_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)
    }

    /// Inserts one imported checkpoint unless present; returns whether it was inserted.
    async fn import_checkpoint(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        cp: &ImportedCheckpoint,
    ) -> Result<bool> {
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT session_id FROM checkpoints WHERE id = $1")
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
             updated_at = now() WHERE id = $1 RETURNING last_seq",
        )
        .bind(session_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id, \
             generation, created_at, metadata, message, manifest_root, entry_count, \
             logical_bytes, stored_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14)",
        )
        .bind(cp.id)
        .bind(session_id)
        .bind(seq)
        .bind(&cp.branch)
        .bind(cp.parents.first())
        .bind(cp.parents.get(1))
        .bind(cp.generation as i64)
        .bind(cp.created_at)
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
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        branch: &ImportedBranch,
    ) -> Result<bool> {
        let head: Option<Uuid> =
            sqlx::query_scalar("SELECT head FROM branches WHERE session_id = $1 AND name = $2")
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
            "INSERT INTO branches (session_id, name, head) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO UPDATE SET head = EXCLUDED.head, updated_at = now()",
        )
        .bind(session_id)
        .bind(&branch.name)
        .bind(branch.head)
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
        )
        .await?;
        Ok(true)
    }
}

#[async_trait]
impl Catalog for PostgresCatalog {
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
        let mut tx = self.pool.begin().await.map_err(classify)?;

        // The session row lock orders this commit against every other write to the session.
        let session_id = match cp.parent {
            None => Self::lock_or_create_session(&mut tx, &cp.session).await?,
            Some(parent) => Self::lock_session(&mut tx, &cp.session)
                .await?
                .ok_or_else(|| {
                    CatalogError::NotFound(format!(
                        "parent checkpoint {parent} in session {}",
                        cp.session
                    ))
                })?,
        };
        let generation = Self::check_head(&mut tx, session_id, &cp).await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE sessions SET last_seq = last_seq + 1, checkpoint_count = checkpoint_count + 1, \
             updated_at = now() WHERE id = $1 RETURNING last_seq",
        )
        .bind(session_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let stored_bytes = Self::insert_blobs(&mut tx, &cp.blobs).await?;

        let created_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id, \
             generation, metadata, message, manifest_root, entry_count, logical_bytes, stored_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13) RETURNING created_at",
        )
        .bind(cp.id)
        .bind(session_id)
        .bind(seq)
        .bind(&cp.branch)
        .bind(cp.parent)
        .bind(cp.merge_parent)
        .bind(generation)
        .bind(&cp.metadata)
        .bind(&cp.message)
        .bind(cp.manifest_root.map(|h| h.0.to_vec()))
        .bind(cp.entry_count as i64)
        .bind(cp.logical_bytes as i64)
        .bind(stored_bytes)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO branches (session_id, name, head) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO UPDATE SET head = EXCLUDED.head, updated_at = now()",
        )
        .bind(session_id)
        .bind(&cp.branch)
        .bind(cp.id)
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
             WHERE s.name = $1 AND ($2::text IS NULL OR c.branch = $2) \
               AND ($3::int8 IS NULL OR c.seq < $3) \
               AND ($5::text IS NULL OR c.id IN \
                    (SELECT t.checkpoint_id FROM tags t WHERE t.session_id = s.id AND t.name = $5)) \
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
        let rows: Vec<BranchRow> = sqlx::query_as(
            "SELECT b.name, b.head, b.created_at, b.updated_at FROM branches b \
             JOIN sessions s ON s.id = b.session_id WHERE s.name = $1 ORDER BY b.name",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(BranchRecord::from).collect())
    }

    async fn import(&self, import: SessionImport) -> Result<ImportOutcome> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_or_create_session(&mut tx, &import.session).await?;
        let mut outcome = ImportOutcome {
            stored_bytes: Self::insert_blobs(&mut tx, &import.blobs).await? as u64,
            ..ImportOutcome::default()
        };
        // TODO: one statement per checkpoint; a bundle of 100,000 checkpoints would want
        // UNNEST batches like insert_blobs.
        for cp in &import.checkpoints {
            if Self::import_checkpoint(&mut tx, session_id, cp).await? {
                outcome.imported += 1;
            } else {
                outcome.present += 1;
            }
        }
        for branch in &import.branches {
            if Self::import_branch(&mut tx, session_id, branch).await? {
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
             WHERE c.id = ANY($1)"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(&self.pool)
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
        let step = if first_parent {
            "SELECT c.parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
             WHERE c.parent_id IS NOT NULL"
        } else {
            "SELECT p.id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
             CROSS JOIN LATERAL (VALUES (c.parent_id), (c.merge_parent_id)) AS p(id) \
             WHERE p.id IS NOT NULL"
        };
        let sql = format!(
            "WITH RECURSIVE ancestry(id) AS (SELECT $1::uuid UNION {step}) \
             SELECT {CHECKPOINT_COLUMNS} FROM ancestry a \
             JOIN checkpoints c ON c.id = a.id JOIN sessions s ON s.id = c.session_id \
             WHERE ($2::int8 IS NULL OR c.seq < $2) ORDER BY c.seq DESC LIMIT $3"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(before.map(|b| b as i64))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    async fn edges(&self, roots: &[Uuid], min_generation: u64) -> Result<Vec<Edge>> {
        let rows: Vec<EdgeRow> = sqlx::query_as(
            "WITH RECURSIVE ancestry(id) AS ( \
                 SELECT unnest($1::uuid[]) \
                 UNION \
                 SELECT p.id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
                 CROSS JOIN LATERAL (VALUES (c.parent_id), (c.merge_parent_id)) AS p(id) \
                 WHERE p.id IS NOT NULL AND c.generation >= $2) \
             SELECT c.id, c.parent_id, c.merge_parent_id, c.generation \
             FROM ancestry a JOIN checkpoints c ON c.id = a.id",
        )
        .bind(roots)
        .bind(min_generation as i64)
        .fetch_all(&self.pool)
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
             JOIN sessions s ON s.id = b.session_id WHERE s.name = $1 AND b.name = $2",
        )
        .bind(session)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(BranchRecord::from))
    }

    async fn create_branch(&self, session: &str, name: &str, at: Uuid) -> Result<BranchRecord> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        Self::require_checkpoint(&mut tx, session_id, session, at).await?;
        let row: Option<BranchRow> = sqlx::query_as(
            "INSERT INTO branches (session_id, name, head) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO NOTHING \
             RETURNING name, head, created_at, updated_at",
        )
        .bind(session_id)
        .bind(name)
        .bind(at)
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
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
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
            "UPDATE branches SET head = $3, updated_at = now() WHERE session_id = $1 AND name = $2",
        )
        .bind(session_id)
        .bind(name)
        .bind(to)
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
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn delete_branch(&self, session: &str, name: &str, expected: Option<Uuid>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        let head = Self::head_of(&mut tx, session_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("branch {name} of session {session}")))?;
        if expected.is_some_and(|e| e != head) {
            return Err(CatalogError::HeadMoved {
                branch: name.to_owned(),
                current: Some(head),
            });
        }
        sqlx::query("DELETE FROM branches WHERE session_id = $1 AND name = $2")
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
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        Self::require_checkpoint(&mut tx, session_id, session, to).await?;
        let current: Option<Uuid> = sqlx::query_scalar(
            "SELECT checkpoint_id FROM tags WHERE session_id = $1 AND name = $2",
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
            "INSERT INTO tags (session_id, name, checkpoint_id) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id, updated_at = now()",
        )
        .bind(session_id)
        .bind(name)
        .bind(to)
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
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn delete_tag(&self, session: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        let removed: Option<Uuid> = sqlx::query_scalar(
            "DELETE FROM tags WHERE session_id = $1 AND name = $2 RETURNING checkpoint_id",
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
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    async fn list_tags(&self, session: &str) -> Result<Vec<TagRecord>> {
        let rows: Vec<TagRow> = sqlx::query_as(
            "SELECT t.name, t.checkpoint_id, t.created_at, t.updated_at FROM tags t \
             JOIN sessions s ON s.id = t.session_id WHERE s.name = $1 ORDER BY t.name",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| TagRecord {
                name: r.name,
                checkpoint: r.checkpoint_id,
                created_at: r.created_at,
                updated_at: r.updated_at,
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
             WHERE s.name = $1 AND r.ref_kind = $2 AND r.ref_name = $3 AND ($4::int8 IS NULL OR r.id < $4) \
             ORDER BY r.id DESC LIMIT $5",
        )
        .bind(session)
        .bind(kind as i16)
        .bind(name)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| RefLogRecord {
                id: r.id,
                kind: RefKind::from_i64(i64::from(r.ref_kind)).unwrap_or(RefKind::Branch),
                name: r.ref_name,
                old: r.old_head,
                new: r.new_head,
                op: r.op,
                actor: r.actor,
                at: r.created_at,
            })
            .collect())
    }

    async fn delete_session(&self, name: &str) -> Result<u64> {
        let deleted: Option<i64> =
            sqlx::query_scalar("DELETE FROM sessions WHERE name = $1 RETURNING checkpoint_count")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        deleted
            .map(|n| n as u64)
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))
    }
}

fn canonical_json(text: &str) -> Result<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .map_err(|e| CatalogError::Internal(format!("stored metadata is not JSON: {e}")))
}

/// Sorts database errors into what a caller can act on. The SQL text never leaves the server.
fn classify(err: sqlx::Error) -> CatalogError {
    const RETRYABLE: &[&str] = &[
        "40001", // serialization_failure
        "40P01", // deadlock_detected
        "53300", // too_many_connections
        "57P01", // admin_shutdown
        "57P03", // cannot_connect_now
    ];
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            CatalogError::Unavailable(err.to_string())
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| RETRYABLE.contains(&c.as_ref())) => {
            CatalogError::Unavailable(err.to_string())
        }
        _ => CatalogError::Internal(err.to_string()),
    }
}
