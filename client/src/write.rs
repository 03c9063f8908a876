//! What a caller sends to create a checkpoint ([`NewCheckpoint`], [`Changes`], [`Op`]), the
//! state diff that turns two states into changes, and the encoding of a checkpoint into either
//! one unary request or an upload stream.

use std::cmp::Ordering;

use bytes::Bytes;

use ckpt_proto::v1 as pb;
use pb::upload_checkpoint_request::Part;

use crate::{Error, State};

/// Size of the `Data` pieces a value is cut into on the upload stream. Large enough that the
/// per-message overhead vanishes, small enough to keep well under any message limit and to let
/// flow control interleave other streams on the connection.
pub const UPLOAD_PIECE_BYTES: usize = 256 * 1024;

/// One change to a parent's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to the value, adding the key if it is new.
    Put(String, Bytes),
    /// Removes `key`; removing a missing key is not an error.
    Delete(String),
}

impl Op {
    /// The key this change applies to.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }
}

/// The state of a new checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Changes {
    /// The whole state.
    Full(State),
    /// The parent's state with these changes applied in order.
    Incremental(Vec<Op>),
}

impl Changes {
    /// Total size of the values put, in bytes.
    pub fn put_bytes(&self) -> u64 {
        match self {
            Changes::Full(state) => state.values().map(|value| value.len() as u64).sum(),
            Changes::Incremental(ops) => ops
                .iter()
                .map(|op| match op {
                    Op::Put(_, value) => value.len() as u64,
                    Op::Delete(_) => 0,
                })
                .sum(),
        }
    }

    /// Number of changes sent: one per put or delete.
    pub fn len(&self) -> usize {
        match self {
            Changes::Full(state) => state.len(),
            Changes::Incremental(ops) => ops.len(),
        }
    }

    /// Whether no change is sent at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A checkpoint to create. Build one with [`NewCheckpoint::full`] or
/// [`NewCheckpoint::incremental`] and refine it with the builder methods.
#[derive(Clone, Debug, PartialEq)]
pub struct NewCheckpoint {
    /// The session to write to; created by its first checkpoint.
    pub session_id: String,
    /// The branch to write to; `None` means `main`.
    pub branch: Option<String>,
    /// The current head of the branch, or `None` when the branch has no checkpoint yet. A stale
    /// parent makes the write fail with [`Error::Aborted`].
    pub parent_id: Option<String>,
    /// A JSON object stored with the checkpoint; `Null` stands for `{}`.
    pub metadata: serde_json::Value,
    /// A free-form description.
    pub message: String,
    /// The state, whole or as changes to the parent's.
    pub changes: Changes,
    /// Makes the create idempotent: a retry with the same id returns the checkpoint the first
    /// attempt made. [`Client::create`](crate::Client::create) picks one when this is `None`.
    pub request_id: Option<String>,
    /// The token of a lease held on the branch (see
    /// [`Client::acquire_lease`](crate::Client::acquire_lease)).
    pub lease_token: Option<u64>,
}

impl NewCheckpoint {
    /// A checkpoint holding exactly `state`, on `main`, without parent.
    pub fn full(session_id: impl Into<String>, state: State) -> Self {
        Self::new(session_id.into(), Changes::Full(state))
    }

    /// A checkpoint holding the state of `parent_id` with `ops` applied in order.
    pub fn incremental(
        session_id: impl Into<String>,
        parent_id: impl Into<String>,
        ops: Vec<Op>,
    ) -> Self {
        Self::new(session_id.into(), Changes::Incremental(ops)).parent(parent_id)
    }

    fn new(session_id: String, changes: Changes) -> Self {
        NewCheckpoint {
            session_id,
            branch: None,
            parent_id: None,
            metadata: serde_json::Value::Null,
            message: String::new(),
            changes,
            request_id: None,
            lease_token: None,
        }
    }

    /// Names this create for retries: 1-128 bytes of `A-Z a-z 0-9 . _ - :`, unique per
    /// intended checkpoint within the session.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Writes under a lease held on the branch.
    pub fn lease(mut self, token: u64) -> Self {
        self.lease_token = Some(token);
        self
    }

    /// Writes to `branch` instead of `main`.
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = Some(branch.into());
        self
    }

    /// Follows checkpoint `id`, which must be the branch's current head.
    pub fn parent(mut self, id: impl Into<String>) -> Self {
        self.parent_id = Some(id.into());
        self
    }

