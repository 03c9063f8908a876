//! Domain types returned by the client: checkpoints, sessions and pages of them, built from the
//! wire types with `TryFrom` so a malformed response is rejected once, naming the bad field.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use ckpt_proto::v1 as pb;

use crate::Error;

/// A checkpoint's state: keys in byte order, each with its value.
pub type State = BTreeMap<String, Bytes>;

/// A saved checkpoint, without its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Server-assigned, time-ordered UUID (version 7) in canonical text form.
    pub id: String,
    /// The session the checkpoint belongs to.
    pub session_id: String,
    /// The branch the checkpoint was written on.
    pub branch: String,
    /// The parents, first parent first; empty for a session's first checkpoint.
    pub parent_ids: Vec<String>,
    /// When the server committed the checkpoint.
    pub create_time: DateTime<Utc>,
    /// Caller-supplied metadata, always a JSON object.
    pub metadata: serde_json::Value,
    /// Caller-supplied description.
    pub message: String,
    /// Sizes of the state.
    pub summary: Summary,
    /// Position in the session's commit order, starting at 1.
    pub sequence: u64,
}

/// Sizes of a checkpoint's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of keys in the state.
    pub entry_count: u64,
    /// Sum of the value sizes, uncompressed.
    pub logical_bytes: u64,
    /// Bytes this checkpoint added to storage; zero when everything was deduplicated.
    pub stored_bytes: u64,
}

/// A session: a named history of checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session id chosen by the caller at its first checkpoint.
    pub id: String,
    /// When the session's first checkpoint was written.
    pub create_time: DateTime<Utc>,
    /// When the session last changed.
    pub update_time: DateTime<Utc>,
    /// Number of checkpoints the session holds.
    pub checkpoint_count: u64,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Token for the next page; empty on the last page.
    pub next_page_token: String,
}

impl TryFrom<pb::Checkpoint> for Checkpoint {
    type Error = Error;

    fn try_from(wire: pb::Checkpoint) -> Result<Self, Error> {
        let create_time = timestamp("Checkpoint.create_time", wire.create_time)?;
        let summary = wire.summary.ok_or_else(|| missing("Checkpoint.summary"))?;
        let metadata = parse_metadata(&wire.metadata)?;
        Ok(Checkpoint {
            id: wire.id,
            session_id: wire.session_id,
            branch: wire.branch,
            parent_ids: wire.parent_ids,
            create_time,
            metadata,
            message: wire.message,
            summary: Summary {
                entry_count: summary.entry_count,
                logical_bytes: summary.logical_bytes,
                stored_bytes: summary.stored_bytes,
            },
            sequence: wire.sequence,
        })
    }
}

impl TryFrom<pb::Session> for Session {
    type Error = Error;

    fn try_from(wire: pb::Session) -> Result<Self, Error> {
        Ok(Session {
            create_time: timestamp("Session.create_time", wire.create_time)?,
            update_time: timestamp("Session.update_time", wire.update_time)?,
            id: wire.id,
            checkpoint_count: wire.checkpoint_count,
        })
    }
}

/// Converts a list of wire items, failing on the first malformed one.
pub(crate) fn convert_all<W, T>(wire: Vec<W>) -> Result<Vec<T>, Error>
where
    T: TryFrom<W, Error = Error>,
{
    wire.into_iter().map(T::try_from).collect()
}

pub(crate) fn timestamp(
    field: &str,
    ts: Option<prost_types::Timestamp>,
) -> Result<DateTime<Utc>, Error> {
    let ts = ts.ok_or_else(|| missing(field))?;
    let nanos = u32::try_from(ts.nanos).ok();
    nanos
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .ok_or_else(|| Error::Protocol(format!("{field} is out of range: {ts}")))
}

/// Empty metadata means `{}`; anything else must be a JSON object.
fn parse_metadata(text: &str) -> Result<serde_json::Value, Error> {
    if text.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| Error::Protocol(format!("Checkpoint.metadata is not JSON: {err}")))?;
    if !value.is_object() {
        return Err(Error::Protocol(
            "Checkpoint.metadata is not a JSON object".into(),
        ));
    }
    Ok(value)
}

pub(crate) fn missing(field: &str) -> Error {
    Error::Protocol(format!("{field} is missing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_checkpoint() -> pb::Checkpoint {
        pb::Checkpoint {
            id: "0193aaaa-0000-7000-8000-000000000001".into(),
            session_id: "s1".into(),
            branch: "main".into(),
            parent_ids: vec![],
            create_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            metadata: r#"{"step":3}"#.into(),
            message: "first".into(),
            summary: Some(pb::CheckpointSummary {
                entry_count: 2,
                logical_bytes: 10,
                stored_bytes: 7,
            }),
            sequence: 1,
        }
    }

    #[test]
    fn checkpoint_converts_from_wire() {
        let checkpoint = Checkpoint::try_from(wire_checkpoint()).unwrap();
        assert_eq!(checkpoint.metadata, serde_json::json!({"step": 3}));
        assert_eq!(checkpoint.create_time.timestamp(), 1_700_000_000);
        assert_eq!(checkpoint.summary.stored_bytes, 7);
    }

    #[test]
    fn checkpoint_with_empty_metadata_gets_empty_object() {
        let mut wire = wire_checkpoint();
        wire.metadata.clear();
        let checkpoint = Checkpoint::try_from(wire).unwrap();
        assert_eq!(checkpoint.metadata, serde_json::json!({}));
    }

    #[test]
    fn checkpoint_without_create_time_names_the_field() {
        let mut wire = wire_checkpoint();
        wire.create_time = None;
        let err = Checkpoint::try_from(wire).unwrap_err();
        assert!(err.to_string().contains("Checkpoint.create_time"), "{err}");
    }

    #[test]
    fn checkpoint_with_non_object_metadata_is_rejected() {
        let mut wire = wire_checkpoint();
        wire.metadata = "[1]".into();
        assert!(matches!(
            Checkpoint::try_from(wire),
            Err(Error::Protocol(_))
        ));
    }
}
