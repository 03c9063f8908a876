//! The Merge operation: choose bases, combine, resolve, and commit by compare-and-swap.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;
use uuid::Uuid;

use super::chunker::chunk_all;
use super::diff;
use super::engine::{Engine, EngineError};
use super::hash::Hash;
use super::manifest::{self, ChunkRef, LeafEntry, Root};
use super::merge::{self, Conflict, Overlay, Resolve};
use super::search;
use super::sink::BlobSink;
use super::validate;
use crate::catalog::{self, BlobKind, CheckpointRecord};

/// What the source of a merge is.
#[derive(Clone, Debug)]
pub enum MergeSource {
    Checkpoint(Uuid),
    Branch(String),
}

/// How conflicts are settled when no per-key resolution says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Fail,
    Ours,
    Theirs,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Fail => "fail",
            Strategy::Ours => "ours",
            Strategy::Theirs => "theirs",
        }
    }
}

/// A choice for one conflicting key.
#[derive(Clone, Debug)]
pub enum Choice {
    Ours,
    Theirs,
    Delete,
    Value(Bytes),
}

#[derive(Clone, Debug)]
pub struct KeyResolution {
    pub key: String,
    pub choice: Choice,
    pub expected_ours: Option<Hash>,
    pub expected_theirs: Option<Hash>,
}

#[derive(Clone, Debug)]
pub struct MergeRequest {
    pub session: String,
    pub target: String,
    pub source: MergeSource,
    pub strategy: Strategy,
    pub resolutions: Vec<KeyResolution>,
    pub dry_run: bool,
    pub expected_target_head: Option<Uuid>,
    pub message: String,
    /// Canonical JSON object text.
    pub metadata: String,
    /// The token of a lease on the target branch.
    pub lease: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    UpToDate,
    FastForward,
    Merged,
    Conflicted,
}

#[derive(Clone, Debug)]
pub struct MergeReport {
    pub outcome: MergeOutcome,
    /// The target's head after the merge; `None` for a dry run or a conflict.
    pub head: Option<CheckpointRecord>,
    pub conflicts: Vec<Conflict>,
    pub bases: Vec<Uuid>,
}

impl Engine {
    pub async fn merge(self: &Arc<Self>, req: MergeRequest) -> Result<MergeReport, EngineError> {
        // The two sides.
        let ours_id = self
            .catalog
            .branch_head(&req.session, &req.target)
            .await?
            .ok_or_else(|| {
                EngineError::NotFound(format!("branch {} of session {}", req.target, req.session))
            })?;
        if req.expected_target_head.is_some_and(|e| e != ours_id) {
            return Err(EngineError::HeadMoved {
                branch: req.target.clone(),
                current: Some(ours_id),
            });
        }
        let theirs_id = match &req.source {
            MergeSource::Checkpoint(id) => *id,
            MergeSource::Branch(name) => self.branch(&req.session, name).await?.head,
        };
        let ours = self.checkpoint(ours_id).await?;
        let theirs = self.checkpoint(theirs_id).await?;
        if theirs.session != req.session {
            return Err(EngineError::NotFound(format!(
                "checkpoint {theirs_id} in session {}",
                req.session
            )));
        }

        // Trivial cases: nothing to do, or a fast-forward.
        let report = |outcome, head, conflicts, bases| MergeReport {
            outcome,
            head,
            conflicts,
            bases,
        };
        if self.is_ancestor(theirs_id, ours_id).await? {
            return Ok(report(
                MergeOutcome::UpToDate,
                Some(ours),
                Vec::new(),
                vec![theirs_id],
            ));
        }
        if self.is_ancestor(ours_id, theirs_id).await? {
            if req.dry_run {
                return Ok(report(
                    MergeOutcome::FastForward,
                    None,
                    Vec::new(),
                    vec![ours_id],
                ));
            }
            self.catalog
                .move_branch(
                    &req.session,
                    &req.target,
                    ours_id,
                    theirs_id,
                    "fast-forward",
                    req.lease,
                )
                .await?;
            return Ok(report(
                MergeOutcome::FastForward,
                Some(theirs),
                Vec::new(),
                vec![ours_id],
            ));
        }

        // Three-way, over a virtual base when the history is criss-crossed.
        let bases = self.merge_bases(&[ours_id], &[theirs_id]).await?;
        let loader = self.page_loader();
        let overlay = Overlay::new(&loader);
        let base = self.virtual_base(&overlay, &bases).await?;
        let (ours_root, theirs_root) = (Engine::root_of(&ours), Engine::root_of(&theirs));
        let combined = merge::combine(
            diff::diff(&overlay, base.as_ref(), ours_root.as_ref()).await?,
            diff::diff(&overlay, base.as_ref(), theirs_root.as_ref()).await?,
        );

        // Resolutions: per key first, then the strategy.
        let mut sink = BlobSink::new(Arc::clone(self));
        let per_key = self.resolutions(&req.resolutions, &combined.conflicts, &mut sink)?;
        let default = match req.strategy {
            Strategy::Fail => None,
            Strategy::Ours => Some(Resolve::Ours),
            Strategy::Theirs => Some(Resolve::Theirs),
        };
        let (edits, left) = merge::resolve(combined.clone(), default, &per_key);
        if !left.is_empty() {
            return Ok(report(MergeOutcome::Conflicted, None, left, bases));
        }
        if req.dry_run {
            return Ok(report(
                MergeOutcome::Merged,
                None,
                combined.conflicts,
                bases,
            ));
        }

        // The merge checkpoint, committed on the target by compare-and-swap.
        let edited: Vec<String> = edits.keys().cloned().collect();
        let (root, pages) = manifest::update(&loader, ours_root.as_ref(), edits).await?;
        for page in pages {
            sink.queue_raw(page.hash, BlobKind::Page, page.bytes);
        }
        sink.flush().await?;
        let metadata = merge_metadata(&req, theirs_id, &bases, &combined.conflicts)?;
        let metadata_text = metadata.clone();
        let sunk = sink.into_blobs()?;
        let checkpoint = catalog::NewCheckpoint {
            id: Uuid::now_v7(),
            session: req.session.clone(),
            branch: req.target.clone(),
            parent: Some(ours_id),
            merge_parent: Some(theirs_id),
            metadata,
            message: req.message.clone(),
            manifest_root: root.as_ref().map(|r| r.page),
            entry_count: root.as_ref().map_or(0, |r| r.entries),
            logical_bytes: root.as_ref().map_or(0, |r| r.bytes),
            blobs: sunk.stored,
            reused: sunk.reused,
            source: None,
            search_text: search::document(
                &req.message,
                &metadata_text,
                edited.iter().map(String::as_str),
            ),
            request_id: None,
            lease: req.lease,
        };
        let catalog = Arc::clone(&self.catalog);
        let committed =
            tokio::spawn(async move { catalog.commit(checkpoint).await }.in_current_span())
                .await
                .map_err(|e| EngineError::Internal(format!("commit task failed: {e}")))??;
        Ok(report(
            MergeOutcome::Merged,
            Some(committed),
            combined.conflicts,
            bases,
        ))
    }

