//! The read path: a checkpoint's entries in key order, each value's chunks fetched several at
//! a time and verified against their hashes before a byte leaves the server.

use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::engine::{Engine, EngineError};
use super::hash::Hash;
use super::manifest::{Cursor, LeafEntry};
use super::validate;
use crate::catalog::{BlobRecord, CheckpointRecord};

/// Which checkpoint to read.
#[derive(Clone, Debug)]
pub enum ReadTarget {
    Checkpoint(Uuid),
    Head { session: String, branch: String },
}

/// Which entries to read: all, those under a prefix, or a list of keys.
#[derive(Clone, Debug, Default)]
pub struct ReadFilter {
    pub prefix: String,
    pub keys: Vec<String>,
}

/// One step of a state stream: a small value whole, or an entry's start followed by its
/// value's bytes in pieces.
#[derive(Clone, Debug)]
pub enum ReadEvent {
    /// Consecutive values of at most 64 KiB each, whole, up to about 256 KiB together.
    Values(Vec<(String, Bytes)>),
    /// A larger value starts: `Data` events carrying exactly `size` bytes follow.
    Entry {
        key: String,
        size: u64,
    },
    Data(Bytes),
}

/// Values up to this size are sent whole, gathered into [`ReadEvent::Values`].
const WHOLE_VALUE_BYTES: u64 = 64 * 1024;
/// Gathered whole values are sent once they reach this many bytes.
const VALUES_BYTES: usize = 256 * 1024;

/// Events buffered between the reading task and the caller.
const READ_BUFFER: usize = 16;

/// Entries are gathered until they reference this many chunks, and their registry rows read
/// in one query: a state of a thousand small values costs one round trip, not one per page.
const RECORDS_BATCH: usize = 1024;

/// Entries waiting for their registry rows.
#[derive(Default)]
struct Pending {
    entries: Vec<LeafEntry>,
    chunks: usize,
}

impl Pending {
    fn push(&mut self, entry: LeafEntry) {
        self.chunks += entry.chunks.len().max(1);
        self.entries.push(entry);
    }

    fn is_full(&self) -> bool {
        self.chunks >= RECORDS_BATCH
    }

    fn take(&mut self) -> Vec<LeafEntry> {
        self.chunks = 0;
        std::mem::take(&mut self.entries)
    }
}

impl Engine {
    /// Finds the checkpoint a read names.
    pub async fn resolve(&self, target: ReadTarget) -> Result<CheckpointRecord, EngineError> {
        match target {
            ReadTarget::Checkpoint(id) => self.checkpoint(id).await,
            ReadTarget::Head { session, branch } => {
                validate::name("head.session_id", &session)?;
                let branch = validate::branch("head.branch", &branch)?;
                let head = self.catalog.branch_head(&session, &branch).await?;
                let head = head.ok_or_else(|| {
                    EngineError::NotFound(format!("branch {branch} of session {session}"))
                })?;
                self.checkpoint(head).await
            }
        }
    }

    /// Streams the entries of `checkpoint` that `filter` selects. An error ends the stream;
    /// the caller must then discard what it received.
    pub fn read(
        self: &Arc<Self>,
        checkpoint: CheckpointRecord,
        filter: ReadFilter,
    ) -> Result<mpsc::Receiver<Result<ReadEvent, EngineError>>, EngineError> {
        if !filter.prefix.is_empty() && !filter.keys.is_empty() {
            return Err(EngineError::InvalidArgument {
                field: "keys".into(),
                reason: "cannot be combined with prefix".into(),
            });
        }
        for (i, key) in filter.keys.iter().enumerate() {
            validate::key(&format!("keys[{i}]"), key)?;
        }
        let (tx, rx) = mpsc::channel(READ_BUFFER);
        let engine = Arc::clone(self);
        tokio::spawn(
            async move {
                if let Err(err) = engine.stream_state(&checkpoint, filter, &tx).await {
                    let err = engine.explain_loss(checkpoint.id, err).await;
                    let _ = tx.send(Err(err)).await;
                }
            }
            // The stream outlives the handler: its catalog and store calls stay in the call's trace.
            .in_current_span(),
        );
        Ok(rx)
    }

    async fn stream_state(
        &self,
        cp: &CheckpointRecord,
        filter: ReadFilter,
        tx: &mpsc::Sender<Result<ReadEvent, EngineError>>,
    ) -> Result<(), EngineError> {
        let Some(root) = Engine::root_of(cp) else {
            return Ok(());
        };
        let loader = self.page_loader();
        let lost = |e: super::manifest::ManifestError| {
            EngineError::from(e).lost_in(format_args!("checkpoint {}", cp.id))
        };
        let mut cursor = Cursor::new(&loader, root.page, 0).await.map_err(lost)?;

        let mut pending = Pending::default();
        if !filter.keys.is_empty() {
            let mut keys = filter.keys;
            keys.sort();
            keys.dedup();
            for key in keys {
                let page = cursor.seek(&key).await.map_err(lost)?;
                if let Ok(i) = page.entries.binary_search_by(|e| e.key.as_str().cmp(&key)) {
                    pending.push(page.entries[i].clone());
                }
                if pending.is_full() && !self.send_entries(cp.id, &pending.take(), tx).await? {
                    return Ok(());
                }
            }
            self.send_entries(cp.id, &pending.take(), tx).await?;
            return Ok(());
        }

        let prefix = filter.prefix;
        let mut page = Some(cursor.seek(&prefix).await.map_err(lost)?);
        while let Some(current) = page {
            for entry in current
                .entries
                .iter()
                .filter(|e| e.key.starts_with(&prefix))
            {
                pending.push(entry.clone());
            }
            // Keys under a prefix are contiguous: a key past the prefix ends the scan.
            let past = current
                .entries
                .last()
                .is_some_and(|e| e.key > prefix && !e.key.starts_with(&prefix));
            if past {
                break;
            }
            if pending.is_full() && !self.send_entries(cp.id, &pending.take(), tx).await? {
                return Ok(());
            }
            page = cursor.next_page().await.map_err(lost)?;
        }
        self.send_entries(cp.id, &pending.take(), tx).await?;
        Ok(())
    }

