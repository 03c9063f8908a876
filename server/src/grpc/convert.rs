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

pub(crate) fn branch(session: &str, b: crate::catalog::BranchRecord) -> v1::Branch {
    v1::Branch {
        session_id: session.to_owned(),
        name: b.name,
        head: b.head.to_string(),
        create_time: Some(timestamp(b.created_at)),
        update_time: Some(timestamp(b.updated_at)),
    }
}

pub(crate) fn tag(session: &str, t: crate::catalog::TagRecord) -> v1::Tag {
    v1::Tag {
        session_id: session.to_owned(),
        name: t.name,
        checkpoint_id: t.checkpoint.to_string(),
        create_time: Some(timestamp(t.created_at)),
        update_time: Some(timestamp(t.updated_at)),
    }
}

pub(crate) fn ref_log(r: crate::catalog::RefLogRecord) -> v1::RefLogEntry {
    let kind = match r.kind {
        crate::catalog::RefKind::Branch => v1::RefKind::Branch,
        crate::catalog::RefKind::Tag => v1::RefKind::Tag,
    };
    v1::RefLogEntry {
        id: r.id,
        kind: kind as i32,
        name: r.name,
        old_head: r.old.map(|u| u.to_string()).unwrap_or_default(),
        new_head: r.new.map(|u| u.to_string()).unwrap_or_default(),
        operation: r.op,
        actor: r.actor.unwrap_or_default(),
        time: Some(timestamp(r.at)),
    }
}
