//! Handlers for branches, tags, history, diff and merge.

use std::sync::Arc;

use bytes::Bytes;
use ckpt_proto::v1::{self, get_history_request, merge_request, resolution};
use tonic::Status;

use super::{convert, page_size};
use crate::catalog::RefKind;
use crate::core::diff::{Change, value_id};
use crate::core::hash::Hash;
use crate::core::merge::ConflictKind;
use crate::core::{
    Choice, Engine, KeyResolution, MergeOutcome, MergeRequest, MergeSource, ReadFilter, ReadTarget,
    Strategy, validate,
};

fn id(field: &str, value: &str) -> Result<uuid::Uuid, Status> {
    Ok(validate::checkpoint_id(field, value)?)
}

fn optional_id(field: &str, value: &str) -> Result<Option<uuid::Uuid>, Status> {
    Ok(validate::optional_checkpoint_id(field, value)?)
}

fn token<T: std::str::FromStr>(prefix: &str, token: &str) -> Result<Option<T>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .strip_prefix(prefix)
        .and_then(|rest| rest.parse().ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token: not a token this list returned"))
}

pub(super) async fn create_branch(
    engine: &Engine,
    req: v1::CreateBranchRequest,
) -> Result<v1::Branch, Status> {
    let at = id("from_checkpoint_id", &req.from_checkpoint_id)?;
    let branch = engine.create_branch(&req.session_id, &req.name, at).await?;
    Ok(convert::branch(&req.session_id, branch))
}

pub(super) async fn get_branch(
    engine: &Engine,
    req: v1::GetBranchRequest,
) -> Result<v1::Branch, Status> {
    let branch = engine.branch(&req.session_id, &req.name).await?;
    Ok(convert::branch(&req.session_id, branch))
}

pub(super) async fn list_branches(
    engine: &Engine,
    req: v1::ListBranchesRequest,
) -> Result<v1::ListBranchesResponse, Status> {
    let branches = engine.list_branches(&req.session_id).await?;
    let branches = branches
        .into_iter()
        .map(|b| convert::branch(&req.session_id, b))
        .collect();
    Ok(v1::ListBranchesResponse { branches })
}

pub(super) async fn delete_branch(
    engine: &Engine,
    req: v1::DeleteBranchRequest,
) -> Result<(), Status> {
    let expected = optional_id("expected_head", &req.expected_head)?;
    Ok(engine
        .delete_branch(&req.session_id, &req.name, expected)
        .await?)
}

pub(super) async fn reset_branch(
    engine: &Engine,
    req: v1::ResetBranchRequest,
) -> Result<v1::Branch, Status> {
    let to = id("checkpoint_id", &req.checkpoint_id)?;
    let expected = id("expected_head", &req.expected_head)?;
    let branch = engine
        .reset_branch(
            &req.session_id,
            &req.name,
            to,
            expected,
            lease_token(req.lease_token),
        )
        .await?;
    Ok(convert::branch(&req.session_id, branch))
}

pub(super) async fn list_ref_log(
    engine: &Engine,
    req: v1::ListRefLogRequest,
) -> Result<v1::ListRefLogResponse, Status> {
    let kind = match v1::RefKind::try_from(req.kind) {
        Ok(v1::RefKind::Unspecified | v1::RefKind::Branch) => RefKind::Branch,
        Ok(v1::RefKind::Tag) => RefKind::Tag,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "kind: {} is not a RefKind",
                req.kind
            )));
        }
    };
    let limit = page_size(req.page_size)?;
    let before = token::<i64>("r1.", &req.page_token)?;
    let mut entries = engine
        .ref_log(&req.session_id, kind, &req.name, before, limit + 1)
        .await?;
    let next_page_token = more(&mut entries, limit, |e| format!("r1.{}", e.id));
    Ok(v1::ListRefLogResponse {
        entries: entries.into_iter().map(convert::ref_log).collect(),
        next_page_token,
    })
}

/// Trims a fetched page of `limit + 1` items and returns the token of the next page.
fn more<T>(items: &mut Vec<T>, limit: u32, token: impl Fn(&T) -> String) -> String {
    if items.len() <= limit as usize {
        return String::new();
    }
    items.truncate(limit as usize);
    items.last().map(token).unwrap_or_default()
}