    /// Attaches metadata; it must be a JSON object (or `Null` for none).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Attaches a description.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

/// The changes that turn `old` into `new`: a put for every key that is new or whose value
/// differs, a delete for every key that is gone, in key order.
pub fn diff(old: &State, new: &State) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut old_entries = old.iter().peekable();
    let mut new_entries = new.iter().peekable();
    loop {
        let order = match (old_entries.peek(), new_entries.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((old_key, _)), Some((new_key, _))) => old_key.cmp(new_key),
        };
        match order {
            Ordering::Less => {
                let (key, _) = old_entries.next().expect("peeked");
                ops.push(Op::Delete(key.clone()));
            }
            Ordering::Greater => {
                let (key, value) = new_entries.next().expect("peeked");
                ops.push(Op::Put(key.clone(), value.clone()));
            }
            Ordering::Equal => {
                let (_, old_value) = old_entries.next().expect("peeked");
                let (key, new_value) = new_entries.next().expect("peeked");
                if old_value != new_value {
                    ops.push(Op::Put(key.clone(), new_value.clone()));
                }
            }
        }
    }
    ops
}

/// Encodes a new checkpoint as a unary request, validating what the client can check alone.
pub(crate) fn create_request(new: NewCheckpoint) -> Result<pb::CreateCheckpointRequest, Error> {
    let metadata = encode_metadata(&new.metadata)?;
    let (mode, changes) = match new.changes {
        Changes::Full(state) => {
            let changes = state.into_iter().map(|(k, v)| Op::Put(k, v)).collect();
            (pb::CreateMode::Full, changes)
        }
        Changes::Incremental(ops) => (pb::CreateMode::Incremental, ops),
    };
    Ok(pb::CreateCheckpointRequest {
        session_id: new.session_id,
        branch: new.branch.unwrap_or_default(),
        parent_id: new.parent_id.unwrap_or_default(),
        metadata,
        message: new.message,
        mode: mode as i32,
        changes: changes.into_iter().map(wire_change).collect(),
        request_id: new.request_id.unwrap_or_default(),
        lease_token: new.lease_token.unwrap_or_default(),
    })
}

fn encode_metadata(metadata: &serde_json::Value) -> Result<String, Error> {
    match metadata {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::Object(_) => Ok(metadata.to_string()),
        _ => Err(Error::InvalidArgument(
            "metadata must be a JSON object".into(),
        )),
    }
}

fn wire_change(op: Op) -> pb::Change {
    let op = match op {
        Op::Put(key, value) => pb::change::Op::Put(pb::Entry { key, value }),
        Op::Delete(key) => pb::change::Op::Delete(key),
    };
    pb::Change { op: Some(op) }
}

/// Turns a unary request into the parts of an upload: the header, then per put an
/// `EntryHeader` and its value in pieces of [`UPLOAD_PIECE_BYTES`], per delete its key, then the
/// commit counting the changes. Pieces share the values' buffers; nothing is copied.
pub(crate) fn upload_parts(
    request: pb::CreateCheckpointRequest,
) -> impl Iterator<Item = pb::UploadCheckpointRequest> + Send + 'static {
    let header = Part::Header(pb::UploadHeader {
        session_id: request.session_id,
        branch: request.branch,
        parent_id: request.parent_id,
        metadata: request.metadata,
        message: request.message,
        mode: request.mode,
        request_id: request.request_id,
        lease_token: request.lease_token,
    });
    let commit = Part::Commit(pb::UploadCommit {
        change_count: request.changes.len() as u64,
    });
    let changes = request.changes.into_iter().flat_map(change_parts);

    std::iter::once(header)
        .chain(changes)
        .chain(std::iter::once(commit))
        .map(|part| pb::UploadCheckpointRequest { part: Some(part) })
}

fn change_parts(change: pb::Change) -> Box<dyn Iterator<Item = Part> + Send> {
    match change.op {
        Some(pb::change::Op::Put(entry)) => {
            let header = Part::Put(pb::EntryHeader {
                key: entry.key,
                size: entry.value.len() as u64,
            });
            Box::new(std::iter::once(header).chain(pieces(entry.value).map(Part::Data)))
        }
        Some(pb::change::Op::Delete(key)) => Box::new(std::iter::once(Part::Delete(key))),
        None => Box::new(std::iter::empty()),
    }
}

