//! Branches, tags, history, diff and merge.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use ckpt_proto::v1 as pb;

use crate::model::timestamp;
use crate::{Checkpoint, Client, Error, Page, Target};

/// A named pointer to a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    /// The session the branch belongs to.
    pub session_id: String,
    /// The branch name.
    pub name: String,
    /// The checkpoint the branch points at.
    pub head: String,
    /// When the branch was created.
    pub create_time: DateTime<Utc>,
    /// When its head last moved.
    pub update_time: DateTime<Utc>,
}

impl TryFrom<pb::Branch> for Branch {
    type Error = Error;
    fn try_from(b: pb::Branch) -> Result<Self, Error> {
        Ok(Branch {
            create_time: timestamp("Branch.create_time", b.create_time)?,
            update_time: timestamp("Branch.update_time", b.update_time)?,
            session_id: b.session_id,
            name: b.name,
            head: b.head,
        })
    }
}

/// A name bound to a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The session the tag belongs to.
    pub session_id: String,
    /// The tag name.
    pub name: String,
    /// The checkpoint it names.
    pub checkpoint_id: String,
    /// When the tag was created.
    pub create_time: DateTime<Utc>,
    /// When it was last moved.
    pub update_time: DateTime<Utc>,
}

impl TryFrom<pb::Tag> for Tag {
    type Error = Error;
    fn try_from(t: pb::Tag) -> Result<Self, Error> {
        Ok(Tag {
            create_time: timestamp("Tag.create_time", t.create_time)?,
            update_time: timestamp("Tag.update_time", t.update_time)?,
            session_id: t.session_id,
            name: t.name,
            checkpoint_id: t.checkpoint_id,
        })
    }
}

/// One recorded move of a branch or tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefLogEntry {
    /// Position in the log; larger is newer.
    pub id: i64,
    /// The ref's name.
    pub name: String,
    /// Where it pointed before (`None` when it was created).
    pub old_head: Option<String>,
    /// Where it points after (`None` when it was removed).
    pub new_head: Option<String>,
    /// commit, merge, create, reset, fast-forward, delete, import, fork, tag or untag.
    pub operation: String,
    /// When the move was committed.
    pub time: DateTime<Utc>,
}

/// `None` for the empty string, which proto3 sends for an unset text field.
pub(crate) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// How a key differs between two checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffKind {
    /// Only in the newer checkpoint.
    Added,
    /// Only in the older checkpoint.
    Removed,
    /// In both, with different values.
    Modified,
}

/// One key of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    /// The key.
    pub key: String,
    /// What happened to it.
    pub kind: DiffKind,
    /// Value sizes before and after (0 where absent).
    pub old_size: u64,
    /// See `old_size`.
    pub new_size: u64,
    /// Value identities before and after, hex (empty where absent).
    pub old_hash: String,
    /// See `old_hash`.
    pub new_hash: String,
    /// The values, when asked for.
    pub old_value: Option<Bytes>,
    /// See `old_value`.
    pub new_value: Option<Bytes>,
}

/// How conflicts are settled when no per-key resolution says otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MergeStrategy {
    /// Commit nothing while any key conflicts (the default).
    #[default]
    Fail,
    /// Conflicts keep the target's value.
    Ours,
    /// Conflicts take the source's value.
    Theirs,
}

/// A choice for one conflicting key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the target's value.
    Ours,
    /// Take the source's value.
    Theirs,
    /// Remove the key.
    Delete,
    /// Store this value.
    Value(Bytes),
}

/// A merge to perform.
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// Settles conflicts without a per-key resolution.
    pub strategy: MergeStrategy,
    /// Per-key choices, each optionally guarded by the value identities it expects
    /// `(key, choice, expected ours hash, expected theirs hash)`.
    pub resolutions: Vec<(String, Resolution, Option<String>, Option<String>)>,
    /// Report what would happen without writing.
    pub dry_run: bool,
    /// The target's head must still be this checkpoint.
    pub expected_target_head: Option<String>,
    /// Message of the merge checkpoint.
    pub message: String,
    /// Metadata of the merge checkpoint (a JSON object; the server adds a "merge" member).
    pub metadata: Option<serde_json::Value>,
    /// The token of a lease held on the target branch.
    pub lease_token: Option<u64>,
}

/// What a merge did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The source was already in the target's history.
    UpToDate,
    /// The target moved forward to the source.
    FastForward,
    /// A checkpoint with two parents was committed (or would be, in a dry run).
    Merged,
    /// Conflicts remain; nothing was written.
    Conflicted,
}

/// How a key conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// Both sides changed it differently.
    BothModified,
    /// The target changed it, the source deleted it.
    ModifiedDeleted,
    /// The target deleted it, the source changed it.
    DeletedModified,
    /// Both sides added it with different values.
    BothAdded,
}

