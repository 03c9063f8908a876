//! Retention and collection: drop the checkpoints retention no longer keeps, then free the
//! blobs no checkpoint references, online, with writers running.
//!
//! A pass runs in phases, each safe to interrupt (a later pass redoes what is left):
//!
//! 1. **begin**: take the collector lease (one collector across all instances) and raise the
//!    collection epoch to `E`. Raising it waits for every commit that read the old epoch, so
//!    from then on each commit stamps the blobs it registers or reuses with `E` or later.
//! 2. **retain**: per (session, branch), delete the checkpoints the policy drops, in batches,
//!    re-checking under the session lock that none became a head or got tagged meanwhile.
//! 3. **mark**: read every checkpoint's manifest root in one snapshot and walk the trees.
//! 4. **sweep**: delete registry rows neither marked nor stamped since `E` began, queueing
//!    their objects in the same transaction, then delete the queued objects.
//! 5. **reclaim**: delete objects no row knows that are older than the upload lease (uploads
//!    whose commit never came).
//!
//! Why no live blob is lost: a blob a checkpoint needs is either reachable from a checkpoint
//! in the mark's snapshot, or was registered or reused by a commit after `E` began (stamped,
//! so the sweep's conditional delete skips it, or the commit sees it gone and aborts), or was
//! inherited from a parent (or fork source) that the commit held and that therefore existed
//! when the snapshot was read. Time plays no part, except for uploads not yet registered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::{info, warn};
use uuid::Uuid;

use super::engine::{BlobFault, Engine, EngineError};
use super::hash::Hash;
use super::manifest::Page;
use super::retention::{self, Candidate, Decision, Pin, Policy};
use super::validate;
use crate::blobs::{BLOB_PREFIX, StoredObject, parse_object_key};
use crate::catalog::{BlobKind, Catalog, RetentionCandidate};
use crate::telemetry::metrics::{PassOutcome, collection_pass, metrics};

/// Rows, ids or objects one catalog statement or store call handles: well under every
/// database's parameter limit, and short enough that no lock is held for long.
pub const BATCH: u32 = 1000;

/// What a pass does.
#[derive(Clone, Debug, Default)]
pub struct CollectOptions {
    /// Decide and count, delete nothing.
    pub dry_run: bool,
    /// Apply retention to this session only (collection itself is always store-wide).
    pub session: Option<String>,
    /// Skip retention: only free what is already unreferenced.
    pub skip_retention: bool,
    /// Return every retention decision with its reasons.
    pub explain: bool,
}

/// One retention decision, for a dry run's explanation.
#[derive(Clone, Debug)]
pub struct Explained {
    pub session: String,
    pub branch: String,
    pub policy: String,
    pub checkpoint: Uuid,
    pub created_at: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// What a pass did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CollectReport {
    pub dry_run: bool,
    pub epoch: u64,
    pub sessions_examined: u64,
    pub checkpoints_examined: u64,
    pub checkpoints_deleted: u64,
    /// Groups left alone because their policy would have dropped every checkpoint.
    pub groups_refused: Vec<String>,
    pub blobs_live: u64,
    pub chunks_deleted: u64,
    pub pages_deleted: u64,
    /// Stored bytes of the deleted registry rows (inline and object).
    pub bytes_freed: u64,
    pub objects_deleted: u64,
    pub orphans_deleted: u64,
    pub orphan_bytes_freed: u64,
    /// Change-feed events older than the feed's retention, dropped.
    pub events_expired: u64,
    pub retain_ms: u64,
    pub mark_ms: u64,
    pub sweep_ms: u64,
    pub reclaim_ms: u64,
    #[serde(skip)]
    pub decisions: Vec<Explained>,
}

