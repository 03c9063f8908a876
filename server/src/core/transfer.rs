//! Export and import of whole sessions as bundles (see [`super::bundle`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::Instrument;

use bytes::Bytes;
use chrono::DateTime;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::bundle::{
    self, BlobMsg, BranchMsg, BundleError, BundleReader, BundleWriter, CheckpointMsg, Record,
    TagMsg,
};
use super::codec::{self, Codec, Encoded};
use super::engine::{Engine, EngineError};
use super::hash::Hash;
use super::manifest::Page;
use super::sink::BlobSink;
use super::validate;
use crate::catalog::{
    BlobKind, CheckpointFilter, CheckpointRecord, ImportOutcome, ImportedBranch,
    ImportedCheckpoint, SessionImport,
};

/// Bundle bytes are sent in pieces of about this size.
const EXPORT_PIECE: usize = 1024 * 1024;

/// Checkpoints fetched per catalog call while exporting.
const EXPORT_PAGE: u32 = 1000;

impl Engine {
    /// Streams a bundle of `session`: its blobs, checkpoints and branches. Every blob is
    /// verified on the way out, so a bundle never carries damage the store already had.
    pub async fn export(
        self: &Arc<Self>,
        session: &str,
    ) -> Result<mpsc::Receiver<Result<Bytes, EngineError>>, EngineError> {
        self.session(session).await?;
        let (tx, rx) = mpsc::channel(4);
        let engine = Arc::clone(self);
        let session = session.to_owned();
        tokio::spawn(
            async move {
                if let Err(err) = engine.write_bundle(&session, &tx).await {
                    let _ = tx.send(Err(err)).await;
                }
            }
            // The stream outlives the handler: its catalog and store calls stay in the call's trace.
            .in_current_span(),
        );
        Ok(rx)
    }

    async fn write_bundle(
        &self,
        session: &str,
        tx: &mpsc::Sender<Result<Bytes, EngineError>>,
    ) -> Result<(), EngineError> {
        let checkpoints = self.all_checkpoints(session).await?;
        let branches = self.catalog.list_branches(session).await?;
        let mut out = BundleWriter::new();
        out.push(Record::Session(session.to_owned()));

        // Blobs: every page reachable from a checkpoint's root and every chunk they name, once.
        let mut seen = HashSet::new();
        for cp in &checkpoints {
            let Some(root) = cp.manifest_root else {
                continue;
            };
            let mut pages = vec![root];
            while let Some(hash) = pages.pop() {
                if !seen.insert(hash) {
                    continue;
                }
                let (stored, page) = self.export_page(cp.id, hash).await?;
                out.push(Record::Blob(stored));
                pages.extend(page.children.iter().map(|c| c.page));
                let chunks: Vec<Hash> = page
                    .entries
                    .iter()
                    .flat_map(|e| e.chunks.iter().map(|c| c.hash))
                    .filter(|h| seen.insert(*h))
                    .collect();
                self.export_chunks(cp.id, &chunks, &mut out, tx).await?;
                if !send_pending(&mut out, tx).await {
                    return Ok(());
                }
            }
        }

        for cp in &checkpoints {
            out.push(Record::Checkpoint(checkpoint_msg(cp)));
        }
        for branch in branches {
            out.push(Record::Branch(BranchMsg {
                name: branch.name,
                head: branch.head.to_string(),
            }));
        }
        for tag in self.catalog.list_tags(session).await? {
            out.push(Record::Tag(TagMsg {
                name: tag.name,
                checkpoint: tag.checkpoint.to_string(),
            }));
        }
        let _ = tx.send(Ok(out.finish())).await;
        Ok(())
    }

