//! Reading a checkpoint's state: what to read ([`Target`], [`ReadFilter`]) and
//! [`StateReader`], which walks the `ReadState` stream entry by entry and checks it as it goes.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use ckpt_proto::v1 as pb;
use pb::read_state_response::Part;

use crate::model::missing;
use crate::{Checkpoint, Error, State};

/// The checkpoint whose state to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A checkpoint by id.
    Checkpoint(String),
    /// Whatever checkpoint is the head of a branch when the server reads it.
    Head {
        /// The session.
        session_id: String,
        /// The branch; empty means `main`.
        branch: String,
    },
}

impl Target {
    /// A checkpoint by id.
    pub fn checkpoint(id: impl Into<String>) -> Self {
        Target::Checkpoint(id.into())
    }

    /// The head of a session's `main` branch.
    pub fn head(session_id: impl Into<String>) -> Self {
        Self::branch_head(session_id, "main")
    }

    /// The head of a session's branch.
    pub fn branch_head(session_id: impl Into<String>, branch: impl Into<String>) -> Self {
        Target::Head {
            session_id: session_id.into(),
            branch: branch.into(),
        }
    }

    pub(crate) fn into_wire(self) -> pb::read_state_request::Target {
        match self {
            Target::Checkpoint(id) => pb::read_state_request::Target::CheckpointId(id),
            Target::Head { session_id, branch } => {
                pb::read_state_request::Target::Head(pb::BranchHead { session_id, branch })
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Checkpoint(id) => write!(f, "checkpoint {id}"),
            Target::Head { session_id, branch } if branch.is_empty() => {
                write!(f, "head of {session_id}@main")
            }
            Target::Head { session_id, branch } => write!(f, "head of {session_id}@{branch}"),
        }
    }
}

/// Which entries of a state to read; the default reads them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadFilter {
    /// Only keys starting with this prefix.
    pub prefix: Option<String>,
    /// Only these keys (missing ones are skipped); empty means no restriction. Cannot be
    /// combined with `prefix`.
    pub keys: Vec<String>,
}

impl ReadFilter {
    /// Only keys starting with `prefix`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        ReadFilter {
            prefix: Some(prefix.into()),
            keys: Vec::new(),
        }
    }

    /// Only the given keys.
    pub fn only_keys<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        ReadFilter {
            prefix: None,
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the filter lets every entry through.
    pub fn is_all(&self) -> bool {
        self.prefix.is_none() && self.keys.is_empty()
    }

    pub(crate) fn into_request(self, target: Target) -> Result<pb::ReadStateRequest, Error> {
        if self.prefix.is_some() && !self.keys.is_empty() {
            return Err(Error::InvalidArgument(
                "a read filter cannot combine a prefix with keys".into(),
            ));
        }
        Ok(pb::ReadStateRequest {
            target: Some(target.into_wire()),
            prefix: self.prefix.unwrap_or_default(),
            keys: self.keys,
            batch_entries: true,
        })
    }
}

/// The key and size of an entry announced on a [`StateReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    /// The entry's key.
    pub key: String,
    /// The value's size in bytes.
    pub size: u64,
}

/// A state being streamed from the server, read entry by entry so that a state of any size can
/// be written out without holding it whole.
///
/// Call [`next_entry`](Self::next_entry) to move to the next entry, then
/// [`next_piece`](Self::next_piece) (or [`read_value`](Self::read_value)) for its value. Any
/// error, including a stream that ends early or a value longer or shorter than announced, is
/// returned as an `Err`; after one, stop reading.
pub struct StateReader {
    checkpoint: Checkpoint,
    stream: ResponseStream,
    open: Option<OpenEntry>,
    /// Whole entries received in a batch and not yet handed out.
    batched: VecDeque<pb::Entry>,
}

/// The `ReadState` response stream; boxed so tests can feed wire messages without a server.
type ResponseStream = BoxStream<'static, Result<pb::ReadStateResponse, tonic::Status>>;