/// A pass in progress. The phases are public so tests can interleave them with writes; use
/// [`Engine::collect`] to run them all.
pub struct Collection {
    engine: Arc<Engine>,
    options: CollectOptions,
    holder: String,
    started_at: DateTime<Utc>,
    /// The epoch this pass raised; blobs stamped with it or later are never deleted.
    epoch: u64,
    /// Checkpoints a dry run would drop (a real run has deleted them).
    dropped: HashSet<Uuid>,
    live: HashSet<Hash>,
    report: CollectReport,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("holder", &self.holder)
            .field("epoch", &self.epoch)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Runs a whole pass and returns its report.
    pub async fn collect(
        self: &Arc<Self>,
        options: CollectOptions,
    ) -> Result<CollectReport, EngineError> {
        let dry_run = options.dry_run;
        let passed = async {
            let mut pass = Collection::begin(Arc::clone(self), options).await?;
            let outcome = pass.run_phases().await;
            match outcome {
                Ok(()) => pass.finish().await,
                Err(err) => {
                    pass.abandon().await;
                    Err(err)
                }
            }
        }
        .await;
        count_pass(dry_run, &passed);
        passed
    }

    /// The policy that applies to each of a session's branches: the branch's override, else
    /// the session's, else the deployment default. Returns (session override, branch overrides).
    pub async fn retention_overrides(
        &self,
        session: &str,
    ) -> Result<(Option<Policy>, Vec<(String, Policy)>), EngineError> {
        let mut whole = None;
        let mut branches = Vec::new();
        for (branch, text) in self.catalog.retention_policies(session).await? {
            let policy: Policy = text.parse().map_err(|e| {
                EngineError::Internal(format!("stored retention policy {text:?} is invalid: {e}"))
            })?;
            if branch.is_empty() {
                whole = Some(policy);
            } else {
                branches.push((branch, policy));
            }
        }
        Ok((whole, branches))
    }
}

impl Collection {
    /// Phase 1: takes the lease and raises the epoch (a dry run does neither).
    pub async fn begin(engine: Arc<Engine>, options: CollectOptions) -> Result<Self, EngineError> {
        let holder = format!("{}:{}", std::process::id(), Uuid::now_v7());
        let started_at = engine.catalog.now().await?;
        let mut epoch = 0;
        if !options.dry_run {
            let ttl = engine.config.collector_lease;
            if !engine.catalog.acquire_collector(&holder, ttl).await? {
                return Err(EngineError::Aborted(
                    "another collection is running; retry when it has finished".into(),
                ));
            }
            epoch = match engine.catalog.advance_epoch().await {
                Ok(epoch) => epoch,
                Err(err) => {
                    let _ = engine.catalog.release_collector(&holder).await;
                    return Err(err.into());
                }
            };
        }
        let report = CollectReport {
            dry_run: options.dry_run,
            epoch,
            ..CollectReport::default()
        };
        Ok(Self {
            engine,
            options,
            holder,
            started_at,
            epoch,
            dropped: HashSet::new(),
            live: HashSet::new(),
            report,
        })
    }

    async fn run_phases(&mut self) -> Result<(), EngineError> {
        if !self.options.skip_retention {
            self.retain().await?;
        }
        self.mark().await?;
        self.sweep().await?;
        self.reclaim().await?;
        self.expire_feed().await
    }

