//! The object store side: immutable blobs under keys made by [`object_key`], on a local
//! directory or S3 through `object_store`.

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::instrument;
use uuid::Uuid;

use crate::core::hash::Hash;
use crate::telemetry::metrics::{StoreOp, StoreResult, store_operation};

/// The object-store key of one upload of a blob.
///
/// Every upload gets its own key (the hash plus an upload id), so an object is written once and
/// never overwritten: a collector deleting an old copy can never remove a fresh upload of the
/// same content. The two-hex-digit fan-out keeps directories and S3 listings small.
pub fn object_key(hash: &Hash, upload: Uuid) -> String {
    let hex = hash.to_hex();
    format!("chunks/{}/{hex}.{}", &hex[..2], upload.simple())
}

/// The prefix every blob's key starts with.
pub const BLOB_PREFIX: &str = "chunks";

/// What [`object_key`] encoded: the blob's hash and the upload's id.
pub fn parse_object_key(key: &str) -> Option<(Hash, Uuid)> {
    let name = key.strip_prefix("chunks/")?.split_once('/')?.1;
    let (hex, upload) = name.split_once('.')?;
    let hash = Hash::from_hex(hex)?;
    let upload = Uuid::try_parse(upload).ok()?;
    (object_key(&hash, upload) == key).then_some((hash, upload))
}

/// An object in the store, as a listing shows it.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object store: {0}")]
    Other(String),
}

/// Where blobs go: a directory or a bucket (with an optional prefix).
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl BlobStore {
    /// Opens `spec`: `s3://bucket[/prefix]` (endpoint and credentials from the usual `AWS_*`
    /// variables) or a directory path, created if missing.
    pub fn open(spec: &str) -> Result<Self, BlobError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BlobError::Other(format!("no bucket in {spec}")));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| BlobError::Other(e.to_string()))?;
            let store: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
                "" => Arc::new(s3),
                prefix => Arc::new(PrefixStore::new(s3, prefix)),
            };
            return Ok(Self {
                store,
                description: spec.to_owned(),
            });
        }
        std::fs::create_dir_all(spec).map_err(|e| BlobError::Other(format!("{spec}: {e}")))?;
        // fsync: a blob must be durable before the catalog commit that references it.
        let local = LocalFileSystem::new_with_prefix(spec)
            .map_err(|e| BlobError::Other(e.to_string()))?
            .with_fsync(true);
        Ok(Self {
            store: Arc::new(local),
            description: spec.to_owned(),
        })
    }

    /// Wraps any object store (tests use this for fault injection).
    pub fn from_store(store: Arc<dyn ObjectStore>, description: impl Into<String>) -> Self {
        Self {
            store,
            description: description.into(),
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Checks that the store answers: lists one level under a prefix nothing uses. Start-up
    /// calls it so that a missing bucket or missing credentials stop the start instead of
    /// failing the first write large enough to need the store.
    pub async fn probe(&self) -> Result<(), BlobError> {
        self.store
            .list_with_delimiter(Some(&Path::from("probe")))
            .await
            .map(|_| ())
            .map_err(|e| BlobError::Other(e.to_string()))
    }

    #[instrument(level = "debug", name = "store.put", skip_all, fields(bytes = bytes.len()))]
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let result = self
            .store
            .put(&Path::from(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| BlobError::Other(e.to_string()));
        counted(StoreOp::Put, result)
    }

    #[instrument(level = "debug", name = "store.get", skip_all)]
    pub async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        let result = match self.store.get(&Path::from(key)).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| BlobError::Other(e.to_string())),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(key.to_owned())),
            Err(other) => Err(BlobError::Other(other.to_string())),
        };
        counted(StoreOp::Get, result)
    }

    /// Objects under `prefix` whose keys sort after `after`, in no promised order beyond that.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> impl futures::Stream<Item = Result<StoredObject, BlobError>> + Send + 'static {
        use futures::StreamExt;
        let prefix = Path::from(prefix);
        let listing = match after {
            Some(after) => self
                .store
                .list_with_offset(Some(&prefix), &Path::from(after)),
            None => self.store.list(Some(&prefix)),
        };
        let objects = listing.map(|meta| {
            meta.map(|m| StoredObject {
                key: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .map_err(|e| BlobError::Other(e.to_string()))
        });
        CountedListing {
            inner: objects.boxed(),
            counted: false,
        }
    }

    /// The objects directly under `prefix` (or the store's top) and its sub-prefixes.
    #[instrument(level = "debug", name = "store.list", skip_all)]
    pub async fn list_level(
        &self,
        prefix: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>), BlobError> {
        let prefix = prefix.map(Path::from);
        let listed = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|e| BlobError::Other(e.to_string()));
        let listed = counted(StoreOp::List, listed)?;
        let objects = listed.objects.into_iter().map(|o| o.location.to_string());
        let prefixes = listed.common_prefixes.into_iter().map(|p| p.to_string());
        Ok((objects.collect(), prefixes.collect()))
    }

    #[instrument(level = "debug", name = "store.delete", skip_all)]
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let result = match self.store.delete(&Path::from(key)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => {
                store_operation(StoreOp::Delete, StoreResult::NotFound);
                return Ok(());
            }
            Err(e) => Err(BlobError::Other(e.to_string())),
        };
        counted(StoreOp::Delete, result)
    }
}

/// Counts an operation by how it ended, and passes its result on.
fn counted<T>(op: StoreOp, result: Result<T, BlobError>) -> Result<T, BlobError> {
    let outcome = match &result {
        Ok(_) => StoreResult::Ok,
        Err(BlobError::NotFound(_)) => StoreResult::NotFound,
        Err(BlobError::Other(_)) => StoreResult::Error,
    };
    store_operation(op, outcome);
    result
}

/// A listing that counts itself once: `ok` when it ends, `error` at its first failure. A
/// listing dropped part-way is not counted.
struct CountedListing {
    inner: futures::stream::BoxStream<'static, Result<StoredObject, BlobError>>,
    counted: bool,
}

impl futures::Stream for CountedListing {
    type Item = Result<StoredObject, BlobError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        let outcome = match &item {
            None => Some(StoreResult::Ok),
            Some(Err(_)) => Some(StoreResult::Error),
            Some(Ok(_)) => None,
        };
        if let Some(outcome) = outcome
            && !std::mem::replace(&mut self.counted, true)
        {
            store_operation(StoreOp::List, outcome);
        }
        std::task::Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_fan_out_by_hash_and_are_unique_per_upload() {
        let hash = Hash::of(b"hello");
        let a = object_key(&hash, Uuid::now_v7());
        let b = object_key(&hash, Uuid::now_v7());
        let hex = hash.to_hex();
        assert!(
            a.starts_with(&format!("chunks/{}/{hex}.", &hex[..2])),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn parsing_a_key_returns_what_made_it_and_refuses_strangers() {
        let hash = Hash::of(b"hello");
        let upload = Uuid::now_v7();
        let key = object_key(&hash, upload);
        assert_eq!(parse_object_key(&key), Some((hash, upload)));
        assert_eq!(parse_object_key("chunks/ab/not-a-hash.x"), None);
        assert_eq!(parse_object_key("notes/readme.txt"), None);
        // The right parts under the wrong fan-out directory are not ours either.
        let wrong_dir = key.replacen(&hash.to_hex()[..2], "zz", 1);
        assert_eq!(parse_object_key(&wrong_dir), None);
    }
}
