//! Verify: checks that every blob a checkpoint needs is registered, present and hashes right,
//! and finds objects no registry row knows. Works in slices, each resumable from the cursor
//! the previous one returned, so a large store can be checked a piece at a time.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use uuid::Uuid;

use super::codec;
use super::collect::BATCH;
use super::engine::{Engine, EngineError};
use super::hash::Hash;
use super::manifest::Page;
use super::validate::invalid;
use crate::blobs::{BLOB_PREFIX, BlobError, StoredObject};
use crate::catalog::{BlobRecord, Location};

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
            seen: HashSet::new(),
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
    /// Blobs this slice has checked: shared pages and chunks are read once.
    seen: HashSet<Hash>,
    report: VerifyReport,
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

    /// Checks every blob of one checkpoint's manifest tree not yet checked in this slice.
    async fn tree(&mut self, checkpoint: Uuid, root: Hash) -> Result<(), EngineError> {
        let mut pages = vec![root];
        while let Some(hash) = pages.pop() {
            if !self.seen.insert(hash) {
                continue;
            }
            let Some(bytes) = self.blob(checkpoint, hash).await? else {
                continue;
            };
            let page = match Page::decode(hash, &bytes) {
                Ok(page) => page,
                Err(err) => {
                    self.problem(checkpoint, hash, ProblemKind::Damaged, err.to_string());
                    continue;
                }
            };
            pages.extend(page.children.iter().map(|c| c.page));
            let chunks: Vec<Hash> = page
                .entries
                .iter()
                .flat_map(|e| e.chunks.iter().map(|c| c.hash))
                .filter(|h| self.seen.insert(*h))
                .collect();
            for chunk in chunks {
                self.blob(checkpoint, chunk).await?;
            }
        }
        Ok(())
    }

    /// Reads and checks one blob; records a problem and returns `None` when it is not right.
    async fn blob(
        &mut self,
        checkpoint: Uuid,
        hash: Hash,
    ) -> Result<Option<bytes::Bytes>, EngineError> {
        self.report.blobs_checked += 1;
        let record = self.engine.catalog.blobs(&[hash]).await?.pop();
        let Some(BlobRecord {
            codec: blob_codec,
            raw_len,
            location,
            ..
        }) = record
        else {
            self.problem(
                checkpoint,
                hash,
                ProblemKind::Missing,
                "no registry row".into(),
            );
            return Ok(None);
        };
        let stored = match location {
            Location::Inline(bytes) => bytes,
            Location::Object(key) => match self.engine.blobs.get(&key).await {
                Ok(bytes) => bytes,
                Err(BlobError::NotFound(_)) => {
                    let detail = format!("object {key} is missing");
                    self.problem(checkpoint, hash, ProblemKind::Missing, detail);
                    return Ok(None);
                }
                Err(BlobError::Other(why)) => return Err(EngineError::Unavailable(why)),
            },
        };
        self.report.bytes_checked += stored.len() as u64;
        match codec::decode(hash, blob_codec, raw_len, stored) {
            Ok(raw) => Ok(Some(raw)),
            Err(err) => {
                self.problem(checkpoint, hash, ProblemKind::Damaged, err.to_string());
                Ok(None)
            }
        }
    }

    fn problem(&mut self, checkpoint: Uuid, blob: Hash, kind: ProblemKind, detail: String) {
        self.report.problems.push(Problem {
            checkpoint,
            blob,
            kind,
            detail,
        });
    }

    /// Lists the objects of fan-out directories from `from` on (until about `limit` objects
    /// have been listed) and reports those no row knows. Slices follow the two-hex-digit
    /// directories because a local directory lists in no particular order.
    async fn objects(&mut self, from: u8, limit: u32, remove: bool) -> Result<(), EngineError> {
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
            for batch in listed.chunks(BATCH as usize) {
                self.orphans(batch.to_vec(), remove).await?;
            }
            dir += 1;
        }
        self.report.next_cursor = (dir <= 0xff).then(|| format!("objects:{dir:02x}"));
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
