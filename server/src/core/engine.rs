//! The engine: the catalog and the blob store joined into checkpoint operations.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use uuid::Uuid;

use super::codec;
use super::hash::Hash;
use super::manifest::{ManifestError, Page, PageLoader, Root};
use super::validate;
use crate::blobs::{BlobError, BlobStore};
use crate::catalog::{
    BlobRecord, Catalog, CatalogError, CheckpointFilter, CheckpointRecord, Location, SessionRecord,
};

/// Blobs up to this raw size are decoded and verified on the calling task: BLAKE3 and zstd
/// take tens of microseconds for 64 KiB, about what a hop to the blocking pool costs, and a
/// state of many small values would otherwise pay that hop once per value.
const INLINE_DECODE_BYTES: u64 = 64 * 1024;

/// Tunables of the write and read paths.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// zstd level for stored blobs.
    pub zstd_level: i32,
    /// Blobs whose stored size is at most this many bytes live inline in the catalog.
    pub inline_max_bytes: usize,
    /// Largest value a state may hold.
    pub max_value_bytes: u64,
    /// Object-store requests one call may have in flight.
    pub io_concurrency: usize,
    /// Decoded manifest pages kept in memory (pages are immutable, so never stale).
    pub page_cache_entries: usize,
    /// How long an uploaded object may wait for the commit that registers it before the
    /// collector may reclaim it as abandoned. A write refuses to commit objects older than
    /// half of this.
    pub upload_lease: std::time::Duration,
    /// How long a collector's lease lasts without renewal; a collector killed mid-pass is
    /// replaced after this.
    pub collector_lease: std::time::Duration,
    /// The retention policy of sessions and branches without an override.
    pub default_retention: super::retention::Policy,
    /// How long the change feed keeps events.
    pub feed_retention: std::time::Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            // Level 3 compresses agent-session JSON ~4.7x at ~240 MB/s on one core; level 1
            // is 40% faster but stores 15% more. Storage is the cost that accumulates.
            zstd_level: 3,
            // 8 KiB: a 10 KB state or a manifest page commits with its catalog row, with no
            // extra object and no extra fsync; anything bigger goes to the object store.
            inline_max_bytes: 8 * 1024,
            max_value_bytes: 1 << 30,
            io_concurrency: 8,
            page_cache_entries: 16 * 1024,
            // A day, as lakeFS and Iceberg allow: writes never take this long, and a host
            // clock would have to be off by half a day to matter.
            upload_lease: std::time::Duration::from_secs(24 * 3600),
            // Renewed at every batch, which takes milliseconds; a minute tolerates stalls.
            collector_lease: std::time::Duration::from_secs(60),
            // Keep everything until an operator chooses otherwise.
            default_retention: super::retention::Policy::default(),
            // A week: a watcher gone longer than that starts afresh.
            feed_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("branch {branch} has moved: its head is {}", current.map(|c| c.to_string()).unwrap_or_else(|| "empty".into()))]
    HeadMoved {
        branch: String,
        current: Option<Uuid>,
    },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent operation got in the way; retrying the call will succeed.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// Names where lost data belonged (`"checkpoint X"`, `"parent checkpoint X"`); other
    /// errors pass through.
    pub(super) fn lost_in(self, place: impl std::fmt::Display) -> Self {
        match self {
            Self::DataLoss(why) => Self::DataLoss(format!("{place}: {why}")),
            other => other,
        }
    }
}

impl From<CatalogError> for EngineError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::NotFound(what) => Self::NotFound(what),
            CatalogError::HeadMoved { branch, current } => Self::HeadMoved { branch, current },
            CatalogError::AlreadyExists(what) => Self::AlreadyExists(what),
            CatalogError::FailedPrecondition(why) => Self::FailedPrecondition(why),
            CatalogError::Aborted(why) => Self::Aborted(why),
            CatalogError::Unavailable(why) => Self::Unavailable(why),
            CatalogError::Internal(why) => Self::Internal(why),
            CatalogError::Replayed(id) => Self::AlreadyExists(format!(
                "the request was committed before as checkpoint {id}"
            )),
        }
    }
}

impl From<ManifestError> for EngineError {
    fn from(err: ManifestError) -> Self {
        match err {
            ManifestError::Unavailable(why) => Self::Unavailable(why),
            lost => Self::DataLoss(lost.to_string()),
        }
    }
}

/// Checkpoint operations over a catalog and a blob store. Cheap to share: wrap in an `Arc`.
pub struct Engine {
    pub(super) catalog: Arc<dyn Catalog>,
    pub(super) blobs: BlobStore,
    pub(super) config: EngineConfig,
    pages: quick_cache::sync::Cache<Hash, Arc<Page>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("catalog", &self.catalog)
            .field("blobs", &self.blobs)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(catalog: Arc<dyn Catalog>, blobs: BlobStore, config: EngineConfig) -> Self {
        let pages = quick_cache::sync::Cache::new(config.page_cache_entries.max(1));
        Self {
            catalog,
            blobs,
            config,
            pages,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub async fn checkpoint(&self, id: Uuid) -> Result<CheckpointRecord, EngineError> {
        self.catalog
            .checkpoint(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("checkpoint {id}")))
    }

    pub async fn list_checkpoints(
        &self,
        session: &str,
        filter: &CheckpointFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>, EngineError> {
        validate::name("session_id", session)?;
        Ok(self
            .catalog
            .list_checkpoints(session, filter, before, limit)
            .await?)
    }

    pub async fn session(&self, name: &str) -> Result<SessionRecord, EngineError> {
        validate::name("session_id", name)?;
        self.catalog
            .session(name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("session {name}")))
    }

    pub async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SessionRecord>, EngineError> {
        Ok(self.catalog.list_sessions(after, limit).await?)
    }

    /// Deletes one checkpoint. Its blobs stay until a collection finds them unreferenced.
    pub async fn delete_checkpoint(&self, id: Uuid) -> Result<(), EngineError> {
        Ok(self.catalog.delete_checkpoint(id).await?)
    }

    /// Deletes a session. Its blobs stay until a collection finds them unreferenced.
    pub async fn delete_session(&self, name: &str) -> Result<u64, EngineError> {
        validate::name("session_id", name)?;
        Ok(self.catalog.delete_session(name).await?)
    }

    /// The manifest root of a checkpoint, with its totals.
    pub(super) fn root_of(cp: &CheckpointRecord) -> Option<Root> {
        cp.manifest_root.map(|page| Root {
            page,
            entries: cp.entry_count,
            bytes: cp.logical_bytes,
        })
    }

    /// Fetches and verifies registered blobs, several at a time, yielding them in order.
    pub(super) fn fetch_blobs(
        &self,
        records: Vec<BlobRecord>,
    ) -> impl futures::Stream<Item = Result<(Hash, Bytes), BlobFault>> + Send + '_ {
        futures::stream::iter(records)
            .map(move |record| self.fetch_blob(record))
            .buffered(self.config.io_concurrency.max(1))
    }