impl fmt::Debug for StateReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateReader")
            .field("checkpoint", &self.checkpoint.id)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct OpenEntry {
    key: String,
    size: u64,
    remaining: u64,
    /// The whole value, when it came in a batch.
    whole: Option<Bytes>,
}

impl StateReader {
    /// Reads the stream's first message, which must be the resolved checkpoint.
    pub(crate) async fn open(mut stream: ResponseStream) -> Result<Self, Error> {
        let checkpoint = match next_part(&mut stream).await? {
            Some(Part::Checkpoint(checkpoint)) => Checkpoint::try_from(checkpoint)?,
            Some(_) => {
                return Err(Error::Protocol(
                    "ReadState did not start with the checkpoint".into(),
                ));
            }
            None => return Err(Error::Protocol("ReadState returned an empty stream".into())),
        };
        Ok(StateReader {
            checkpoint,
            stream,
            open: None,
            batched: VecDeque::new(),
        })
    }

    /// The checkpoint being read (resolved from the branch head when reading a head).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Moves to the next entry, skipping what is left of the current one. Returns `None` once
    /// the whole state has been read.
    pub async fn next_entry(&mut self) -> Result<Option<EntryHeader>, Error> {
        while self.next_piece().await?.is_some() {}

        if self.batched.is_empty() {
            match next_part(&mut self.stream).await? {
                None => return Ok(None),
                Some(Part::Entry(header)) => {
                    self.open = Some(OpenEntry {
                        key: header.key.clone(),
                        size: header.size,
                        remaining: header.size,
                        whole: None,
                    });
                    return Ok(Some(EntryHeader {
                        key: header.key,
                        size: header.size,
                    }));
                }
                Some(Part::Entries(batch)) if batch.entries.is_empty() => {
                    return Err(Error::Protocol("ReadState sent an empty batch".into()));
                }
                Some(Part::Entries(batch)) => self.batched.extend(batch.entries),
                Some(Part::Data(_)) => {
                    return Err(Error::Protocol(
                        "ReadState sent value bytes outside an entry".into(),
                    ));
                }
                Some(Part::Checkpoint(_)) => {
                    return Err(Error::Protocol("ReadState sent a second checkpoint".into()));
                }
            }
        }
        let entry = self.batched.pop_front().expect("a batch has entries");
        let size = entry.value.len() as u64;
        self.open = Some(OpenEntry {
            key: entry.key.clone(),
            size,
            remaining: size,
            whole: Some(entry.value),
        });
        Ok(Some(EntryHeader {
            key: entry.key,
            size,
        }))
    }

    /// The next piece of the current entry's value, or `None` once all its bytes were returned.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(open) = &self.open else {
            return Ok(None);
        };
        if open.remaining == 0 {
            self.open = None;
            return Ok(None);
        }
        if let Some(open) = self.open.as_mut()
            && let Some(whole) = open.whole.take()
        {
            open.remaining = 0;
            return Ok(Some(whole));
        }

        let part = next_part(&mut self.stream).await?;
        let open = self.open.as_mut().expect("checked above");
        let received = open.size - open.remaining;
        match part {
            Some(Part::Data(piece)) if piece.len() as u64 > open.remaining => {
                Err(Error::Protocol(format!(
                    "entry {:?} is longer than the {} bytes announced",
                    open.key, open.size
                )))
            }
            Some(Part::Data(piece)) => {
                open.remaining -= piece.len() as u64;
                Ok(Some(piece))
            }
            Some(_) | None => Err(Error::Protocol(format!(
                "entry {:?} ended after {received} of the {} bytes announced",
                open.key, open.size
            ))),
        }
    }

    /// The rest of the current entry's value in one buffer. A value sent in one piece is
    /// returned without copying.
    pub async fn read_value(&mut self) -> Result<Bytes, Error> {
        let mut pieces = Vec::new();
        while let Some(piece) = self.next_piece().await? {
            pieces.push(piece);
        }
        if pieces.len() == 1 {
            return Ok(pieces.pop().expect("one piece"));
        }
        let total = pieces.iter().map(Bytes::len).sum();
        let mut value = BytesMut::with_capacity(total);
        for piece in pieces {
            value.extend_from_slice(&piece);
        }
        Ok(value.freeze())
    }

    /// Reads every remaining entry into memory. Fails as a whole on any error: a partial state
    /// is never returned.
    pub async fn collect(self) -> Result<(Checkpoint, State), Error> {
        self.collect_with_progress(|_| {}).await
    }

    /// Like [`collect`](Self::collect), calling `progress` with the size of each value read.
    pub async fn collect_with_progress<P>(
        mut self,
        mut progress: P,
    ) -> Result<(Checkpoint, State), Error>
    where
        P: FnMut(u64),
    {
        let mut state = State::new();
        while let Some(entry) = self.next_entry().await? {
            let value = self.read_value().await?;
            progress(value.len() as u64);
            if state.insert(entry.key.clone(), value).is_some() {
                return Err(Error::Protocol(format!(
                    "ReadState sent entry {:?} twice",
                    entry.key
                )));
            }
        }
        Ok((self.checkpoint, state))
    }
}

