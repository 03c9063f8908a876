//! Where new blobs wait for their commit: deduplicated against the registry in batches,
//! compressed, and stored inline or in the object store. Used by creates and by imports.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

use super::codec::Encoded;
use super::engine::{Engine, EngineError};
use super::hash::Hash;
use crate::blobs::object_key;
use crate::catalog::{BlobKind, Location, NewBlob};
use crate::telemetry::metrics::metrics;

/// Queued blobs are deduplicated and stored once this many bytes have accumulated: large
/// enough to make one registry lookup per batch, small enough to bound memory per call.
const FLUSH_BYTES: usize = 8 * 1024 * 1024;

/// Raw blobs up to this size are compressed before the registry lookup, to learn whether they
/// will be stored inline (and so need no lookup).
const EARLY_ENCODE_BYTES: usize = 64 * 1024;

/// Below this many bytes a batch is compressed on the calling task; above it, on the blocking
/// pool, one task per blob, so a large upload uses every core.
const PARALLEL_ENCODE_BYTES: usize = 256 * 1024;

enum Pending {
    Raw(Bytes),
    Encoded(Encoded),
}

impl Pending {
    fn len(&self) -> usize {
        match self {
            Pending::Raw(raw) => raw.len(),
            Pending::Encoded(e) => e.stored.len(),
        }
    }
}

/// Collects the blobs one commit will register.
pub(super) struct BlobSink {
    engine: Arc<Engine>,
    pending: Vec<(Hash, BlobKind, Pending)>,
    pending_bytes: usize,
    /// Looked up and not registered: to be stored.
    missing: Vec<(BlobKind, Hashed)>,
    /// Hashes already queued, stored by this sink, or known to be registered.
    seen: HashSet<Hash>,
    stored: Vec<NewBlob>,
    /// Registered blobs this sink deduplicated against: the commit stamps and checks them.
    reused: Vec<Hash>,
    /// When this sink first put an object: its objects have no registry row until the commit,
    /// and the collector reclaims such objects once they are older than the upload lease.
    first_upload: Option<Instant>,
}

/// What a sink hands its commit.
#[derive(Debug)]
pub(super) struct SunkBlobs {
    pub(super) stored: Vec<NewBlob>,
    pub(super) reused: Vec<Hash>,
}

impl BlobSink {
    pub(super) fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            pending: Vec::new(),
            pending_bytes: 0,
            missing: Vec::new(),
            seen: HashSet::new(),
            stored: Vec::new(),
            reused: Vec::new(),
            first_upload: None,
        }
    }

    /// Queues raw bytes whose hash is `hash`, unless this sink has seen them.
    pub(super) fn queue_raw(&mut self, hash: Hash, kind: BlobKind, raw: Bytes) {
        self.queue(hash, kind, Pending::Raw(raw));
    }

    /// Queues an already encoded blob, unless this sink has seen it.
    pub(super) fn queue_encoded(&mut self, kind: BlobKind, encoded: Encoded) {
        self.queue(encoded.hash, kind, Pending::Encoded(encoded));
    }

    fn queue(&mut self, hash: Hash, kind: BlobKind, blob: Pending) {
        if self.seen.insert(hash) {
            self.pending_bytes += blob.len();
            self.pending.push((hash, kind, blob));
        }
    }

    /// Whether enough is queued that the caller should flush.
    pub(super) fn is_full(&self) -> bool {
        self.pending_bytes >= FLUSH_BYTES
    }

    /// Deduplicates the queued blobs against the registry and stores the new ones.
    pub(super) async fn flush(&mut self) -> Result<(), EngineError> {
        self.lookup().await?;
        self.store().await
    }

    /// The first half of a flush: looks the queued blobs up in the registry, keeping those it
    /// lacks for [`Self::store`] and remembering the others as reused.
    pub(super) async fn lookup(&mut self) -> Result<(), EngineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        // Blobs small enough to live in their registry row skip the lookup: the commit inserts
        // them or, when they are already there, stamps the existing row, so they are never
        // stored twice and need no check that a sweep left them alone. That saves a round
        // trip on every small write.
        let inline_max = self.engine.config.inline_max_bytes;
        let engine = &self.engine;
        let batch = batch.into_iter().map(|(hash, kind, blob)| match blob {
            // Compressing a small value takes microseconds: do it now to learn whether it
            // will live inline.
            Pending::Raw(raw) if raw.len() <= EARLY_ENCODE_BYTES => {
                (hash, kind, Pending::Encoded(engine.encode(hash, raw)))
            }
            blob => (hash, kind, blob),
        });
        let (small, batch): (Vec<_>, Vec<_>) =
            batch.partition(|(_, _, blob)| blob.len() <= inline_max);
        self.missing.extend(
            small
                .into_iter()
                .map(|(hash, kind, blob)| (kind, with_hash(hash, blob))),
        );
        if batch.is_empty() {
            return Ok(());
        }
        let hashes: Vec<Hash> = batch.iter().map(|(h, _, _)| *h).collect();
        let existing = self.engine.catalog.existing_blobs(&hashes).await?;
        for (hash, kind, blob) in batch {
            if existing.contains(&hash) {
                // Mostly raw bytes; a blob compressed early counts its compressed size.
                metrics().deduplicated.add(blob.len() as u64, &[]);
                self.reused.push(hash);
            } else {
                self.missing.push((kind, with_hash(hash, blob)));
            }
        }
        Ok(())
    }

    /// The second half of a flush: compresses and stores what [`Self::lookup`] found missing.
    pub(super) async fn store(&mut self) -> Result<(), EngineError> {
        let missing = std::mem::take(&mut self.missing);
        if missing.is_empty() {
            return Ok(());
        }
        self.first_upload.get_or_insert_with(Instant::now);
        let encoded = encode_all(&self.engine, missing).await?;
        let engine = &self.engine;
        let stored: Vec<NewBlob> = futures::stream::iter(encoded)
            .map(|(kind, e)| store_blob(engine, kind, e))
            .buffer_unordered(engine.config.io_concurrency.max(1))
            .try_collect()
            .await?;
        self.stored.extend(stored);
        Ok(())
    }

    /// The blobs stored and reused so far; call after a final [`Self::flush`]. Fails when the
    /// first upload is older than half the upload lease: the collector may reclaim its objects
    /// before a commit could register them.
    pub(super) fn into_blobs(self) -> Result<SunkBlobs, EngineError> {
        let limit = self.engine.config.upload_lease / 2;
        if let Some(first) = self.first_upload
            && first.elapsed() > limit
        {
            return Err(EngineError::Aborted(format!(
                "the upload took longer than {}, half the upload lease; retry it",
                humantime::format_duration(limit)
            )));
        }
        Ok(SunkBlobs {
            stored: self.stored,
            reused: self.reused,
        })
    }
}

