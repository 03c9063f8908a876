//! Verify: checks that every blob a checkpoint needs is registered, present and hashes right,
//! and finds objects no registry row knows. Works in slices, each resumable from the cursor
//! the previous one returned, so a large store can be checked a piece at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use uuid::Uuid;

use super::codec;
use super::collect::BATCH;
use super::engine::{Engine, EngineError};
use super::hash::Hash;
use super::manifest::Page;
use super::validate::invalid;
use crate::blobs::{BLOB_PREFIX, BlobError, StoredObject, parse_object_key};
use crate::catalog::{BlobRecord, Location};

/// Foreign objects a slice names (all are counted).
const FOREIGN_NAMED: usize = 100;

/// Objects one slice lists, per checkpoint of the slice's limit.
const OBJECTS_PER_CHECKPOINT: u32 = 10;

/// What one verify call checks.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// One session's checkpoints (and no object listing), or everything.
    pub session: Option<String>,
    /// Where the previous slice stopped; `None` starts at the beginning.
    pub cursor: Option<String>,
    /// Checkpoints per slice (objects per slice: ten times as many).
    pub limit: u32,
    /// Delete orphaned objects older than the upload lease.
    pub remove_orphans: bool,
}

/// What is wrong with a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// No registry row, or its object is gone.
    Missing,
    /// Present, but its bytes do not decode to its hash.
    Damaged,
}

/// A blob a checkpoint needs that is not right.
#[derive(Clone, Debug)]
pub struct Problem {
    pub checkpoint: Uuid,
    pub blob: Hash,
    pub kind: ProblemKind,
    pub detail: String,
}

/// What a slice found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    pub checkpoints_checked: u64,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub objects_listed: u64,
    pub problems: Vec<Problem>,
    /// Objects older than the upload lease that no registry row knows.
    pub orphans: Vec<String>,
    pub orphans_removed: u64,
    /// Listed objects whose keys this service did not make (left alone).
    pub foreign_objects: u64,
    /// The first hundred of them (`FOREIGN_NAMED`).
    pub foreign: Vec<String>,
    /// Pass to the next call to go on; `None` when everything has been checked.
    pub next_cursor: Option<String>,
}

enum Position {
    Checkpoints(Option<Uuid>),
    /// The next fan-out directory to list.
    Objects(u8),
}

impl Position {
    fn parse(cursor: Option<&str>) -> Result<Self, EngineError> {
        let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(Self::Checkpoints(None));
        };
        if let Some(id) = cursor.strip_prefix("checkpoints:") {
            let id = Uuid::try_parse(id)
                .map_err(|_| invalid("cursor", format!("{cursor:?} is not a verify cursor")))?;
            return Ok(Self::Checkpoints(Some(id)));
        }
        let dir = cursor.strip_prefix("objects:").and_then(|d| match d {
            "" => Some(0),
            d if d.len() == 2 => u8::from_str_radix(d, 16).ok(),
            _ => None,
        });
        dir.map(Self::Objects)
            .ok_or_else(|| invalid("cursor", format!("{cursor:?} is not a verify cursor")))
    }
}

impl Engine {
    /// Checks one slice of the store.
    pub async fn verify(
        self: &Arc<Self>,
        options: VerifyOptions,
    ) -> Result<VerifyReport, EngineError> {
        if let Some(session) = &options.session {
            self.session(session).await?;
        }
        let limit = options.limit.clamp(1, 10 * BATCH);
        let mut check = Check {
            engine: self,
            verdicts: HashMap::new(),
            report: VerifyReport::default(),
        };
        match Position::parse(options.cursor.as_deref())? {
            Position::Checkpoints(after) => {
                check
                    .checkpoints(options.session.as_deref(), after, limit)
                    .await?
            }
            Position::Objects(from) if options.session.is_none() => {
                check
                    .objects(from, limit * OBJECTS_PER_CHECKPOINT, options.remove_orphans)
                    .await?
            }
            Position::Objects(_) => {
                return Err(invalid(
                    "cursor",
                    "a session's verify checks no objects; this cursor is for a store-wide one",
                ));
            }
        }
        Ok(check.report)
    }
}

