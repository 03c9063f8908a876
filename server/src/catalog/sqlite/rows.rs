//! Row types of the sqlite catalog, their conversions, and error classification.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::catalog::{
    BlobRecord, BranchRecord, CatalogError, CheckpointRecord, Location, Result, SessionRecord,
    manifest_root,
};
use crate::core::codec::Codec;
use crate::core::hash::Hash;
#[derive(sqlx::FromRow)]
pub(super) struct CheckpointRow {
    pub(super) id: Uuid,
    pub(super) session: String,
    pub(super) seq: i64,
    pub(super) branch: String,
    pub(super) parent_id: Option<Uuid>,
    pub(super) merge_parent_id: Option<Uuid>,
    pub(super) generation: i64,
    pub(super) created_at: i64,
    pub(super) metadata: String,
    pub(super) message: String,
    pub(super) manifest_root: Option<Vec<u8>>,
    pub(super) entry_count: i64,
    pub(super) logical_bytes: i64,
    pub(super) stored_bytes: i64,
}

impl TryFrom<CheckpointRow> for CheckpointRecord {
    type Error = CatalogError;

    fn try_from(row: CheckpointRow) -> Result<Self> {
        let manifest_root = manifest_root(row.id, row.manifest_root)?;
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
pub(super) struct SessionRow {
    pub(super) name: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) checkpoint_count: i64,
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
pub(super) struct BranchRow {
    pub(super) name: String,
    pub(super) head: Uuid,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
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
pub(super) struct TagRow {
    pub(super) name: String,
    pub(super) checkpoint_id: Uuid,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct RefLogRow {
    pub(super) id: i64,
    pub(super) ref_kind: i64,
    pub(super) ref_name: String,
    pub(super) old_head: Option<Uuid>,
    pub(super) new_head: Option<Uuid>,
    pub(super) op: String,
    pub(super) actor: Option<String>,
    pub(super) created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct EdgeRow {
    pub(super) id: Uuid,
    pub(super) parent_id: Option<Uuid>,
    pub(super) merge_parent_id: Option<Uuid>,
    pub(super) generation: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct BlobRow {
    pub(super) hash: Vec<u8>,
    pub(super) codec: i64,
    pub(super) raw_len: i64,
    pub(super) data: Option<Vec<u8>>,
    pub(super) object_key: Option<String>,
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

pub(super) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(super) fn from_micros(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The hashes as a JSON array of hex strings, for `json_each` (SQLite has no array binds).
pub(super) fn hex_array(hashes: &[Hash]) -> String {
    serde_json::Value::from(hashes.iter().map(Hash::to_hex).collect::<Vec<_>>()).to_string()
}

/// The ids as a JSON array of hex strings, for `json_each`.
pub(super) fn uuid_array(ids: &[Uuid]) -> String {
    serde_json::Value::from(
        ids.iter()
            .map(|id| id.simple().to_string())
            .collect::<Vec<_>>(),
    )
    .to_string()
}

/// Sorts SQLite errors into what a caller can act on.
pub(super) fn classify(err: sqlx::Error) -> CatalogError {
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