/// A raw blob paired with its hash until it is encoded.
enum Hashed {
    Raw(Hash, Bytes),
    Encoded(Encoded),
}

fn with_hash(hash: Hash, pending: Pending) -> Hashed {
    match pending {
        Pending::Raw(raw) => Hashed::Raw(hash, raw),
        Pending::Encoded(e) => Hashed::Encoded(e),
    }
}

/// Compresses raw blobs, on the blocking pool when the batch is large.
async fn encode_all(
    engine: &Arc<Engine>,
    blobs: Vec<(BlobKind, Hashed)>,
) -> Result<Vec<(BlobKind, Encoded)>, EngineError> {
    let raw_bytes: usize = blobs
        .iter()
        .map(|(_, b)| match b {
            Hashed::Raw(_, raw) => raw.len(),
            Hashed::Encoded(_) => 0,
        })
        .sum();
    if raw_bytes < PARALLEL_ENCODE_BYTES {
        return Ok(blobs
            .into_iter()
            .map(|(kind, b)| match b {
                Hashed::Raw(hash, raw) => (kind, engine.encode(hash, raw)),
                Hashed::Encoded(e) => (kind, e),
            })
            .collect());
    }
    let tasks = blobs.into_iter().map(|(kind, b)| {
        let engine = Arc::clone(engine);
        tokio::task::spawn_blocking(move || match b {
            Hashed::Raw(hash, raw) => (kind, engine.encode(hash, raw)),
            Hashed::Encoded(e) => (kind, e),
        })
    });
    futures::future::try_join_all(tasks)
        .await
        .map_err(|e| EngineError::Internal(format!("compression task failed: {e}")))
}

/// Puts one encoded blob where it belongs and describes it for the registry.
async fn store_blob(
    engine: &Engine,
    kind: BlobKind,
    encoded: Encoded,
) -> Result<NewBlob, EngineError> {
    let stored_len = encoded.stored.len() as u64;
    let location =
        if encoded.stored.len() <= engine.config.inline_max_bytes {
            Location::Inline(encoded.stored)
        } else {
            let key = object_key(&encoded.hash, Uuid::now_v7());
            engine.blobs.put(&key, encoded.stored).await.map_err(|e| {
                EngineError::Unavailable(format!("storing blob {}: {e}", encoded.hash))
            })?;
            Location::Object(key)
        };
    Ok(NewBlob {
        hash: encoded.hash,
        kind,
        codec: encoded.codec,
        raw_len: encoded.raw_len,
        stored_len,
        location,
    })
}