async fn next_part(stream: &mut ResponseStream) -> Result<Option<Part>, Error> {
    match stream.next().await.transpose()? {
        None => Ok(None),
        Some(message) => message
            .part
            .map(Some)
            .ok_or_else(|| missing("ReadStateResponse.part")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Part {
        Part::Checkpoint(pb::Checkpoint {
            id: "c1".into(),
            session_id: "s".into(),
            branch: "main".into(),
            create_time: Some(prost_types::Timestamp::default()),
            summary: Some(pb::CheckpointSummary::default()),
            sequence: 1,
            ..Default::default()
        })
    }

    fn entry(key: &str, size: u64) -> Part {
        Part::Entry(pb::EntryHeader {
            key: key.into(),
            size,
        })
    }

    fn data(bytes: &'static [u8]) -> Part {
        Part::Data(Bytes::from_static(bytes))
    }

    async fn read(parts: Vec<Result<Part, tonic::Status>>) -> Result<State, Error> {
        let messages = parts
            .into_iter()
            .map(|part| part.map(|part| pb::ReadStateResponse { part: Some(part) }));
        let reader = StateReader::open(futures::stream::iter(messages).boxed()).await?;
        Ok(reader.collect().await?.1)
    }

    #[tokio::test]
    async fn collect_joins_pieces_and_keeps_empty_values() {
        let state = read(vec![
            Ok(checkpoint()),
            Ok(entry("a", 5)),
            Ok(data(b"he")),
            Ok(data(b"llo")),
            Ok(entry("b", 0)),
            Ok(entry("c", 1)),
            Ok(data(b"x")),
        ])
        .await
        .unwrap();

        assert_eq!(state.len(), 3);
        assert_eq!(state["a"], Bytes::from_static(b"hello"));
        assert_eq!(state["b"], Bytes::new());
        assert_eq!(state["c"], Bytes::from_static(b"x"));
    }

    #[tokio::test]
    async fn value_shorter_than_announced_is_a_protocol_error() {
        let cut_at_end = read(vec![Ok(checkpoint()), Ok(entry("a", 5)), Ok(data(b"he"))]).await;
        assert!(
            matches!(cut_at_end, Err(Error::Protocol(_))),
            "{cut_at_end:?}"
        );

        let cut_by_next = read(vec![Ok(checkpoint()), Ok(entry("a", 2)), Ok(entry("b", 0))]).await;
        assert!(
            matches!(cut_by_next, Err(Error::Protocol(_))),
            "{cut_by_next:?}"
        );
    }

    #[tokio::test]
    async fn value_longer_than_announced_is_a_protocol_error() {
        let result = read(vec![Ok(checkpoint()), Ok(entry("a", 1)), Ok(data(b"xy"))]).await;
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");

        let extra_piece = read(vec![
            Ok(checkpoint()),
            Ok(entry("a", 1)),
            Ok(data(b"x")),
            Ok(data(b"y")),
        ])
        .await;
        assert!(
            matches!(extra_piece, Err(Error::Protocol(_))),
            "{extra_piece:?}"
        );
    }

    fn batch(entries: &[(&str, &'static [u8])]) -> Part {
        Part::Entries(pb::EntryBatch {
            entries: entries
                .iter()
                .map(|(key, value)| pb::Entry {
                    key: (*key).into(),
                    value: Bytes::from_static(value),
                })
                .collect(),
        })
    }

    #[tokio::test]
    async fn batched_entries_mix_with_streamed_ones() {
        let state = read(vec![
            Ok(checkpoint()),
            Ok(batch(&[("a", b"1"), ("b", b""), ("c", b"333")])),
            Ok(entry("d", 4)),
            Ok(data(b"44")),
            Ok(data(b"44")),
            Ok(batch(&[("e", b"5")])),
        ])
        .await
        .unwrap();
        let got: Vec<(&str, &[u8])> = state.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
        assert_eq!(
            got,
            vec![
                ("a", &b"1"[..]),
                ("b", b""),
                ("c", b"333"),
                ("d", b"4444"),
                ("e", b"5")
            ]
        );
    }

    #[tokio::test]
    async fn a_batch_cannot_interrupt_a_streamed_value_or_repeat_a_key() {
        let interrupted = read(vec![
            Ok(checkpoint()),
            Ok(entry("a", 2)),
            Ok(data(b"x")),
            Ok(batch(&[("b", b"1")])),
        ])
        .await;
        assert!(
            matches!(interrupted, Err(Error::Protocol(_))),
            "{interrupted:?}"
        );

        let repeated = read(vec![
            Ok(checkpoint()),
            Ok(batch(&[("a", b"1"), ("a", b"2")])),
        ])
        .await;
        assert!(matches!(repeated, Err(Error::Protocol(_))), "{repeated:?}");

        let empty = read(vec![Ok(checkpoint()), Ok(batch(&[]))]).await;
        assert!(matches!(empty, Err(Error::Protocol(_))), "{empty:?}");
    }

    #[tokio::test]
    async fn error_status_mid_stream_fails_the_whole_read() {
        let result = read(vec![
            Ok(checkpoint()),
            Ok(entry("a", 1)),
            Ok(data(b"x")),
            Err(tonic::Status::data_loss("chunk missing")),
        ])
        .await;
        assert!(matches!(result, Err(Error::DataLoss(_))), "{result:?}");
    }

    #[tokio::test]
    async fn stream_must_start_with_checkpoint() {
        let result = read(vec![Ok(entry("a", 0))]).await;
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");

        let empty = read(vec![]).await;
        assert!(matches!(empty, Err(Error::Protocol(_))), "{empty:?}");
    }

    #[tokio::test]
    async fn duplicate_keys_are_a_protocol_error() {
        let result = read(vec![Ok(checkpoint()), Ok(entry("a", 0)), Ok(entry("a", 0))]).await;
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    }

    #[tokio::test]
    async fn next_entry_skips_the_unread_rest_of_a_value() {
        let messages = [
            checkpoint(),
            entry("a", 2),
            data(b"x"),
            data(b"y"),
            entry("b", 0),
        ]
        .into_iter()
        .map(|part| Ok(pb::ReadStateResponse { part: Some(part) }));
        let mut reader = StateReader::open(futures::stream::iter(messages).boxed())
            .await
            .unwrap();

        assert_eq!(reader.next_entry().await.unwrap().unwrap().key, "a");
        assert_eq!(reader.next_entry().await.unwrap().unwrap().key, "b");
        assert_eq!(reader.next_entry().await.unwrap(), None);
    }

    #[test]
    fn filter_rejects_prefix_with_keys() {
        let filter = ReadFilter {
            prefix: Some("a".into()),
            keys: vec!["a/b".into()],
        };
        assert!(matches!(
            filter.into_request(Target::head("s")),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn head_target_defaults_to_main() {
        assert_eq!(
            Target::head("s"),
            Target::Head {
                session_id: "s".into(),
                branch: "main".into()
            }
        );
        assert_eq!(Target::head("s").to_string(), "head of s@main");
    }
}