/// A conflicting key, with value identities (hex; empty where a side has no value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The key.
    pub key: String,
    /// How it conflicts.
    pub kind: ConflictKind,
    /// Identity at the merge base.
    pub base_hash: String,
    /// Identity on the target.
    pub ours_hash: String,
    /// Identity on the source.
    pub theirs_hash: String,
}

/// The result of a merge.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeResult {
    /// What happened.
    pub outcome: MergeOutcome,
    /// The target's head afterwards (absent for dry runs and conflicts).
    pub checkpoint: Option<Checkpoint>,
    /// Every conflict (resolved ones too, when the merge went through).
    pub conflicts: Vec<Conflict>,
    /// The merge bases used.
    pub merge_base_ids: Vec<String>,
}

fn head(target: Target) -> pb::get_history_request::Start {
    match target {
        Target::Checkpoint(id) => pb::get_history_request::Start::CheckpointId(id),
        Target::Head { session_id, branch } => {
            pb::get_history_request::Start::Head(pb::BranchHead { session_id, branch })
        }
    }
}

impl Client {
    /// Creates a branch at a checkpoint of the session; no data is copied.
    pub async fn create_branch(
        &self,
        session_id: &str,
        name: &str,
        from_checkpoint_id: &str,
    ) -> Result<Branch, Error> {
        let request = pb::CreateBranchRequest {
            session_id: session_id.into(),
            name: name.into(),
            from_checkpoint_id: from_checkpoint_id.into(),
        };
        Branch::try_from(self.raw().create_branch(request).await?.into_inner())
    }

    /// One branch.
    pub async fn get_branch(&self, session_id: &str, name: &str) -> Result<Branch, Error> {
        let request = pb::GetBranchRequest {
            session_id: session_id.into(),
            name: name.into(),
        };
        Branch::try_from(self.raw().get_branch(request).await?.into_inner())
    }

    /// A session's branches, by name.
    pub async fn list_branches(&self, session_id: &str) -> Result<Vec<Branch>, Error> {
        let request = pb::ListBranchesRequest {
            session_id: session_id.into(),
        };
        let response = self.raw().list_branches(request).await?.into_inner();
        response
            .branches
            .into_iter()
            .map(Branch::try_from)
            .collect()
    }

    /// Deletes a branch (its checkpoints stay); with `expected_head`, only if it still points there.
    pub async fn delete_branch(
        &self,
        session_id: &str,
        name: &str,
        expected_head: Option<&str>,
    ) -> Result<(), Error> {
        let request = pb::DeleteBranchRequest {
            session_id: session_id.into(),
            name: name.into(),
            expected_head: expected_head.unwrap_or_default().into(),
        };
        self.raw().delete_branch(request).await?;
        Ok(())
    }

    /// Moves a branch to any checkpoint of the session, if its head is still `expected_head`.
    pub async fn reset_branch(
        &self,
        session_id: &str,
        name: &str,
        checkpoint_id: &str,
        expected_head: &str,
    ) -> Result<Branch, Error> {
        let request = pb::ResetBranchRequest {
            session_id: session_id.into(),
            name: name.into(),
            checkpoint_id: checkpoint_id.into(),
            expected_head: expected_head.into(),
            lease_token: 0,
        };
        Branch::try_from(self.raw().reset_branch(request).await?.into_inner())
    }

    /// [`reset_branch`](Self::reset_branch) on a branch the caller holds a lease on.
    pub async fn reset_leased_branch(
        &self,
        session_id: &str,
        name: &str,
        checkpoint_id: &str,
        expected_head: &str,
        lease_token: u64,
    ) -> Result<Branch, Error> {
        let request = pb::ResetBranchRequest {
            session_id: session_id.into(),
            name: name.into(),
            checkpoint_id: checkpoint_id.into(),
            expected_head: expected_head.into(),
            lease_token,
        };
        Branch::try_from(self.raw().reset_branch(request).await?.into_inner())
    }

