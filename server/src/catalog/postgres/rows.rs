//! Row types of the postgres catalog, their conversions, and error classification.

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
    pub(super) created_at: DateTime<Utc>,
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
pub(super) struct SessionRow {
    pub(super) name: String,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) checkpoint_count: i64,
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
pub(super) struct BranchRow {
    pub(super) name: String,
    pub(super) head: Uuid,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
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
pub(super) struct TagRow {
    pub(super) name: String,
    pub(super) checkpoint_id: Uuid,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(super) struct RefLogRow {
    pub(super) id: i64,
    pub(super) ref_kind: i16,
    pub(super) ref_name: String,
    pub(super) old_head: Option<Uuid>,
    pub(super) new_head: Option<Uuid>,
    pub(super) op: String,
    pub(super) actor: Option<String>,
    pub(super) created_at: DateTime<Utc>,
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
    pub(super) codec: i16,
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
        Ok(Self {
            hash: Hash::from_slice(&row.hash).ok_or_else(|| bad("hash"))?,
            codec: Codec::from_i16(row.codec).ok_or_else(|| bad("codec"))?,
            raw_len: row.raw_len as u64,
            location,
        })
    }
}

pub(super) fn canonical_json(text: &str) -> Result<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .map_err(|e| CatalogError::Internal(format!("stored metadata is not JSON: {e}")))
}

/// Sorts database errors into what a caller can act on. The SQL text never leaves the server.
pub(super) fn classify(err: sqlx::Error) -> CatalogError {
    const RETRYABLE: &[&str] = &[
        "40001", // serialization_failure
        "40P01", // deadlock_detected
        "53300", // too_many_connections
        "57P01", // admin_shutdown
        "57P03", // cannot_connect_now
        "55P03", // lock_not_available (a lock_timeout ran out)
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
