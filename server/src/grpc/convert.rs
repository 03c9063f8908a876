//! Catalog records as wire messages.

use ckpt_proto::v1;
use prost_types::Timestamp;

use crate::catalog::{CheckpointRecord, SessionRecord};

pub(crate) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub(crate) fn checkpoint(cp: CheckpointRecord) -> v1::Checkpoint {
    v1::Checkpoint {
        id: cp.id.to_string(),
        session_id: cp.session,
        branch: cp.branch,
        parent_ids: cp.parents.iter().map(|p| p.to_string()).collect(),
        create_time: Some(timestamp(cp.created_at)),
        metadata: cp.metadata,
        message: cp.message,
        summary: Some(v1::CheckpointSummary {
            entry_count: cp.entry_count,
            logical_bytes: cp.logical_bytes,
            stored_bytes: cp.stored_bytes,
        }),
        sequence: cp.seq,
    }
}

pub(crate) fn session(s: SessionRecord) -> v1::Session {
    v1::Session {
        id: s.name,
        create_time: Some(timestamp(s.created_at)),
        update_time: Some(timestamp(s.updated_at)),
        checkpoint_count: s.checkpoint_count,
    }
}
