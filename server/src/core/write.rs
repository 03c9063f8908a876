//! The write path: values are chunked, hashed and deduplicated as they arrive, new chunks are
//! compressed and stored (inline or in the object store), the manifest is built or updated,
//! and one catalog transaction makes the checkpoint visible and moves its branch.
//!
//! Nothing a client can see exists before that transaction commits: an upload that fails or
//! is abandoned at any earlier point leaves only unreferenced objects for the collector.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tracing::Instrument;
use uuid::Uuid;

use super::chunker::Chunker;
use super::engine::{Engine, EngineError};
use super::hash::Hash;
use super::manifest::{self, ChunkRef, LeafEntry};
use super::search;
use super::sink::BlobSink;
use super::validate::{self, invalid};
use crate::catalog::{self, BlobKind, CatalogError, CheckpointRecord};

/// How a create's changes relate to its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The changes are the whole state (puts only).
    Full,
    /// The parent's state with the changes applied in order.
    Incremental,
}

/// The validated fields of a create, before its state.
#[derive(Clone, Debug)]
pub struct CreateHeader {
    pub session: String,
    pub branch: String,
    pub parent: Option<Uuid>,
    pub metadata: String,
    pub message: String,
    pub mode: Mode,
    /// The client's id for this create, making retries of it safe.
    pub request_id: Option<String>,
    /// The token of the lease the writer holds on the branch.
    pub lease: Option<u64>,
}

impl CreateHeader {
    /// Validates a create's fields as they come off the wire.
    pub fn new(
        session: &str,
        branch: &str,
        parent: &str,
        metadata: &str,
        message: &str,
        mode: Mode,
    ) -> Result<Self, EngineError> {
        validate::name("session_id", session)?;
        let branch = validate::branch("branch", branch)?;
        let parent = validate::optional_checkpoint_id("parent_id", parent)?;
        let metadata = validate::metadata("metadata", metadata)?;
        validate::message("message", message)?;
        if mode == Mode::Incremental && parent.is_none() {
            return Err(EngineError::InvalidArgument {
                field: "parent_id".into(),
                reason: "an incremental checkpoint needs a parent".into(),
            });
        }
        Ok(Self {
            session: session.to_owned(),
            branch,
            parent,
            metadata,
            message: message.to_owned(),
            mode,
            request_id: None,
            lease: None,
        })
    }

    /// Adds a request id (empty: none) and a lease token (0: none) from the wire.
    pub fn with_request(mut self, request_id: &str, lease_token: u64) -> Result<Self, EngineError> {
        self.request_id = validate::request_id("request_id", request_id)?;
        self.lease = (lease_token != 0).then_some(lease_token);
        Ok(self)
    }
}