    /// Every checkpoint of a session, oldest first.
    async fn all_checkpoints(&self, session: &str) -> Result<Vec<CheckpointRecord>, EngineError> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .catalog
                .list_checkpoints(session, &CheckpointFilter::default(), before, EXPORT_PAGE)
                .await?;
            let done = page.len() < EXPORT_PAGE as usize;
            before = page.last().map(|cp| cp.seq);
            all.extend(page);
            if done {
                break;
            }
        }
        all.reverse();
        Ok(all)
    }

    async fn export_page(
        &self,
        checkpoint: Uuid,
        hash: Hash,
    ) -> Result<(BlobMsg, Page), EngineError> {
        let record = self
            .blob_records(&[hash])
            .await
            .map_err(|f| f.into_error(checkpoint, None))?
            .remove(0);
        let codec = record.codec;
        let raw_len = record.raw_len;
        let (stored, raw) = self
            .fetch_verified(record)
            .await
            .map_err(|f| f.into_error(checkpoint, None))?;
        let page = Page::decode(hash, &raw)?;
        Ok((blob_msg(hash, BlobKind::Page, codec, raw_len, stored), page))
    }

    async fn export_chunks(
        &self,
        checkpoint: Uuid,
        hashes: &[Hash],
        out: &mut BundleWriter,
        tx: &mpsc::Sender<Result<Bytes, EngineError>>,
    ) -> Result<(), EngineError> {
        let records = self
            .blob_records(hashes)
            .await
            .map_err(|f| f.into_error(checkpoint, None))?;
        let described: Vec<(Codec, u64)> = records.iter().map(|r| (r.codec, r.raw_len)).collect();
        let mut fetched = futures::stream::iter(records)
            .map(|r| self.fetch_verified(r))
            .buffered(self.config.io_concurrency.max(1));
        let mut i = 0;
        while let Some(blob) = fetched.next().await {
            let (stored, _) = blob.map_err(|f| f.into_error(checkpoint, None))?;
            let (codec, raw_len) = described[i];
            out.push(Record::Blob(blob_msg(
                hashes[i],
                BlobKind::Chunk,
                codec,
                raw_len,
                stored,
            )));
            i += 1;
            if !send_pending(out, tx).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Loads a bundle into this deployment. Nothing becomes visible unless the whole bundle
    /// arrived intact: blobs are checked one by one as they arrive, the checksum at the end,
    /// and only then does one catalog transaction add the checkpoints and branches.
    pub async fn import(
        self: &Arc<Self>,
        mut pieces: impl Stream<Item = Result<Bytes, EngineError>> + Unpin,
    ) -> Result<(String, ImportOutcome), EngineError> {
        let mut reader = BundleReader::new();
        let mut state = ImportState::new(BlobSink::new(Arc::clone(self)));
        while let Some(piece) = pieces.next().await {
            for record in reader.feed(&piece?).map_err(damaged)? {
                state.add(record).await?;
            }
        }
        reader.finish().map_err(damaged)?;
        let (mut import, sink) = state.finish()?;
        let pruned_here = self.skip_checkpoints_deleted_here(&mut import).await?;
        self.skip_branches_already_ahead(&mut import).await?;
        let session = import.session.clone();
        let mut sink = sink;
        sink.flush().await?;
        let sunk = sink.into_blobs()?;
        let import = SessionImport {
            blobs: sunk.stored,
            reused: sunk.reused,
            ..import
        };
        let mut outcome = self.catalog.import(import).await?;
        outcome.present += pruned_here;
        Ok((session, outcome))
    }
}

impl Engine {
    /// Leaves out checkpoints this deployment holds descendants of but not themselves: they
    /// were deleted here, and bringing them back would put a parent after its children in the
    /// session's commit order. Refs naming them are left out too. Returns how many.
    async fn skip_checkpoints_deleted_here(
        &self,
        import: &mut SessionImport,
    ) -> Result<u64, EngineError> {
        let ids: Vec<Uuid> = import.checkpoints.iter().map(|cp| cp.id).collect();
        let present: HashSet<Uuid> = self
            .catalog
            .checkpoints(&ids)
            .await?
            .into_iter()
            .filter(|cp| cp.session == import.session)
            .map(|cp| cp.id)
            .collect();
        if present.is_empty() {
            return Ok(0);
        }
        let parents: HashMap<Uuid, Vec<Uuid>> = import
            .checkpoints
            .iter()
            .map(|cp| (cp.id, cp.parents.clone()))
            .collect();
        let below_present: HashSet<Uuid> = present
            .iter()
            .flat_map(|id| ancestors(&parents, *id))
            .collect();
        let deleted: HashSet<Uuid> = ids
            .into_iter()
            .filter(|id| !present.contains(id) && below_present.contains(id))
            .collect();
        import.checkpoints.retain(|cp| !deleted.contains(&cp.id));
        import.branches.retain(|b| !deleted.contains(&b.head));
        import.tags.retain(|(_, at)| !deleted.contains(at));
        Ok(deleted.len() as u64)
    }

    /// Leaves out branches whose head here already descends from the bundle's head: this
    /// deployment is ahead, and importing an older bundle must not look like a divergence.
    async fn skip_branches_already_ahead(
        &self,
        import: &mut SessionImport,
    ) -> Result<(), EngineError> {
        let mut keep = Vec::with_capacity(import.branches.len());
        for branch in std::mem::take(&mut import.branches) {
            let current = self.catalog.branch(&import.session, &branch.name).await?;
            let ahead = match current {
                Some(c) if c.head != branch.head && !branch.ancestors.contains(&c.head) => {
                    self.catalog.checkpoint(branch.head).await?.is_some()
                        && self.is_ancestor(branch.head, c.head).await?
                }
                _ => false,
            };
            if !ahead {
                keep.push(branch);
            }
        }
        import.branches = keep;
        Ok(())
    }
}

/// Sends what the writer holds once there is enough of it; false when the receiver is gone.
async fn send_pending(
    out: &mut BundleWriter,
    tx: &mpsc::Sender<Result<Bytes, EngineError>>,
) -> bool {
    if out.pending() < EXPORT_PIECE {
        return true;
    }
    tx.send(Ok(out.take())).await.is_ok()
}

fn blob_msg(hash: Hash, kind: BlobKind, codec: Codec, raw_len: u64, stored: Bytes) -> BlobMsg {
    BlobMsg {
        hash: hash.0.to_vec(),
        kind: kind as u32,
        codec: codec as u32,
        raw_len,
        stored,
    }
}

fn checkpoint_msg(cp: &CheckpointRecord) -> CheckpointMsg {
    CheckpointMsg {
        id: cp.id.to_string(),
        branch: cp.branch.clone(),
        parents: cp.parents.iter().map(Uuid::to_string).collect(),
        generation: cp.generation,
        created_at_micros: cp.created_at.timestamp_micros(),
        metadata: cp.metadata.clone(),
        message: cp.message.clone(),
        manifest_root: cp.manifest_root.map(|h| h.0.to_vec()).unwrap_or_default(),
        entry_count: cp.entry_count,
        logical_bytes: cp.logical_bytes,
        stored_bytes: cp.stored_bytes,
    }
}

fn damaged(err: BundleError) -> EngineError {
    EngineError::InvalidArgument {
        field: "bundle".into(),
        reason: err.to_string(),
    }
}

fn bad(reason: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument {
        field: "bundle".into(),
        reason: reason.into(),
    }
}

/// What an import has gathered so far.
struct ImportState {
    sink: BlobSink,
    session: Option<String>,
    checkpoints: Vec<ImportedCheckpoint>,
    branches: Vec<(String, Uuid)>,
    tags: Vec<(String, Uuid)>,
    /// Blobs the bundle carries.
    carried: HashSet<Hash>,
    /// Blobs the bundle's pages and checkpoints refer to.
    needed: HashSet<Hash>,
}

impl ImportState {
    fn new(sink: BlobSink) -> Self {
        Self {
            sink,
            session: None,
            checkpoints: Vec::new(),
            branches: Vec::new(),
            tags: Vec::new(),
            carried: HashSet::new(),
            needed: HashSet::new(),
        }
    }

    async fn add(&mut self, record: Record) -> Result<(), EngineError> {
        match record {
            Record::Session(name) => {
                validate::name("bundle.session", &name)?;
                if self.session.replace(name).is_some() {
                    return Err(bad("names two sessions"));
                }
            }
            Record::Blob(blob) => {
                self.add_blob(blob).await?;
                if self.sink.is_full() {
                    self.sink.flush().await?;
                }
            }
            Record::Checkpoint(cp) => {
                let cp = imported_checkpoint(cp)?;
                self.needed.extend(cp.manifest_root);
                self.checkpoints.push(cp);
            }
            Record::Branch(branch) => {
                validate::name("bundle.branch", &branch.name)?;
                let head = validate::checkpoint_id("bundle.branch.head", &branch.head)?;
                self.branches.push((branch.name, head));
            }
            Record::Tag(tag) => {
                validate::name("bundle.tag", &tag.name)?;
                let at = validate::checkpoint_id("bundle.tag.checkpoint", &tag.checkpoint)?;
                self.tags.push((tag.name, at));
            }
        }
        Ok(())
    }

    /// Checks a blob against its hash and queues it for storage.
    async fn add_blob(&mut self, blob: BlobMsg) -> Result<(), EngineError> {
        let hash = bundle::blob_hash(&blob).ok_or_else(|| bad("a blob has a malformed hash"))?;
        let codec = i16::try_from(blob.codec).ok().and_then(Codec::from_i16);
        let codec = codec.ok_or_else(|| bad(format!("blob {hash} has an unknown codec")))?;
        let kind = match blob.kind {
            0 => BlobKind::Chunk,
            1 => BlobKind::Page,
            other => return Err(bad(format!("blob {hash} has an unknown kind {other}"))),
        };
        let stored = blob.stored.clone();
        let raw_len = blob.raw_len;
        let raw = tokio::task::spawn_blocking(move || codec::decode(hash, codec, raw_len, stored))
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .map_err(|e| bad(format!("blob {hash} is damaged: {e}")))?;
        if kind == BlobKind::Page {
            let page = Page::decode(hash, &raw).map_err(|e| bad(e.to_string()))?;
            self.needed.extend(page.children.iter().map(|c| c.page));
            self.needed.extend(
                page.entries
                    .iter()
                    .flat_map(|e| e.chunks.iter().map(|c| c.hash)),
            );
        }
        self.carried.insert(hash);
        self.sink.queue_encoded(
            kind,
            Encoded {
                hash,
                raw_len,
                codec,
                stored: blob.stored,
            },
        );
        Ok(())
    }

    /// Checks that the bundle is complete and consistent, and builds the catalog import.
    fn finish(self) -> Result<(SessionImport, BlobSink), EngineError> {
        let session = self.session.ok_or_else(|| bad("names no session"))?;
        if let Some(missing) = self.needed.iter().find(|h| !self.carried.contains(h)) {
            return Err(bad(format!(
                "lacks blob {missing} that its checkpoints need"
            )));
        }
        let parents: HashMap<Uuid, Vec<Uuid>> = self
            .checkpoints
            .iter()
            .map(|cp| (cp.id, cp.parents.clone()))
            .collect();
        let mut branches = Vec::new();
        for (name, head) in self.branches {
            if !parents.contains_key(&head) {
                return Err(bad(format!(
                    "branch {name} points at {head}, which the bundle lacks"
                )));
            }
            branches.push(ImportedBranch {
                name,
                head,
                ancestors: ancestors(&parents, head),
            });
        }
        if let Some((name, at)) = self.tags.iter().find(|(_, at)| !parents.contains_key(at)) {
            return Err(bad(format!(
                "tag {name} names {at}, which the bundle lacks"
            )));
        }
        let import = SessionImport {
            session,
            checkpoints: self.checkpoints,
            branches,
            tags: self.tags,
            blobs: Vec::new(),
            reused: Vec::new(),
        };
        Ok((import, self.sink))
    }
}

/// Every checkpoint `head` descends from, through the parent links the bundle holds.
fn ancestors(parents: &HashMap<Uuid, Vec<Uuid>>, head: Uuid) -> HashSet<Uuid> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Uuid> = parents.get(&head).cloned().unwrap_or_default();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(parents.get(&id).into_iter().flatten().copied());
        }
    }
    seen
}