    /// A blob that vanished under a read of a checkpoint deleted meanwhile (and collected) is
    /// not data loss: the checkpoint is gone, and the reader is told so.
    async fn explain_loss(&self, checkpoint: Uuid, err: EngineError) -> EngineError {
        if !matches!(err, EngineError::DataLoss(_)) {
            return err;
        }
        match self.catalog.checkpoint(checkpoint).await {
            Ok(None) => EngineError::NotFound(format!(
                "checkpoint {checkpoint} (deleted while it was being read)"
            )),
            _ => err,
        }
    }

    /// Sends entries and their verified bytes; returns false when the receiver has gone. The
    /// chunks of all the entries are fetched several at a time, across entries, in order.
    async fn send_entries(
        &self,
        checkpoint: Uuid,
        entries: &[LeafEntry],
        tx: &mpsc::Sender<Result<ReadEvent, EngineError>>,
    ) -> Result<bool, EngineError> {
        if entries.is_empty() {
            return Ok(true);
        }
        let records = self.records_for(checkpoint, entries).await?;
        let chunks: Vec<BlobRecord> = entries
            .iter()
            .flat_map(|e| e.chunks.iter().map(|c| records[&c.hash].clone()))
            .collect();
        let mut blobs = self.fetch_blobs(chunks);
        let mut values = Vec::new();
        let mut values_bytes = 0;
        for entry in entries {
            let lost = |f: super::engine::BlobFault| f.into_error(checkpoint, Some(&entry.key));
            if entry.size <= WHOLE_VALUE_BYTES {
                let mut pieces = Vec::with_capacity(entry.chunks.len());
                for _ in &entry.chunks {
                    let (_, bytes) = blobs
                        .next()
                        .await
                        .expect("one blob per chunk")
                        .map_err(lost)?;
                    pieces.push(bytes);
                }
                let value: Bytes = match pieces.len() {
                    0 => Bytes::new(),
                    1 => pieces.pop().expect("one piece"),
                    _ => pieces.concat().into(),
                };
                values_bytes += value.len();
                values.push((entry.key.clone(), value));
                if values_bytes >= VALUES_BYTES {
                    values_bytes = 0;
                    if tx
                        .send(Ok(ReadEvent::Values(std::mem::take(&mut values))))
                        .await
                        .is_err()
                    {
                        return Ok(false);
                    }
                }
                continue;
            }
            if !values.is_empty() {
                values_bytes = 0;
                if tx
                    .send(Ok(ReadEvent::Values(std::mem::take(&mut values))))
                    .await
                    .is_err()
                {
                    return Ok(false);
                }
            }
            let event = ReadEvent::Entry {
                key: entry.key.clone(),
                size: entry.size,
            };
            if tx.send(Ok(event)).await.is_err() {
                return Ok(false);
            }
            for _ in &entry.chunks {
                let (_, bytes) = blobs
                    .next()
                    .await
                    .expect("one blob per chunk")
                    .map_err(lost)?;
                if tx.send(Ok(ReadEvent::Data(bytes))).await.is_err() {
                    return Ok(false);
                }
            }
        }
        if !values.is_empty() && tx.send(Ok(ReadEvent::Values(values))).await.is_err() {
            return Ok(false);
        }
        Ok(true)
    }

    /// Registry rows of every chunk of `entries`, in one catalog query.
    async fn records_for(
        &self,
        checkpoint: Uuid,
        entries: &[LeafEntry],
    ) -> Result<HashMap<Hash, BlobRecord>, EngineError> {
        let mut hashes: Vec<Hash> = entries
            .iter()
            .flat_map(|e| e.chunks.iter().map(|c| c.hash))
            .collect();
        hashes.sort();
        hashes.dedup();
        match self.blob_records(&hashes).await {
            Ok(records) => Ok(records.into_iter().map(|r| (r.hash, r)).collect()),
            Err(fault) => {
                let key = match &fault {
                    super::engine::BlobFault::Lost(hash, _) => entries
                        .iter()
                        .find(|e| e.chunks.iter().any(|c| c.hash == *hash))
                        .map(|e| e.key.as_str()),
                    super::engine::BlobFault::Unavailable(_) => None,
                };
                Err(fault.into_error(checkpoint, key))
            }
        }
    }
}