    /// Phase 2: applies retention to every session (or the one the options name).
    pub async fn retain(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        match self.options.session.clone() {
            Some(session) => {
                let record = self.engine.session(&session).await?;
                self.retain_session(&session, record.checkpoint_count)
                    .await?;
            }
            None => {
                let mut after: Option<String> = None;
                loop {
                    let page = self
                        .engine
                        .catalog
                        .list_sessions(after.as_deref(), BATCH)
                        .await?;
                    for session in &page {
                        self.retain_session(&session.name, session.checkpoint_count)
                            .await?;
                    }
                    match page.last() {
                        Some(last) if page.len() == BATCH as usize => {
                            after = Some(last.name.clone())
                        }
                        _ => break,
                    }
                }
            }
        }
        self.report.retain_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Applies retention to one session of `checkpoints` checkpoints.
    async fn retain_session(&mut self, session: &str, checkpoints: u64) -> Result<(), EngineError> {
        self.renew().await?;
        self.report.sessions_examined += 1;
        let (whole, overrides) = self.engine.retention_overrides(session).await?;
        let default = whole.unwrap_or_else(|| self.engine.config.default_retention.clone());
        if overrides.is_empty() && default.is_empty() && !self.options.explain {
            // Nothing to drop: counted, not loaded.
            self.report.checkpoints_examined += checkpoints;
            return Ok(());
        }

        let groups = self.load_groups(session).await?;
        let mut drop = Vec::new();
        for (branch, group) in groups {
            let policy = policy_for(&overrides, &default, &branch);
            self.report.checkpoints_examined += group.len() as u64;
            let decisions = match retention::evaluate(&policy, &group) {
                Ok(decisions) => decisions,
                Err(err) => {
                    warn!(session, branch, error = %err, "retention policy refused");
                    self.report
                        .groups_refused
                        .push(format!("{session}/{branch}: {err}"));
                    continue;
                }
            };
            self.explain(session, &branch, &policy, &group, &decisions);
            drop.extend(decisions.iter().filter(|d| !d.keep).map(|d| d.id));
        }
        self.drop_checkpoints(session, drop).await
    }

    /// A session's checkpoints grouped by branch, each with its pins.
    async fn load_groups(
        &self,
        session: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<Candidate>>, EngineError> {
        let catalog = &self.engine.catalog;
        let mut pins: std::collections::HashMap<Uuid, Vec<Pin>> = Default::default();
        for branch in catalog.list_branches(session).await? {
            pins.entry(branch.head)
                .or_default()
                .push(Pin::Head(branch.name));
        }
        for tag in catalog.list_tags(session).await? {
            pins.entry(tag.checkpoint)
                .or_default()
                .push(Pin::Tag(tag.name));
        }
        let mut groups: std::collections::BTreeMap<String, Vec<Candidate>> = Default::default();
        let mut after = 0;
        loop {
            let page = catalog
                .retention_candidates(session, after, 10 * BATCH)
                .await?;
            let full = page.len() == 10 * BATCH as usize;
            for RetentionCandidate {
                id,
                seq,
                branch,
                created_at,
            } in page
            {
                after = seq;
                let pins = pins.remove(&id).unwrap_or_default();
                groups.entry(branch).or_default().push(Candidate {
                    id,
                    seq,
                    created_at,
                    pins,
                });
            }
            if !full {
                return Ok(groups);
            }
        }
    }

    fn explain(
        &mut self,
        session: &str,
        branch: &str,
        policy: &Policy,
        group: &[Candidate],
        decisions: &[Decision],
    ) {
        if !self.options.explain {
            return;
        }
        let created: std::collections::HashMap<Uuid, DateTime<Utc>> =
            group.iter().map(|c| (c.id, c.created_at)).collect();
        for d in decisions {
            self.report.decisions.push(Explained {
                session: session.to_owned(),
                branch: branch.to_owned(),
                policy: policy.to_string(),
                checkpoint: d.id,
                created_at: created[&d.id],
                keep: d.keep,
                reasons: d.reasons.iter().map(ToString::to_string).collect(),
            });
        }
    }

    async fn drop_checkpoints(&mut self, session: &str, ids: Vec<Uuid>) -> Result<(), EngineError> {
        if self.options.dry_run {
            self.report.checkpoints_deleted += ids.len() as u64;
            self.dropped.extend(ids);
            return Ok(());
        }
        for batch in ids.chunks(BATCH as usize) {
            self.renew().await?;
            let deleted = self.engine.catalog.delete_unpinned(session, batch).await?;
            self.report.checkpoints_deleted += deleted.len() as u64;
        }
        Ok(())
    }

    /// Phase 3: marks every blob reachable from a checkpoint that exists now.
    pub async fn mark(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        let roots = self.engine.catalog.manifest_roots().await?;
        let mut frontier: Vec<Hash> = roots
            .into_iter()
            .filter(|(id, _)| !self.dropped.contains(id))
            .filter_map(|(_, root)| root)
            .filter(|root| self.live.insert(*root))
            .collect();
        while !frontier.is_empty() {
            self.renew().await?;
            let take = frontier.len().min(BATCH as usize);
            let batch: Vec<Hash> = frontier.drain(frontier.len() - take..).collect();
            for page in self.load_pages(&batch).await? {
                self.mark_page(&page, &mut frontier);
            }
        }
        self.report.blobs_live = self.live.len() as u64;
        self.report.mark_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    fn mark_page(&mut self, page: &Page, frontier: &mut Vec<Hash>) {
        for child in &page.children {
            if self.live.insert(child.page) {
                frontier.push(child.page);
            }
        }
        for entry in &page.entries {
            for chunk in &entry.chunks {
                self.live.insert(chunk.hash);
            }
        }
    }

    /// Reads and decodes pages, failing the pass when one is missing or damaged: a pass that
    /// cannot see everything a checkpoint references must not delete anything.
    async fn load_pages(&self, hashes: &[Hash]) -> Result<Vec<Page>, EngineError> {
        let lost = |fault: BlobFault| match fault {
            BlobFault::Lost(hash, why) => EngineError::DataLoss(format!(
                "manifest page {hash}: {why}; the collection stopped before deleting anything \
                 it had not yet marked (run verify)"
            )),
            BlobFault::Unavailable(why) => EngineError::Unavailable(why),
        };
        let records = self.engine.blob_records(hashes).await.map_err(lost)?;
        self.engine
            .fetch_blobs(records)
            .map(|fetched| {
                let (hash, bytes) = fetched.map_err(lost)?;
                Page::decode(hash, &bytes).map_err(EngineError::from)
            })
            .try_collect()
            .await
    }

    /// Phase 4: deletes unmarked registry rows stamped before this pass's epoch, and their
    /// objects.
    pub async fn sweep(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        if !self.options.dry_run {
            self.delete_pending().await?;
        }
        let mut after = None;
        loop {
            self.renew().await?;
            let page = self.engine.catalog.scan_blobs(after, BATCH).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash);
            let full = page.len() == BATCH as usize;
            let doomed: Vec<_> = page
                .into_iter()
                .filter(|b| !self.live.contains(&b.hash))
                .filter(|b| self.options.dry_run || b.touched_epoch < self.epoch)
                .collect();
            if self.options.dry_run {
                for blob in &doomed {
                    match blob.kind {
                        BlobKind::Chunk => self.report.chunks_deleted += 1,
                        BlobKind::Page => self.report.pages_deleted += 1,
                    }
                    self.report.objects_deleted += u64::from(blob.in_object);
                    self.report.bytes_freed += blob.stored_len;
                }
            } else {
                let hashes: Vec<Hash> = doomed.iter().map(|b| b.hash).collect();
                self.delete_blobs(&hashes).await?;
            }
            if !full {
                break;
            }
        }
        self.report.sweep_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    async fn delete_blobs(&mut self, hashes: &[Hash]) -> Result<(), EngineError> {
        let deleted = self.engine.catalog.delete_blobs(hashes, self.epoch).await?;
        let mut keys = Vec::new();
        for blob in deleted {
            match blob.kind {
                BlobKind::Chunk => self.report.chunks_deleted += 1,
                BlobKind::Page => self.report.pages_deleted += 1,
            }
            self.report.bytes_freed += blob.stored_len;
            keys.extend(blob.object_key);
        }
        self.delete_objects(keys).await
    }

    /// Finishes deletions an interrupted pass queued.
    async fn delete_pending(&mut self) -> Result<(), EngineError> {
        loop {
            let keys = self.engine.catalog.pending_deletes(BATCH).await?;
            if keys.is_empty() {
                return Ok(());
            }
            self.delete_objects(keys).await?;
        }
    }

    /// Deletes queued objects, then forgets them.
    async fn delete_objects(&mut self, keys: Vec<String>) -> Result<(), EngineError> {
        if keys.is_empty() {
            return Ok(());
        }
        let blobs = self.engine.blobs.clone();
        futures::stream::iter(keys.clone())
            .map(move |key| {
                let blobs = blobs.clone();
                async move { blobs.delete(&key).await }
            })
            .buffer_unordered(self.engine.config.io_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await
            .map_err(|e| EngineError::Unavailable(format!("deleting objects: {e}")))?;
        self.report.objects_deleted += keys.len() as u64;
        self.engine.catalog.clear_pending_deletes(&keys).await?;
        Ok(())
    }

    /// Phase 5: deletes objects no registry row names that are older than the upload lease.
    pub async fn reclaim(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        let listing = self.engine.blobs.list(BLOB_PREFIX, None);
        let mut listing = std::pin::pin!(listing.chunks(BATCH as usize));
        while let Some(batch) = listing.next().await {
            self.renew().await?;
            let batch: Vec<_> = batch
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| EngineError::Unavailable(format!("listing objects: {e}")))?;
            let orphans = self.engine.orphans_among(batch).await?;
            self.report.orphan_bytes_freed += orphans.iter().map(|o| o.1).sum::<u64>();
            self.report.orphans_deleted += orphans.len() as u64;
            if !self.options.dry_run {
                for (key, _) in &orphans {
                    self.engine
                        .blobs
                        .delete(key)
                        .await
                        .map_err(|e| EngineError::Unavailable(format!("deleting {key}: {e}")))?;
                }
            }
        }
        self.report.reclaim_ms = started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Renews the lease; a pass that lost it stops (another collector took over).
    async fn renew(&self) -> Result<(), EngineError> {
        if self.options.dry_run {
            return Ok(());
        }
        let ttl = self.engine.config.collector_lease;
        if self
            .engine
            .catalog
            .acquire_collector(&self.holder, ttl)
            .await?
        {
            Ok(())
        } else {
            Err(EngineError::Aborted(
                "the collection lost its lease to another collector".into(),
            ))
        }
    }

    /// Records the report, gives the lease up and returns the report.
    pub async fn finish(self) -> Result<CollectReport, EngineError> {
        let report = self.report.clone();
        let text = serde_json::to_string(&report)
            .map_err(|e| EngineError::Internal(format!("encoding the report: {e}")))?;
        if !self.options.dry_run {
            self.engine
                .catalog
                .record_collection(self.started_at, false, &text)
                .await?;
            self.engine.catalog.release_collector(&self.holder).await?;
        }
        info!(
            dry_run = report.dry_run,
            epoch = report.epoch,
            checkpoints_deleted = report.checkpoints_deleted,
            chunks_deleted = report.chunks_deleted,
            pages_deleted = report.pages_deleted,
            bytes_freed = report.bytes_freed,
            orphans_deleted = report.orphans_deleted,
            "collection pass finished"
        );
        Ok(report)
    }

    /// Phase 6: drops change-feed events older than the feed's retention, in batches. Only a pass over every session does it, and a dry run skips it.
    pub async fn expire_feed(&mut self) -> Result<(), EngineError> {
        if self.options.dry_run || self.options.session.is_some() {
            return Ok(());
        }
        let retention = chrono::Duration::from_std(self.engine.config.feed_retention)
            .unwrap_or(chrono::Duration::MAX);
        let Some(before) = self.started_at.checked_sub_signed(retention) else {
            return Ok(());
        };
        let catalog = &self.engine.catalog;
        loop {
            self.renew().await?;
            let gone = catalog.expire_feed(before, BATCH).await?;
            self.report.events_expired += gone;
            if gone < u64::from(BATCH) {
                break;
            }
        }
        Ok(())
    }

    /// Gives the lease up after a failed phase; the next pass starts over.
    pub async fn abandon(self) {
        if !self.options.dry_run
            && let Err(err) = self.engine.catalog.release_collector(&self.holder).await
        {
            warn!(error = %err, "failed to release the collector lease; it expires by itself");
        }
    }
}

/// A branch's override, else the session-wide policy.
fn policy_for(overrides: &[(String, Policy)], default: &Policy, branch: &str) -> Policy {
    overrides
        .iter()
        .find(|(b, _)| b == branch)
        .map_or_else(|| default.clone(), |(_, p)| p.clone())
}

impl Engine {
    /// Of listed objects, those no catalog row knows that are older than the upload lease by
    /// both the store's clock and the upload id's: (key, size). Keys this service did not make
    /// are never included.
    pub(super) async fn orphans_among(
        &self,
        listed: Vec<StoredObject>,
    ) -> Result<Vec<(String, u64)>, EngineError> {
        let now = self.catalog.now().await?;
        let lease =
            chrono::Duration::from_std(self.config.upload_lease).unwrap_or(chrono::Duration::MAX);
        let cutoff = now
            .checked_sub_signed(lease)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        find_orphans(&self.catalog, listed, cutoff).await
    }
}

async fn find_orphans(
    catalog: &Arc<dyn Catalog>,
    listed: Vec<StoredObject>,
    cutoff: DateTime<Utc>,
) -> Result<Vec<(String, u64)>, EngineError> {
    let mut ours = Vec::new();
    for object in listed {
        let Some((hash, upload)) = parse_object_key(&object.key) else {
            // Not a key this service made: never ours to delete.
            continue;
        };
        let uploaded = upload_time(upload).unwrap_or(object.last_modified);
        if object.last_modified.max(uploaded) < cutoff {
            ours.push((hash, object.key, object.size));
        }
    }
    let pairs: Vec<(Hash, String)> = ours.iter().map(|(h, k, _)| (*h, k.clone())).collect();
    let known = catalog.known_objects(&pairs).await?;
    Ok(ours
        .into_iter()
        .filter(|(_, key, _)| !known.contains(key))
        .map(|(_, key, size)| (key, size))
        .collect())
}

/// When an upload id (a UUIDv7) was made.
pub(super) fn upload_time(upload: Uuid) -> Option<DateTime<Utc>> {
    let (secs, nanos) = upload.get_timestamp()?.to_unix();
    DateTime::from_timestamp(secs as i64, nanos)
}

impl Engine {
    async fn ensure_branch(&self, session: &str, branch: &str) -> Result<(), EngineError> {
        let branch = validate::branch("branch", branch)?;
        match self.catalog.branch(session, &branch).await? {
            Some(_) => Ok(()),
            None => Err(EngineError::NotFound(format!(
                "branch {branch} of session {session}"
            ))),
        }
    }
}

/// Where a policy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    Branch,
    Session,
    Default,
}

impl PolicySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Branch => "branch",
            Self::Session => "session",
            Self::Default => "default",
        }
    }
}