fn imported_checkpoint(cp: CheckpointMsg) -> Result<ImportedCheckpoint, EngineError> {
    let id = validate::checkpoint_id("bundle.checkpoint.id", &cp.id)?;
    validate::name("bundle.checkpoint.branch", &cp.branch)?;
    let parents = cp
        .parents
        .iter()
        .map(|p| validate::checkpoint_id("bundle.checkpoint.parents", p))
        .collect::<Result<Vec<_>, _>>()?;
    if parents.len() > 2 {
        return Err(bad(format!(
            "checkpoint {id} has {} parents",
            parents.len()
        )));
    }
    let manifest_root = match cp.manifest_root.len() {
        0 => None,
        _ => Some(
            Hash::from_slice(&cp.manifest_root)
                .ok_or_else(|| bad(format!("checkpoint {id} has a malformed root")))?,
        ),
    };
    let created_at = DateTime::from_timestamp_micros(cp.created_at_micros)
        .ok_or_else(|| bad(format!("checkpoint {id} has an impossible time")))?;
    validate::message("bundle.checkpoint.message", &cp.message)?;
    let metadata = validate::metadata("bundle.checkpoint.metadata", &cp.metadata)?;
    let search_text = super::search::document(&cp.message, &metadata, std::iter::empty());
    Ok(ImportedCheckpoint {
        search_text,
        id,
        branch: cp.branch,
        parents,
        generation: cp.generation,
        created_at,
        metadata,
        message: cp.message,
        manifest_root,
        entry_count: cp.entry_count,
        logical_bytes: cp.logical_bytes,
        stored_bytes: cp.stored_bytes,
    })
}