pub(super) async fn fork_session(
    engine: &Engine,
    req: v1::ForkSessionRequest,
) -> Result<v1::Checkpoint, Status> {
    let from = id("checkpoint_id", &req.checkpoint_id)?;
    let checkpoint = engine.fork(from, &req.new_session_id, &req.message).await?;
    Ok(convert::checkpoint(checkpoint))
}

pub(super) async fn set_tag(engine: &Engine, req: v1::SetTagRequest) -> Result<v1::Tag, Status> {
    let to = id("checkpoint_id", &req.checkpoint_id)?;
    let expected = optional_id("expected_checkpoint_id", &req.expected_checkpoint_id)?;
    let tag = engine
        .set_tag(&req.session_id, &req.name, to, expected)
        .await?;
    Ok(convert::tag(&req.session_id, tag))
}

pub(super) async fn delete_tag(engine: &Engine, req: v1::DeleteTagRequest) -> Result<(), Status> {
    Ok(engine.delete_tag(&req.session_id, &req.name).await?)
}

pub(super) async fn list_tags(
    engine: &Engine,
    req: v1::ListTagsRequest,
) -> Result<v1::ListTagsResponse, Status> {
    let tags = engine.list_tags(&req.session_id).await?;
    Ok(v1::ListTagsResponse {
        tags: tags
            .into_iter()
            .map(|t| convert::tag(&req.session_id, t))
            .collect(),
    })
}

pub(super) async fn get_history(
    engine: &Engine,
    req: v1::GetHistoryRequest,
) -> Result<v1::GetHistoryResponse, Status> {
    let target = match req.start {
        Some(get_history_request::Start::CheckpointId(cp)) => {
            ReadTarget::Checkpoint(id("checkpoint_id", &cp)?)
        }
        Some(get_history_request::Start::Head(h)) => ReadTarget::Head {
            session: h.session_id,
            branch: h.branch,
        },
        None => {
            return Err(Status::invalid_argument(
                "start: name a checkpoint_id or a head",
            ));
        }
    };
    let start = engine.resolve(target).await?;
    let limit = page_size(req.page_size)?;
    let (from, before) = match (req.first_parent, req.page_token.as_str()) {
        (_, "") => (start.id, None),
        // A first-parent listing continues from the next checkpoint of the line.
        (true, given) => match given.strip_prefix("h2.").map(uuid::Uuid::parse_str) {
            Some(Ok(next)) => (next, None),
            _ => {
                return Err(Status::invalid_argument(
                    "page_token: not a token this list returned",
                ));
            }
        },
        (false, given) => (start.id, token::<u64>("h1.", given)?),
    };
    let mut records = engine
        .history(from, req.first_parent, before, limit + 1)
        .await?;
    let next_page_token = if req.first_parent {
        let next = records
            .get(limit as usize)
            .map(|c| format!("h2.{}", c.id))
            .unwrap_or_default();
        records.truncate(limit as usize);
        next
    } else {
        more(&mut records, limit, |c| format!("h1.{}", c.seq))
    };
    Ok(v1::GetHistoryResponse {
        checkpoints: records.into_iter().map(convert::checkpoint).collect(),
        next_page_token,
    })
}

pub(super) async fn is_ancestor(
    engine: &Engine,
    req: v1::IsAncestorRequest,
) -> Result<bool, Status> {
    let a = id("ancestor_id", &req.ancestor_id)?;
    let d = id("descendant_id", &req.descendant_id)?;
    Ok(engine.is_ancestor(a, d).await?)
}

pub(super) async fn merge_base(
    engine: &Engine,
    req: v1::GetMergeBaseRequest,
) -> Result<Vec<String>, Status> {
    let a = engine.checkpoint(id("a_id", &req.a_id)?).await?;
    let b = engine.checkpoint(id("b_id", &req.b_id)?).await?;
    if a.session != b.session {
        return Ok(Vec::new());
    }
    let bases = engine.merge_bases(&[a.id], &[b.id]).await?;
    Ok(bases.iter().map(ToString::to_string).collect())
}