    /// A branch's (or, with `tag`, a tag's) recorded moves, newest first.
    pub async fn ref_log(
        &self,
        session_id: &str,
        name: &str,
        tag: bool,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<RefLogEntry>, Error> {
        let kind = if tag {
            pb::RefKind::Tag
        } else {
            pb::RefKind::Branch
        };
        let request = pb::ListRefLogRequest {
            session_id: session_id.into(),
            name: name.into(),
            kind: kind as i32,
            page_size,
            page_token: page_token.into(),
        };
        let response = self.raw().list_ref_log(request).await?.into_inner();
        let items = response
            .entries
            .into_iter()
            .map(|e| {
                Ok(RefLogEntry {
                    time: timestamp("RefLogEntry.time", e.time)?,
                    id: e.id,
                    name: e.name,
                    old_head: non_empty(e.old_head),
                    new_head: non_empty(e.new_head),
                    operation: e.operation,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Page {
            items,
            next_page_token: response.next_page_token,
        })
    }

    /// Starts `new_session_id` from a checkpoint of another session; no data is copied.
    pub async fn fork_session(
        &self,
        checkpoint_id: &str,
        new_session_id: &str,
        message: &str,
    ) -> Result<Checkpoint, Error> {
        let request = pb::ForkSessionRequest {
            checkpoint_id: checkpoint_id.into(),
            new_session_id: new_session_id.into(),
            message: message.into(),
        };
        Checkpoint::try_from(self.raw().fork_session(request).await?.into_inner())
    }

    /// Binds a tag: creates it when `expected` is `None`, else moves it if it still names `expected`.
    pub async fn set_tag(
        &self,
        session_id: &str,
        name: &str,
        checkpoint_id: &str,
        expected: Option<&str>,
    ) -> Result<Tag, Error> {
        let request = pb::SetTagRequest {
            session_id: session_id.into(),
            name: name.into(),
            checkpoint_id: checkpoint_id.into(),
            expected_checkpoint_id: expected.unwrap_or_default().into(),
        };
        Tag::try_from(self.raw().set_tag(request).await?.into_inner())
    }

    /// Removes a tag.
    pub async fn delete_tag(&self, session_id: &str, name: &str) -> Result<(), Error> {
        let request = pb::DeleteTagRequest {
            session_id: session_id.into(),
            name: name.into(),
        };
        self.raw().delete_tag(request).await?;
        Ok(())
    }

    /// A session's tags, by name.
    pub async fn list_tags(&self, session_id: &str) -> Result<Vec<Tag>, Error> {
        let request = pb::ListTagsRequest {
            session_id: session_id.into(),
        };
        let response = self.raw().list_tags(request).await?.into_inner();
        response.tags.into_iter().map(Tag::try_from).collect()
    }

    /// A checkpoint and its ancestors, newest first (first parents only, or all).
    pub async fn history(
        &self,
        start: Target,
        first_parent: bool,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Checkpoint>, Error> {
        let request = pb::GetHistoryRequest {
            start: Some(head(start)),
            first_parent,
            page_size,
            page_token: page_token.into(),
        };
        let response = self.raw().get_history(request).await?.into_inner();
        let items = response
            .checkpoints
            .into_iter()
            .map(Checkpoint::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next_page_token: response.next_page_token,
        })
    }

    /// Whether `ancestor_id` is `descendant_id` or one of its ancestors.
    pub async fn is_ancestor(&self, ancestor_id: &str, descendant_id: &str) -> Result<bool, Error> {
        let request = pb::IsAncestorRequest {
            ancestor_id: ancestor_id.into(),
            descendant_id: descendant_id.into(),
        };
        Ok(self
            .raw()
            .is_ancestor(request)
            .await?
            .into_inner()
            .is_ancestor)
    }

    /// The best common ancestors of two checkpoints.
    pub async fn merge_base(&self, a_id: &str, b_id: &str) -> Result<Vec<String>, Error> {
        let request = pb::GetMergeBaseRequest {
            a_id: a_id.into(),
            b_id: b_id.into(),
        };
        Ok(self
            .raw()
            .get_merge_base(request)
            .await?
            .into_inner()
            .merge_base_ids)
    }

    /// Keys added, removed or modified from one checkpoint to another, one page at a time.
    pub async fn diff(
        &self,
        from_checkpoint_id: &str,
        to_checkpoint_id: &str,
        include_values: bool,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<DiffEntry>, Error> {
        let request = pb::DiffRequest {
            from_checkpoint_id: from_checkpoint_id.into(),
            to_checkpoint_id: to_checkpoint_id.into(),
            include_values,
            page_size,
            page_token: page_token.into(),
        };
        let response = self.raw().diff(request).await?.into_inner();
        let items = response
            .entries
            .into_iter()
            .map(|e| {
                let kind = match pb::DiffKind::try_from(e.kind) {
                    Ok(pb::DiffKind::Added) => DiffKind::Added,
                    Ok(pb::DiffKind::Removed) => DiffKind::Removed,
                    Ok(pb::DiffKind::Modified) => DiffKind::Modified,
                    _ => return Err(Error::Protocol(format!("unknown diff kind {}", e.kind))),
                };
                Ok(DiffEntry {
                    key: e.key,
                    kind,
                    old_size: e.old_size,
                    new_size: e.new_size,
                    old_hash: e.old_hash,
                    new_hash: e.new_hash,
                    old_value: include_values.then_some(e.old_value),
                    new_value: include_values.then_some(e.new_value),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Page {
            items,
            next_page_token: response.next_page_token,
        })
    }

    /// Every key that differs, following pages.
    pub async fn diff_all(
        &self,
        from_checkpoint_id: &str,
        to_checkpoint_id: &str,
        include_values: bool,
    ) -> Result<Vec<DiffEntry>, Error> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .diff(
                    from_checkpoint_id,
                    to_checkpoint_id,
                    include_values,
                    1000,
                    &token,
                )
                .await?;
            all.extend(page.items);
            if page.next_page_token.is_empty() || page.next_page_token == token {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Merges a branch (`source_is_branch`) or checkpoint into `target_branch`.
    pub async fn merge(
        &self,
        session_id: &str,
        target_branch: &str,
        source: &str,
        source_is_branch: bool,
        options: MergeOptions,
    ) -> Result<MergeResult, Error> {
        let source = if source_is_branch {
            pb::merge_request::Source::SourceBranch(source.into())
        } else {
            pb::merge_request::Source::SourceCheckpointId(source.into())
        };
        let strategy = match options.strategy {
            MergeStrategy::Fail => pb::MergeStrategy::Fail,
            MergeStrategy::Ours => pb::MergeStrategy::Ours,
            MergeStrategy::Theirs => pb::MergeStrategy::Theirs,
        };
        let resolutions = options
            .resolutions
            .into_iter()
            .map(|(key, choice, ours, theirs)| pb::Resolution {
                key,
                choice: Some(match choice {
                    Resolution::Ours => pb::resolution::Choice::TakeOurs(true),
                    Resolution::Theirs => pb::resolution::Choice::TakeTheirs(true),
                    Resolution::Delete => pb::resolution::Choice::Delete(true),
                    Resolution::Value(v) => pb::resolution::Choice::Value(v),
                }),
                expected_ours_hash: ours.unwrap_or_default(),
                expected_theirs_hash: theirs.unwrap_or_default(),
            })
            .collect();
        let request = pb::MergeRequest {
            session_id: session_id.into(),
            target_branch: target_branch.into(),
            source: Some(source),
            strategy: strategy as i32,
            resolutions,
            dry_run: options.dry_run,
            expected_target_head: options.expected_target_head.unwrap_or_default(),
            message: options.message,
            metadata: options.metadata.map(|m| m.to_string()).unwrap_or_default(),
            lease_token: options.lease_token.unwrap_or_default(),
        };
        let r = self.raw().merge(request).await?.into_inner();
        let outcome = match pb::MergeOutcome::try_from(r.outcome) {
            Ok(pb::MergeOutcome::UpToDate) => MergeOutcome::UpToDate,
            Ok(pb::MergeOutcome::FastForward) => MergeOutcome::FastForward,
            Ok(pb::MergeOutcome::Merged) => MergeOutcome::Merged,
            Ok(pb::MergeOutcome::Conflicted) => MergeOutcome::Conflicted,
            _ => {
                return Err(Error::Protocol(format!(
                    "unknown merge outcome {}",
                    r.outcome
                )));
            }
        };
        let conflicts = r
            .conflicts
            .into_iter()
            .map(|c| {
                let kind = match pb::ConflictKind::try_from(c.kind) {
                    Ok(pb::ConflictKind::BothModified) => ConflictKind::BothModified,
                    Ok(pb::ConflictKind::ModifiedDeleted) => ConflictKind::ModifiedDeleted,
                    Ok(pb::ConflictKind::DeletedModified) => ConflictKind::DeletedModified,
                    Ok(pb::ConflictKind::BothAdded) => ConflictKind::BothAdded,
                    _ => return Err(Error::Protocol(format!("unknown conflict kind {}", c.kind))),
                };
                Ok(Conflict {
                    key: c.key,
                    kind,
                    base_hash: c.base_hash,
                    ours_hash: c.ours_hash,
                    theirs_hash: c.theirs_hash,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(MergeResult {
            outcome,
            checkpoint: r.checkpoint.map(Checkpoint::try_from).transpose()?,
            conflicts,
            merge_base_ids: r.merge_base_ids,
        })
    }

    /// Checkpoints matching `query` (words of messages, metadata values and written keys, or
    /// a tag's name), in one session or all, best first.
    pub async fn search(
        &self,
        session_id: Option<&str>,
        query: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Checkpoint>, Error> {
        let request = pb::SearchRequest {
            session_id: session_id.unwrap_or_default().into(),
            query: query.into(),
            page_size,
            page_token: page_token.into(),
        };
        let response = self.raw().search(request).await?.into_inner();
        let items = response
            .checkpoints
            .into_iter()
            .map(Checkpoint::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next_page_token: response.next_page_token,
        })
    }
}