struct Check<'a> {
    engine: &'a Arc<Engine>,
    /// What is wrong at or below each blob checked in this slice (for a page, its whole
    /// subtree; empty when all is well): shared pages and chunks are read once, yet every
    /// checkpoint that needs a bad blob is named.
    verdicts: HashMap<Hash, Arc<Vec<Fault>>>,
    report: VerifyReport,
}

/// A bad blob, before it is attributed to the checkpoints that need it.
#[derive(Clone, Debug)]
struct Fault {
    blob: Hash,
    kind: ProblemKind,
    detail: String,
}

impl Check<'_> {
    async fn checkpoints(
        &mut self,
        session: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(), EngineError> {
        let slice = self
            .engine
            .catalog
            .checkpoint_roots(session, after, limit)
            .await?;
        for (id, root) in &slice {
            self.report.checkpoints_checked += 1;
            if let Some(root) = root {
                self.tree(*id, *root).await?;
            }
        }
        self.report.next_cursor = match slice.last() {
            Some((last, _)) if slice.len() == limit as usize => Some(format!("checkpoints:{last}")),
            // Checkpoints done: a store-wide verify goes on to the objects.
            _ if session.is_none() => Some("objects:00".to_owned()),
            _ => None,
        };
        Ok(())
    }

    /// Reports every bad blob of one checkpoint's manifest tree, once each.
    async fn tree(&mut self, checkpoint: Uuid, root: Hash) -> Result<(), EngineError> {
        let faults = self.page(root).await?;
        let mut named = HashSet::new();
        for fault in faults.iter().filter(|f| named.insert(f.blob)) {
            self.report.problems.push(Problem {
                checkpoint,
                blob: fault.blob,
                kind: fault.kind,
                detail: fault.detail.clone(),
            });
        }
        Ok(())
    }

    /// What is wrong with a page and everything below it.
    fn page(&mut self, hash: Hash) -> BoxFuture<'_, Result<Arc<Vec<Fault>>, EngineError>> {
        Box::pin(async move {
            if let Some(verdict) = self.verdicts.get(&hash) {
                return Ok(Arc::clone(verdict));
            }
            let mut faults = Vec::new();
            match self.blob(hash).await? {
                Err(fault) => faults.push(fault),
                Ok(bytes) => match Page::decode(hash, &bytes) {
                    Err(err) => faults.push(Fault {
                        blob: hash,
                        kind: ProblemKind::Damaged,
                        detail: err.to_string(),
                    }),
                    Ok(page) => {
                        for child in &page.children {
                            faults.extend(self.page(child.page).await?.iter().cloned());
                        }
                        let chunks = page.entries.iter().flat_map(|e| e.chunks.iter());
                        let chunks: HashSet<Hash> = chunks.map(|c| c.hash).collect();
                        for chunk in chunks {
                            faults.extend(self.chunk(chunk).await?.iter().cloned());
                        }
                    }
                },
            }
            let verdict = Arc::new(faults);
            self.verdicts.insert(hash, Arc::clone(&verdict));
            Ok(verdict)
        })
    }

    async fn chunk(&mut self, hash: Hash) -> Result<Arc<Vec<Fault>>, EngineError> {
        if let Some(verdict) = self.verdicts.get(&hash) {
            return Ok(Arc::clone(verdict));
        }
        let verdict = Arc::new(self.blob(hash).await?.err().into_iter().collect());
        self.verdicts.insert(hash, Arc::clone(&verdict));
        Ok(verdict)
    }

    /// Reads one blob and checks it against its hash.
    async fn blob(&mut self, hash: Hash) -> Result<Result<bytes::Bytes, Fault>, EngineError> {
        self.report.blobs_checked += 1;
        let fault = |kind, detail| {
            Ok(Err(Fault {
                blob: hash,
                kind,
                detail,
            }))
        };
        let record = self.engine.catalog.blobs(&[hash]).await?.pop();
        let Some(BlobRecord {
            codec: blob_codec,
            raw_len,
            location,
            ..
        }) = record
        else {
            return fault(ProblemKind::Missing, "no registry row".into());
        };
        let stored = match location {
            Location::Inline(bytes) => bytes,
            Location::Object(key) => match self.engine.blobs.get(&key).await {
                Ok(bytes) => bytes,
                Err(BlobError::NotFound(_)) => {
                    return fault(ProblemKind::Missing, format!("object {key} is missing"));
                }
                Err(BlobError::Other(why)) => return Err(EngineError::Unavailable(why)),
            },
        };
        self.report.bytes_checked += stored.len() as u64;
        match codec::decode(hash, blob_codec, raw_len, stored) {
            Ok(raw) => Ok(Ok(raw)),
            Err(err) => fault(ProblemKind::Damaged, err.to_string()),
        }
    }

    /// Lists the objects of fan-out directories from `from` on (until about `limit` objects
    /// have been listed) and reports those no row knows. Slices follow the two-hex-digit
    /// directories because a local directory lists in no particular order.
    async fn objects(&mut self, from: u8, limit: u32, remove: bool) -> Result<(), EngineError> {
        if from == 0 {
            self.outside_fan_out().await?;
        }
        let mut dir = u16::from(from);
        while dir <= 0xff && self.report.objects_listed < u64::from(limit) {
            let prefix = format!("{BLOB_PREFIX}/{dir:02x}");
            let listed: Vec<StoredObject> = self
                .engine
                .blobs
                .list(&prefix, None)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| EngineError::Unavailable(format!("listing objects: {e}")))?;
            self.report.objects_listed += listed.len() as u64;
            for object in &listed {
                if parse_object_key(&object.key).is_none() {
                    self.foreign(object.key.clone());
                }
            }
            for batch in listed.chunks(BATCH as usize) {
                self.orphans(batch.to_vec(), remove).await?;
            }
            dir += 1;
        }
        self.report.next_cursor = (dir <= 0xff).then(|| format!("objects:{dir:02x}"));
        Ok(())
    }

    fn foreign(&mut self, key: String) {
        self.report.foreign_objects += 1;
        if self.report.foreign.len() < FOREIGN_NAMED {
            self.report.foreign.push(key);
        }
    }

    /// Counts what lies outside the fan-out directories: at the store's top, beside
    /// `chunks/`, and in `chunks/` outside its two-hex-digit directories. None of it is ours.
    async fn outside_fan_out(&mut self) -> Result<(), EngineError> {
        let unavailable = |e: BlobError| EngineError::Unavailable(format!("listing objects: {e}"));
        let (top, dirs) = self
            .engine
            .blobs
            .list_level(None)
            .await
            .map_err(unavailable)?;
        let (loose, fan_out) = self
            .engine
            .blobs
            .list_level(Some(BLOB_PREFIX))
            .await
            .map_err(unavailable)?;
        let is_fan_out = |dir: &str| {
            dir.strip_prefix(BLOB_PREFIX)
                .and_then(|d| d.strip_prefix('/'))
                .is_some_and(|d| d.len() == 2 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        let strays = dirs.into_iter().filter(|d| d != BLOB_PREFIX);
        let strays: Vec<String> = strays
            .chain(fan_out.into_iter().filter(|d| !is_fan_out(d)))
            .collect();
        for key in top.into_iter().chain(loose) {
            self.foreign(key);
        }
        for dir in strays {
            let listed: Vec<StoredObject> = self
                .engine
                .blobs
                .list(&dir, None)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            for object in listed {
                self.foreign(object.key);
            }
        }
        Ok(())
    }

    async fn orphans(
        &mut self,
        listed: Vec<StoredObject>,
        remove: bool,
    ) -> Result<(), EngineError> {
        for (key, _) in self.engine.orphans_among(listed).await? {
            if remove {
                self.engine
                    .blobs
                    .delete(&key)
                    .await
                    .map_err(|e| EngineError::Unavailable(format!("deleting {key}: {e}")))?;
                self.report.orphans_removed += 1;
            }
            self.report.orphans.push(key);
        }
        Ok(())
    }
}