/// Cuts a value into pieces of at most [`UPLOAD_PIECE_BYTES`]; an empty value has none.
fn pieces(value: Bytes) -> impl Iterator<Item = Bytes> + Send {
    (0..value.len())
        .step_by(UPLOAD_PIECE_BYTES)
        .map(move |start| value.slice(start..value.len().min(start + UPLOAD_PIECE_BYTES)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(entries: &[(&str, &str)]) -> State {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    #[test]
    fn diff_puts_new_and_changed_keys_and_deletes_removed_ones() {
        let old = state(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let new = state(&[("a", "1"), ("b", "22"), ("d", "4")]);

        let ops = diff(&old, &new);

        assert_eq!(
            ops,
            vec![
                Op::Put("b".into(), Bytes::from_static(b"22")),
                Op::Delete("c".into()),
                Op::Put("d".into(), Bytes::from_static(b"4")),
            ]
        );
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        let s = state(&[("a", "1"), ("b/c", "")]);
        assert!(diff(&s, &s).is_empty());
    }

    #[test]
    fn diff_from_and_to_empty_state() {
        let s = state(&[("a", "1"), ("b", "2")]);
        assert_eq!(diff(&State::new(), &s).len(), 2);
        assert_eq!(
            diff(&s, &State::new()),
            vec![Op::Delete("a".into()), Op::Delete("b".into())]
        );
    }

    fn apply(mut state: State, ops: &[Op]) -> State {
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    state.insert(k.clone(), v.clone());
                }
                Op::Delete(k) => {
                    state.remove(k);
                }
            }
        }
        state
    }

    proptest::proptest! {
        #[test]
        fn applying_diff_to_old_gives_new(
            old in proptest::collection::btree_map("[a-c]{1,2}", "[xy]{0,2}", 0..8),
            new in proptest::collection::btree_map("[a-c]{1,2}", "[xy]{0,2}", 0..8),
        ) {
            let to_state = |m: std::collections::BTreeMap<String, String>| -> State {
                m.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect()
            };
            let (old, new) = (to_state(old), to_state(new));
            proptest::prop_assert_eq!(apply(old.clone(), &diff(&old, &new)), new);
        }
    }

    #[test]
    fn metadata_must_be_an_object_or_null() {
        let new = NewCheckpoint::full("s", State::new()).metadata(serde_json::json!([1]));
        assert!(matches!(
            create_request(new),
            Err(Error::InvalidArgument(_))
        ));

        let new = NewCheckpoint::full("s", State::new());
        assert_eq!(create_request(new).unwrap().metadata, "");
    }

    #[test]
    fn upload_parts_cut_values_and_count_changes() {
        let big = Bytes::from(vec![7u8; UPLOAD_PIECE_BYTES * 2 + 1]);
        let ops = vec![
            Op::Put("big".into(), big.clone()),
            Op::Delete("gone".into()),
            Op::Put("empty".into(), Bytes::new()),
        ];
        let new = NewCheckpoint::incremental("s", "p", ops).branch("b");

        let parts: Vec<Part> = upload_parts(create_request(new).unwrap())
            .map(|msg| msg.part.unwrap())
            .collect();

        let Part::Header(header) = &parts[0] else {
            panic!("first part must be the header: {parts:?}")
        };
        assert_eq!(header.parent_id, "p");
        assert_eq!(header.branch, "b");
        assert_eq!(header.mode, pb::CreateMode::Incremental as i32);
        assert!(matches!(&parts[1], Part::Put(h) if h.key == "big" && h.size == big.len() as u64));
        let sizes: Vec<usize> = parts[2..5]
            .iter()
            .map(|p| match p {
                Part::Data(d) => d.len(),
                other => panic!("expected data, got {other:?}"),
            })
            .collect();
        assert_eq!(sizes, [UPLOAD_PIECE_BYTES, UPLOAD_PIECE_BYTES, 1]);
        assert!(matches!(&parts[5], Part::Delete(k) if k == "gone"));
        assert!(matches!(&parts[6], Part::Put(h) if h.key == "empty" && h.size == 0));
        assert!(matches!(&parts[7], Part::Commit(c) if c.change_count == 3));
        assert_eq!(parts.len(), 8);
    }
}
