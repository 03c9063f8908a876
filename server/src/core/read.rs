//! The read path: a checkpoint's entries in key order, each value's chunks fetched several at
//! a time and verified against their hashes before a byte leaves the server.

use std::collections::HashMap;
use std::sync::Arc;

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

/// One step of a state stream: an entry starts, then its value's bytes follow in pieces.
#[derive(Clone, Debug)]
pub enum ReadEvent {
    Entry { key: String, size: u64 },
    Data(Bytes),
}

/// Events buffered between the reading task and the caller.
const READ_BUFFER: usize = 16;

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
        tokio::spawn(async move {
            if let Err(err) = engine.stream_state(&checkpoint, filter, &tx).await {
                let err = engine.explain_loss(checkpoint.id, err).await;
                let _ = tx.send(Err(err)).await;
            }
        });
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

        if !filter.keys.is_empty() {
            let mut keys = filter.keys;
            keys.sort();
            keys.dedup();
            for key in keys {
                let page = cursor.seek(&key).await.map_err(lost)?;
                if let Ok(i) = page.entries.binary_search_by(|e| e.key.as_str().cmp(&key)) {
                    self.send_entries(cp.id, &page.entries[i..=i], tx).await?;
                }
            }
            return Ok(());
        }

        let prefix = filter.prefix;
        let mut page = Some(cursor.seek(&prefix).await.map_err(lost)?);
        while let Some(current) = page {
            let matching: Vec<LeafEntry> = current
                .entries
                .iter()
                .filter(|e| e.key.starts_with(&prefix))
                .cloned()
                .collect();
            // Keys under a prefix are contiguous: a key past the prefix ends the scan.
            let past = current
                .entries
                .last()
                .is_some_and(|e| e.key > prefix && !e.key.starts_with(&prefix));
            if !self.send_entries(cp.id, &matching, tx).await? || past {
                return Ok(());
            }
            page = cursor.next_page().await.map_err(lost)?;
        }
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

    /// Sends entries and their verified bytes; returns false when the receiver has gone.
    async fn send_entries(
        &self,
        checkpoint: Uuid,
        entries: &[LeafEntry],
        tx: &mpsc::Sender<Result<ReadEvent, EngineError>>,
    ) -> Result<bool, EngineError> {
        let records = self.records_for(checkpoint, entries).await?;
        for entry in entries {
            let event = ReadEvent::Entry {
                key: entry.key.clone(),
                size: entry.size,
            };
            if tx.send(Ok(event)).await.is_err() {
                return Ok(false);
            }
            let chunks: Vec<BlobRecord> = entry
                .chunks
                .iter()
                .map(|c| records[&c.hash].clone())
                .collect();
            let mut blobs = self.fetch_blobs(chunks);
            while let Some(blob) = blobs.next().await {
                let (_, bytes) = blob.map_err(|f| f.into_error(checkpoint, Some(&entry.key)))?;
                if tx.send(Ok(ReadEvent::Data(bytes))).await.is_err() {
                    return Ok(false);
                }
            }
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