    /// The state to merge against: the single base, nothing, or the bases merged together.
    async fn virtual_base<L: manifest::PageLoader>(
        &self,
        overlay: &Overlay<'_, L>,
        bases: &[Uuid],
    ) -> Result<Option<Root>, EngineError> {
        let Some((first, rest)) = bases.split_first() else {
            return Ok(None);
        };
        let mut merged_ids = vec![*first];
        let mut acc = Engine::root_of(&self.checkpoint(*first).await?);
        for next in rest {
            let inner_bases = self.merge_bases(&merged_ids, &[*next]).await?;
            let inner = Box::pin(self.virtual_base(overlay, &inner_bases)).await?;
            let next_root = Engine::root_of(&self.checkpoint(*next).await?);
            acc = overlay
                .virtual_merge(inner.as_ref(), acc.as_ref(), next_root.as_ref())
                .await?;
            merged_ids.push(*next);
        }
        Ok(acc)
    }

    /// Checks each per-key resolution against the conflicts and prepares its edit.
    fn resolutions(
        &self,
        resolutions: &[KeyResolution],
        conflicts: &[Conflict],
        sink: &mut BlobSink,
    ) -> Result<HashMap<String, Resolve>, EngineError> {
        let mut out = HashMap::new();
        for (i, r) in resolutions.iter().enumerate() {
            let field = format!("resolutions[{i}]");
            let conflict = conflicts.iter().find(|c| c.key == r.key).ok_or_else(|| {
                EngineError::InvalidArgument {
                    field: format!("{field}.key"),
                    reason: format!("{:?} does not conflict", r.key),
                }
            })?;
            for (side, expected, actual) in [
                ("ours", r.expected_ours, conflict.ours),
                ("theirs", r.expected_theirs, conflict.theirs),
            ] {
                if expected.is_some() && expected != actual {
                    return Err(EngineError::FailedPrecondition(format!(
                        "{field}: {side} of {:?} is no longer the value the resolution expects",
                        r.key
                    )));
                }
            }
            let resolve = match &r.choice {
                Choice::Ours => Resolve::Ours,
                Choice::Theirs => Resolve::Theirs,
                Choice::Delete => Resolve::Delete,
                Choice::Value(bytes) => {
                    if bytes.len() as u64 > self.config.max_value_bytes {
                        return Err(EngineError::ResourceExhausted(format!(
                            "{field}.value is over the value limit"
                        )));
                    }
                    let mut chunks = Vec::new();
                    for chunk in chunk_all(bytes) {
                        let hash = Hash::of(&chunk);
                        chunks.push(ChunkRef {
                            hash,
                            len: chunk.len() as u64,
                        });
                        sink.queue_raw(hash, BlobKind::Chunk, chunk);
                    }
                    Resolve::Value(LeafEntry {
                        key: r.key.clone(),
                        size: bytes.len() as u64,
                        chunks,
                    })
                }
            };
            out.insert(r.key.clone(), resolve);
        }
        Ok(out)
    }
}

/// The caller's metadata with what the merge did under "merge".
fn merge_metadata(
    req: &MergeRequest,
    source: Uuid,
    bases: &[Uuid],
    conflicts: &[Conflict],
) -> Result<String, EngineError> {
    let mut metadata: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&req.metadata).map_err(|e| EngineError::Internal(e.to_string()))?;
    let resolutions: serde_json::Map<String, serde_json::Value> = conflicts
        .iter()
        .map(|c| {
            let chosen = req
                .resolutions
                .iter()
                .find(|r| r.key == c.key)
                .map(|r| match r.choice {
                    Choice::Ours => "ours",
                    Choice::Theirs => "theirs",
                    Choice::Delete => "delete",
                    Choice::Value(_) => "value",
                });
            (
                c.key.clone(),
                serde_json::Value::from(chosen.unwrap_or(req.strategy.name())),
            )
        })
        .collect();
    metadata.insert(
        "merge".into(),
        serde_json::json!({
            "strategy": req.strategy.name(),
            "source": source.to_string(),
            "bases": bases.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            "resolutions": resolutions,
        }),
    );
    let text = serde_json::Value::Object(metadata).to_string();
    validate::metadata("metadata", &text)
}