pub(super) async fn diff(
    engine: &Arc<Engine>,
    req: v1::DiffRequest,
) -> Result<v1::DiffResponse, Status> {
    let from = id("from_checkpoint_id", &req.from_checkpoint_id)?;
    let to = id("to_checkpoint_id", &req.to_checkpoint_id)?;
    let limit = page_size(req.page_size)?;
    let after = match req.page_token.strip_prefix("d1.") {
        None if req.page_token.is_empty() => None,
        Some(hex) => Some(
            hex::decode(hex)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Status::invalid_argument("page_token: not a token this list returned")
                })?,
        ),
        None => {
            return Err(Status::invalid_argument(
                "page_token: not a token this list returned",
            ));
        }
    };

    let changes = engine.diff(from, to).await?;
    let mut page: Vec<Change> = changes
        .into_iter()
        .filter(|c| after.as_deref().is_none_or(|a| c.key() > a))
        .take(limit as usize + 1)
        .collect();
    let next_page_token = more(&mut page, limit, |c| format!("d1.{}", hex::encode(c.key())));

    let mut entries = Vec::with_capacity(page.len());
    for change in page {
        let mut entry = diff_entry(&change);
        if req.include_values {
            entry.old_value = value_of(
                engine,
                from,
                change.key(),
                entry.kind != v1::DiffKind::Added as i32,
            )
            .await?;
            entry.new_value = value_of(
                engine,
                to,
                change.key(),
                entry.kind != v1::DiffKind::Removed as i32,
            )
            .await?;
        }
        entries.push(entry);
    }
    Ok(v1::DiffResponse {
        entries,
        next_page_token,
    })
}

fn diff_entry(change: &Change) -> v1::DiffEntry {
    let (kind, old, new) = match change {
        Change::Added(e) => (v1::DiffKind::Added, None, Some(e)),
        Change::Removed(e) => (v1::DiffKind::Removed, Some(e), None),
        Change::Modified { old, new } => (v1::DiffKind::Modified, Some(old), Some(new)),
    };
    v1::DiffEntry {
        key: change.key().to_owned(),
        kind: kind as i32,
        old_size: old.map_or(0, |e| e.size),
        new_size: new.map_or(0, |e| e.size),
        old_hash: old.map(|e| value_id(e).to_hex()).unwrap_or_default(),
        new_hash: new.map(|e| value_id(e).to_hex()).unwrap_or_default(),
        ..Default::default()
    }
}

/// One key's value in a checkpoint, read through the verified read path.
async fn value_of(
    engine: &Arc<Engine>,
    checkpoint: uuid::Uuid,
    key: &str,
    present: bool,
) -> Result<Bytes, Status> {
    if !present {
        return Ok(Bytes::new());
    }
    let record = engine.checkpoint(checkpoint).await?;
    let filter = ReadFilter {
        prefix: String::new(),
        keys: vec![key.to_owned()],
    };
    let mut events = engine.read(record, filter)?;
    let mut value = Vec::new();
    while let Some(event) = events.recv().await {
        match event? {
            crate::core::ReadEvent::Values(mut values) => {
                return Ok(values.pop().map(|(_, value)| value).unwrap_or_default());
            }
            crate::core::ReadEvent::Data(bytes) => value.extend_from_slice(&bytes),
            crate::core::ReadEvent::Entry { .. } => {}
        }
    }
    Ok(Bytes::from(value))
}

pub(super) async fn merge(
    engine: &Arc<Engine>,
    req: v1::MergeRequest,
) -> Result<v1::MergeResponse, Status> {
    let request = merge_request(req)?;
    let dry_run = request.dry_run;
    let report = engine.merge(request).await?;
    let outcome = match report.outcome {
        MergeOutcome::UpToDate => v1::MergeOutcome::UpToDate,
        MergeOutcome::FastForward => v1::MergeOutcome::FastForward,
        MergeOutcome::Merged => v1::MergeOutcome::Merged,
        MergeOutcome::Conflicted => v1::MergeOutcome::Conflicted,
    };
    let conflicts = report
        .conflicts
        .into_iter()
        .map(|c| v1::MergeConflict {
            key: c.key,
            kind: match c.kind {
                ConflictKind::BothModified => v1::ConflictKind::BothModified,
                ConflictKind::ModifiedDeleted => v1::ConflictKind::ModifiedDeleted,
                ConflictKind::DeletedModified => v1::ConflictKind::DeletedModified,
                ConflictKind::BothAdded => v1::ConflictKind::BothAdded,
            } as i32,
            base_hash: c.base.map(|h| h.to_hex()).unwrap_or_default(),
            ours_hash: c.ours.map(|h| h.to_hex()).unwrap_or_default(),
            theirs_hash: c.theirs.map(|h| h.to_hex()).unwrap_or_default(),
        })
        .collect();
    Ok(v1::MergeResponse {
        outcome: outcome as i32,
        checkpoint: report.head.map(convert::checkpoint),
        conflicts,
        merge_base_ids: report.bases.iter().map(ToString::to_string).collect(),
        dry_run,
    })
}