impl Engine {
    /// The checkpoint an earlier attempt of this create made, if it has a request id that
    /// was committed; ALREADY_EXISTS if that checkpoint is not what this create asks for.
    pub async fn earlier_create(
        &self,
        header: &CreateHeader,
    ) -> Result<Option<CheckpointRecord>, EngineError> {
        let Some(request_id) = &header.request_id else {
            return Ok(None);
        };
        match self
            .catalog
            .created_by_request(&header.session, request_id)
            .await?
        {
            Some(id) => self.replayed(header, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// The checkpoint `id` a request made before, checked to be on the branch and after the
    /// parent this attempt names.
    async fn replayed(
        &self,
        header: &CreateHeader,
        id: Uuid,
    ) -> Result<CheckpointRecord, EngineError> {
        let earlier = self.catalog.checkpoint(id).await?.ok_or_else(|| {
            EngineError::NotFound(format!("checkpoint {id}, made by this request"))
        })?;
        if earlier.branch != header.branch || earlier.parents.first() != header.parent.as_ref() {
            return Err(EngineError::AlreadyExists(format!(
                "request_id {:?} made checkpoint {id} on branch {} after {}; this create names \
                 branch {} after {}",
                header.request_id.as_deref().unwrap_or_default(),
                earlier.branch,
                parent_text(earlier.parents.first()),
                header.branch,
                parent_text(header.parent.as_ref()),
            )));
        }
        Ok(earlier)
    }
}

fn parent_text(parent: Option<&Uuid>) -> String {
    parent.map_or_else(|| "no parent".to_owned(), Uuid::to_string)
}

/// A value whose bytes are still arriving.
struct ValueInProgress {
    key: String,
    size: u64,
    received: u64,
    chunker: Chunker,
    chunks: Vec<ChunkRef>,
}

/// Builds one checkpoint from a sequence of puts and deletes, then commits it.
pub struct CheckpointWriter {
    engine: Arc<Engine>,
    header: CreateHeader,
    parent: Option<CheckpointRecord>,
    edits: BTreeMap<String, Option<LeafEntry>>,
    changes: u64,
    value: Option<ValueInProgress>,
    sink: BlobSink,
}

impl std::fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("header", &self.header)
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

impl CheckpointWriter {
    /// Starts a create, failing fast when the parent is unknown or the branch has moved (the
    /// commit checks the head again, atomically).
    pub async fn begin(engine: Arc<Engine>, header: CreateHeader) -> Result<Self, EngineError> {
        let parent = Self::parent_of(&engine, &header).await?;
        let head = engine
            .catalog
            .branch_head(&header.session, &header.branch)
            .await?;
        if head.is_some() && head != header.parent {
            return Err(EngineError::HeadMoved {
                branch: header.branch.clone(),
                current: head,
            });
        }
        Ok(Self::new_with(engine, header, parent))
    }

    /// Starts a create whose every change is already in hand: nothing is gained by failing
    /// before the commit, which checks the parent and the head atomically anyway, so only an
    /// incremental create reads its parent first (for the manifest it builds on). A full
    /// create then costs a single catalog round trip.
    pub async fn begin_whole(
        engine: Arc<Engine>,
        header: CreateHeader,
    ) -> Result<Self, EngineError> {
        let parent = match header.mode {
            Mode::Incremental => Self::parent_of(&engine, &header).await?,
            Mode::Full => None,
        };
        Ok(Self::new_with(engine, header, parent))
    }

    fn new_with(
        engine: Arc<Engine>,
        header: CreateHeader,
        parent: Option<CheckpointRecord>,
    ) -> Self {
        Self {
            sink: BlobSink::new(Arc::clone(&engine)),
            engine,
            header,
            parent,
            edits: BTreeMap::new(),
            changes: 0,
            value: None,
        }
    }

    /// The header's parent checkpoint, which must belong to its session.
    async fn parent_of(
        engine: &Engine,
        header: &CreateHeader,
    ) -> Result<Option<CheckpointRecord>, EngineError> {
        Ok(match header.parent {
            Some(id) => {
                let parent = engine.catalog.checkpoint(id).await?;
                match parent {
                    Some(cp) if cp.session == header.session => Some(cp),
                    _ => {
                        return Err(EngineError::NotFound(format!(
                            "parent checkpoint {id} in session {}",
                            header.session
                        )));
                    }
                }
            }
            None => None,
        })
    }

    /// Puts a whole value.
    pub async fn put(&mut self, field: &str, key: String, value: Bytes) -> Result<(), EngineError> {
        self.start_value(field, key, value.len() as u64).await?;
        if !value.is_empty() {
            self.value_data(field, &value).await?;
        }
        Ok(())
    }

    /// Starts a value of `size` bytes; [`Self::value_data`] delivers them.
    pub async fn start_value(
        &mut self,
        field: &str,
        key: String,
        size: u64,
    ) -> Result<(), EngineError> {
        self.ensure_no_value_in_progress(field)?;
        validate::key(field, &key)?;
        let limit = self.engine.config.max_value_bytes;
        if size > limit {
            return Err(EngineError::ResourceExhausted(format!(
                "{field}: the value of key {key:?} is {size} bytes, the limit is {limit}"
            )));
        }
        if self.header.mode == Mode::Full && self.edits.contains_key(&key) {
            return Err(invalid(
                field,
                format!("key {key:?} appears twice in a full state"),
            ));
        }
        self.changes += 1;
        self.value = Some(ValueInProgress {
            key,
            size,
            received: 0,
            chunker: Chunker::new(),
            chunks: Vec::new(),
        });
        if size == 0 {
            self.finish_value();
        }
        Ok(())
    }

    /// Delivers the next bytes of the value in progress.
    pub async fn value_data(&mut self, field: &str, data: &[u8]) -> Result<(), EngineError> {
        let Some(mut value) = self.value.take() else {
            return Err(invalid(
                field,
                "value bytes arrived without a put before them",
            ));
        };
        let received = value.received + data.len() as u64;
        if received > value.size {
            return Err(invalid(
                field,
                format!(
                    "key {:?} announced {} bytes but more arrived",
                    value.key, value.size
                ),
            ));
        }
        value.received = received;
        for chunk in value.chunker.push(data) {
            value.chunks.push(self.add_pending(chunk));
        }
        self.value = Some(value);
        if received == self.value.as_ref().map_or(0, |v| v.size) {
            self.finish_value();
        }
        if self.sink.is_full() {
            self.sink.flush().await?;
        }
        Ok(())
    }

    /// Deletes a key from the parent's state (incremental creates only).
    pub fn delete(&mut self, field: &str, key: String) -> Result<(), EngineError> {
        self.ensure_no_value_in_progress(field)?;
        if self.header.mode != Mode::Incremental {
            return Err(invalid(field, "deletes need an incremental checkpoint"));
        }
        validate::key(field, &key)?;
        self.changes += 1;
        self.edits.insert(key, None);
        Ok(())
    }

    /// The first step of storing the values received so far: looks their chunks up in the
    /// registry. [`Self::commit`] runs every step itself; tests run them one at a time to
    /// interleave a write with a collection.
    pub async fn find_existing(&mut self) -> Result<(), EngineError> {
        self.sink.lookup().await
    }

    /// The second step: compresses and uploads the chunks [`Self::find_existing`] found
    /// missing.
    pub async fn upload(&mut self) -> Result<(), EngineError> {
        self.sink.store().await
    }

    /// Stores what is left, builds the manifest and commits. `declared_changes`, when given,
    /// must equal the number of puts and deletes received.
    pub async fn commit(
        mut self,
        declared_changes: Option<u64>,
    ) -> Result<CheckpointRecord, EngineError> {
        self.ensure_no_value_in_progress("commit")?;
        if let Some(declared) = declared_changes
            && declared != self.changes
        {
            return Err(invalid(
                "commit.change_count",
                format!("declares {declared} changes but {} arrived", self.changes),
            ));
        }
        self.sink.flush().await?;

        // The manifest: built whole for a full state, updated page by page for an increment.
        let edits = std::mem::take(&mut self.edits);
        let search_text = search::document(
            &self.header.message,
            &self.header.metadata,
            edits.keys().map(String::as_str),
        );
        let (root, pages) = match (self.header.mode, &self.parent) {
            (Mode::Incremental, Some(parent)) => {
                let loader = self.engine.page_loader();
                let parent_root = Engine::root_of(parent);
                manifest::update(&loader, parent_root.as_ref(), edits)
                    .await
                    .map_err(|e| {
                        EngineError::from(e)
                            .lost_in(format_args!("parent checkpoint {}", parent.id))
                    })?
            }
            _ => manifest::build(edits.into_values().flatten().collect()),
        };
        for page in pages {
            self.sink.queue_raw(page.hash, BlobKind::Page, page.bytes);
        }
        self.sink.flush().await?;

        let sunk = self.sink.into_blobs()?;
        // Kept for a retry that finds its first attempt committed (only requests with an id).
        let retry = self
            .header
            .request_id
            .is_some()
            .then(|| self.header.clone());
        let checkpoint = catalog::NewCheckpoint {
            id: Uuid::now_v7(),
            session: self.header.session,
            branch: self.header.branch,
            parent: self.header.parent,
            merge_parent: None,
            metadata: self.header.metadata,
            message: self.header.message,
            manifest_root: root.as_ref().map(|r| r.page),
            entry_count: root.as_ref().map_or(0, |r| r.entries),
            logical_bytes: root.as_ref().map_or(0, |r| r.bytes),
            blobs: sunk.stored,
            reused: sunk.reused,
            source: None,
            search_text,
            request_id: self.header.request_id,
            lease: self.header.lease,
        };
        // Run the transaction on its own task: a client that goes away mid-commit must not
        // leave it half-done with the session row locked. A client that went away before the
        // transaction began (waiting for a connection, say) gets no commit behind its back.
        let catalog = Arc::clone(&self.engine.catalog);
        let abandoned = Arc::new(AtomicBool::new(false));
        let _watch = AbandonOnDrop(Arc::clone(&abandoned));
        let committed = tokio::spawn(
            async move {
                if abandoned.load(Ordering::Acquire) {
                    return Err(CatalogError::Unavailable("the caller went away".into()));
                }
                catalog.commit(checkpoint).await
            }
            .in_current_span(),
        )
        .await
        .map_err(|e| EngineError::Internal(format!("commit task failed: {e}")))?;
        match committed {
            // A retry that raced its first attempt to the commit: the first one's checkpoint.
            Err(CatalogError::Replayed(id)) => match retry {
                Some(header) => self.engine.replayed(&header, id).await,
                None => Err(CatalogError::Replayed(id).into()),
            },
            other => Ok(other?),
        }
    }

    fn ensure_no_value_in_progress(&self, field: &str) -> Result<(), EngineError> {
        match &self.value {
            Some(v) => Err(invalid(
                field,
                format!(
                    "the value of key {:?} is incomplete: {} of {} bytes arrived",
                    v.key, v.received, v.size
                ),
            )),
            None => Ok(()),
        }
    }

    fn finish_value(&mut self) {
        let Some(mut value) = self.value.take() else {
            return;
        };
        for chunk in value.chunker.finish() {
            value.chunks.push(self.add_pending(chunk));
        }
        let entry = LeafEntry {
            key: value.key.clone(),
            size: value.size,
            chunks: value.chunks,
        };
        self.edits.insert(value.key, Some(entry));
    }

    /// Hashes a chunk and queues it for storage.
    fn add_pending(&mut self, chunk: Bytes) -> ChunkRef {
        let hash = Hash::of(&chunk);
        let len = chunk.len() as u64;
        self.sink.queue_raw(hash, BlobKind::Chunk, chunk);
        ChunkRef { hash, len }
    }
}

/// Marks a commit abandoned when the call that started it is dropped before it finishes.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