impl Engine {
    /// The policy that applies to a branch (`""`: to the session as a whole), and its source.
    pub async fn retention_policy(
        &self,
        session: &str,
        branch: &str,
    ) -> Result<(Policy, PolicySource), EngineError> {
        validate::name("session_id", session)?;
        self.session(session).await?;
        let (whole, branches) = self.retention_overrides(session).await?;
        let overridden = branches.into_iter().find(|(b, _)| b == branch);
        if !branch.is_empty() && overridden.is_none() {
            self.ensure_branch(session, branch).await?;
        }
        if let Some((_, policy)) = overridden {
            return Ok((policy, PolicySource::Branch));
        }
        Ok(match whole {
            Some(policy) => (policy, PolicySource::Session),
            None => (self.config.default_retention.clone(), PolicySource::Default),
        })
    }

    /// Sets (or clears) a session's or branch's override and returns what applies now.
    pub async fn set_retention_policy(
        &self,
        session: &str,
        branch: &str,
        policy: &str,
        clear: bool,
    ) -> Result<(Policy, PolicySource), EngineError> {
        validate::name("session_id", session)?;
        self.session(session).await?;
        // A typo in a branch name must not store a policy nothing will ever use. Clearing is
        // allowed for a branch deleted since its override was set.
        let has_override = self
            .catalog
            .retention_policies(session)
            .await?
            .iter()
            .any(|(b, _)| b == branch);
        let clearing_a_kept_override = clear && has_override;
        if !branch.is_empty() && !clearing_a_kept_override {
            self.ensure_branch(session, branch).await?;
        }
        let text = if clear {
            None
        } else {
            let parsed: Policy = policy
                .parse()
                .map_err(|e| validate::invalid("policy", format!("{policy:?}: {e}")))?;
            Some(parsed.to_string())
        };
        self.catalog
            .set_retention_policy(session, branch, text.as_deref())
            .await?;
        self.retention_policy(session, branch).await
    }
}

/// Counts a pass by outcome and, for a real one, what it deleted.
fn count_pass(dry_run: bool, passed: &Result<CollectReport, EngineError>) {
    let outcome = match passed {
        Ok(_) if dry_run => PassOutcome::DryRun,
        Ok(report) => {
            let m = metrics();
            m.collected_checkpoints.add(report.checkpoints_deleted, &[]);
            m.collected_objects
                .add(report.objects_deleted + report.orphans_deleted, &[]);
            PassOutcome::Ok
        }
        Err(EngineError::Aborted(_)) => PassOutcome::Skipped,
        Err(_) => PassOutcome::Failed,
    };
    collection_pass(outcome);
}