/// Validates a merge request into the engine's terms.
fn merge_request(req: v1::MergeRequest) -> Result<MergeRequest, Status> {
    validate::name("session_id", &req.session_id)?;
    let target = validate::branch("target_branch", &req.target_branch)?;
    let source = match req.source {
        Some(merge_request::Source::SourceCheckpointId(cp)) => {
            MergeSource::Checkpoint(id("source_checkpoint_id", &cp)?)
        }
        Some(merge_request::Source::SourceBranch(b)) => {
            validate::name("source_branch", &b)?;
            MergeSource::Branch(b)
        }
        None => {
            return Err(Status::invalid_argument(
                "source: name a source_checkpoint_id or a source_branch",
            ));
        }
    };
    let strategy = match v1::MergeStrategy::try_from(req.strategy) {
        Ok(
            v1::MergeStrategy::Unspecified | v1::MergeStrategy::Fail | v1::MergeStrategy::Recursive,
        ) => Strategy::Fail,
        Ok(v1::MergeStrategy::Ours) => Strategy::Ours,
        Ok(v1::MergeStrategy::Theirs) => Strategy::Theirs,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "strategy: {} is not a MergeStrategy",
                req.strategy
            )));
        }
    };
    let mut resolutions = Vec::with_capacity(req.resolutions.len());
    for (i, r) in req.resolutions.into_iter().enumerate() {
        validate::key(&format!("resolutions[{i}].key"), &r.key)?;
        let choice = match r.choice {
            Some(resolution::Choice::TakeOurs(true)) => Choice::Ours,
            Some(resolution::Choice::TakeTheirs(true)) => Choice::Theirs,
            Some(resolution::Choice::Delete(true)) => Choice::Delete,
            Some(resolution::Choice::Value(v)) => Choice::Value(v),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "resolutions[{i}].choice: name one choice"
                )));
            }
        };
        let guard = |field: &str, hex: &str| -> Result<Option<Hash>, Status> {
            if hex.is_empty() {
                return Ok(None);
            }
            hex::decode(hex)
                .ok()
                .and_then(|b| Hash::from_slice(&b))
                .map(Some)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("resolutions[{i}].{field}: not a value hash"))
                })
        };
        resolutions.push(KeyResolution {
            key: r.key,
            choice,
            expected_ours: guard("expected_ours_hash", &r.expected_ours_hash)?,
            expected_theirs: guard("expected_theirs_hash", &r.expected_theirs_hash)?,
        });
    }
    validate::message("message", &req.message)?;
    Ok(MergeRequest {
        session: req.session_id,
        target,
        source,
        strategy,
        resolutions,
        dry_run: req.dry_run,
        expected_target_head: optional_id("expected_target_head", &req.expected_target_head)?,
        message: req.message,
        metadata: validate::metadata("metadata", &req.metadata)?,
        lease: lease_token(req.lease_token),
    })
}

/// A lease token off the wire, where 0 means none.
pub(super) fn lease_token(token: u64) -> Option<u64> {
    (token != 0).then_some(token)
}

pub(super) async fn search(
    engine: &Engine,
    req: v1::SearchRequest,
) -> Result<v1::SearchResponse, Status> {
    let limit = page_size(req.page_size)?;
    let offset = token::<u32>("q1.", &req.page_token)?.unwrap_or(0);
    let session = (!req.session_id.is_empty()).then_some(req.session_id.as_str());
    let mut found = engine
        .search(session, &req.query, offset, limit + 1)
        .await?;
    let next_page_token = more(&mut found, limit, |_| format!("q1.{}", offset + limit));
    Ok(v1::SearchResponse {
        checkpoints: found.into_iter().map(convert::checkpoint).collect(),
        next_page_token,
    })
}