    pub(super) async fn fetch_blob(&self, record: BlobRecord) -> Result<(Hash, Bytes), BlobFault> {
        let hash = record.hash;
        let (_, raw) = self.fetch_verified(record).await?;
        Ok((hash, raw))
    }

    /// A blob's stored bytes and, decoded from them and checked against its hash, its raw
    /// bytes.
    pub(super) async fn fetch_verified(
        &self,
        record: BlobRecord,
    ) -> Result<(Bytes, Bytes), BlobFault> {
        let stored = match record.location {
            Location::Inline(bytes) => bytes,
            Location::Object(key) => self.blobs.get(&key).await.map_err(|e| match e {
                BlobError::NotFound(key) => {
                    BlobFault::Lost(record.hash, format!("object {key} is missing"))
                }
                BlobError::Other(why) => BlobFault::Unavailable(why),
            })?,
        };
        let hash = record.hash;
        let kept = stored.clone();
        let raw = if record.raw_len <= INLINE_DECODE_BYTES {
            codec::decode(hash, record.codec, record.raw_len, stored)
        } else {
            tokio::task::spawn_blocking(move || {
                codec::decode(hash, record.codec, record.raw_len, stored)
            })
            .await
            .map_err(|e| BlobFault::Unavailable(e.to_string()))?
        }
        .map_err(|e| BlobFault::Lost(hash, e.to_string()))?;
        Ok((kept, raw))
    }

    /// Registry rows of `hashes`, failing when any is absent.
    pub(super) async fn blob_records(&self, hashes: &[Hash]) -> Result<Vec<BlobRecord>, BlobFault> {
        let mut records = self
            .catalog
            .blobs(hashes)
            .await
            .map_err(|e| BlobFault::Unavailable(e.to_string()))?;
        if records.len() < unique_count(hashes) {
            let present: std::collections::HashSet<Hash> = records.iter().map(|r| r.hash).collect();
            let missing = hashes
                .iter()
                .find(|h| !present.contains(h))
                .expect("one is missing");
            return Err(BlobFault::Lost(*missing, "no catalog entry".into()));
        }
        // Back into the requested order, one record per requested hash.
        let by_hash: std::collections::HashMap<Hash, BlobRecord> =
            records.drain(..).map(|r| (r.hash, r)).collect();
        Ok(hashes.iter().map(|h| by_hash[h].clone()).collect())
    }

    pub(super) fn page_loader(&self) -> EngineLoader<'_> {
        EngineLoader { engine: self }
    }

    /// Codec choice shared by the write path: see [`codec::encode`].
    pub(super) fn encode(&self, hash: Hash, raw: Bytes) -> codec::Encoded {
        codec::encode(hash, raw, self.config.zstd_level)
    }
}

fn unique_count(hashes: &[Hash]) -> usize {
    hashes
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// A blob that could not be read.
#[derive(Debug)]
pub(super) enum BlobFault {
    /// Missing or damaged: data loss.
    Lost(Hash, String),
    /// The storage could not answer now.
    Unavailable(String),
}

impl BlobFault {
    /// The engine error, naming the checkpoint and key the blob belonged to.
    pub(super) fn into_error(self, checkpoint: Uuid, key: Option<&str>) -> EngineError {
        match self {
            BlobFault::Lost(hash, why) => {
                let place = key.map(|k| format!(", key {k:?}")).unwrap_or_default();
                EngineError::DataLoss(format!(
                    "checkpoint {checkpoint}{place}: blob {hash}: {why}"
                ))
            }
            BlobFault::Unavailable(why) => EngineError::Unavailable(why),
        }
    }
}

/// Loads manifest pages through the engine's page cache.
pub(super) struct EngineLoader<'a> {
    engine: &'a Engine,
}

impl PageLoader for EngineLoader<'_> {
    async fn load(&self, hash: Hash) -> Result<Arc<Page>, ManifestError> {
        if let Some(page) = self.engine.pages.get(&hash) {
            return Ok(page);
        }
        let fault = |f: BlobFault| match f {
            BlobFault::Lost(h, why) => ManifestError::Lost(h, why),
            BlobFault::Unavailable(why) => ManifestError::Unavailable(why),
        };
        let record = self
            .engine
            .blob_records(&[hash])
            .await
            .map_err(fault)?
            .remove(0);
        let (_, bytes) = self.engine.fetch_blob(record).await.map_err(fault)?;
        let page = Arc::new(Page::decode(hash, &bytes)?);
        self.engine.pages.insert(hash, Arc::clone(&page));
        Ok(page)
    }
}
