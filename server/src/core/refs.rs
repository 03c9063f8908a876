//! Branches, tags, forks, history and diffs: the engine operations over refs.

use std::sync::Arc;

use uuid::Uuid;

use super::diff::{self, Change};
use super::engine::{Engine, EngineError};
use super::search;
use super::validate;
use crate::catalog::{
    self, BranchRecord, CatalogError, CheckpointRecord, RefKind, RefLogRecord, TagRecord,
};

impl Engine {
    pub async fn branch(&self, session: &str, name: &str) -> Result<BranchRecord, EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        self.catalog
            .branch(session, name)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("branch {name} of session {session}")))
    }

    pub async fn list_branches(&self, session: &str) -> Result<Vec<BranchRecord>, EngineError> {
        self.session(session).await?;
        Ok(self.catalog.list_branches(session).await?)
    }

    pub async fn create_branch(
        &self,
        session: &str,
        name: &str,
        at: Uuid,
    ) -> Result<BranchRecord, EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        Ok(self.catalog.create_branch(session, name, at).await?)
    }

    pub async fn delete_branch(
        &self,
        session: &str,
        name: &str,
        expected: Option<Uuid>,
    ) -> Result<(), EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        Ok(self.catalog.delete_branch(session, name, expected).await?)
    }

    /// Moves a branch to any checkpoint of its session, if its head is still `expected`.
    pub async fn reset_branch(
        &self,
        session: &str,
        name: &str,
        to: Uuid,
        expected: Uuid,
        lease: Option<u64>,
    ) -> Result<BranchRecord, EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        self.catalog
            .move_branch(session, name, expected, to, "reset", lease)
            .await?;
        self.branch(session, name).await
    }

    pub async fn ref_log(
        &self,
        session: &str,
        kind: RefKind,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RefLogRecord>, EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        self.session(session).await?;
        Ok(self
            .catalog
            .ref_log(session, kind, name, before, limit)
            .await?)
    }

    /// Starts `new_session` with the state of `from`: a first checkpoint that shares the
    /// source's manifest, so nothing is copied.
    pub async fn fork(
        &self,
        from: Uuid,
        new_session: &str,
        message: &str,
    ) -> Result<CheckpointRecord, EngineError> {
        validate::name("new_session_id", new_session)?;
        validate::message("message", message)?;
        let source = self.checkpoint(from).await?;
        if self.catalog.session(new_session).await?.is_some() {
            return Err(EngineError::AlreadyExists(format!("session {new_session}")));
        }
        let metadata = serde_json::json!({
            "forked_from": { "session_id": source.session, "checkpoint_id": source.id.to_string() }
        });
        let checkpoint = catalog::NewCheckpoint {
            id: Uuid::now_v7(),
            session: new_session.to_owned(),
            branch: validate::DEFAULT_BRANCH.to_owned(),
            parent: None,
            merge_parent: None,
            metadata: metadata.to_string(),
            message: message.to_owned(),
            manifest_root: source.manifest_root,
            entry_count: source.entry_count,
            logical_bytes: source.logical_bytes,
            blobs: Vec::new(),
            reused: Vec::new(),
            // The fork shares the source's manifest: the commit holds the source meanwhile.
            source: Some(source.id),
            search_text: search::document(message, &metadata.to_string(), std::iter::empty()),
            request_id: None,
            lease: None,
        };
        match self.catalog.commit(checkpoint).await {
            Err(CatalogError::HeadMoved { .. }) => {
                Err(EngineError::AlreadyExists(format!("session {new_session}")))
            }
            other => Ok(other?),
        }
    }

    pub async fn set_tag(
        &self,
        session: &str,
        name: &str,
        to: Uuid,
        expected: Option<Uuid>,
    ) -> Result<TagRecord, EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        self.catalog.set_tag(session, name, to, expected).await?;
        let tags = self.catalog.list_tags(session).await?;
        tags.into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| EngineError::NotFound(format!("tag {name} of session {session}")))
    }

    pub async fn delete_tag(&self, session: &str, name: &str) -> Result<(), EngineError> {
        validate::name("session_id", session)?;
        validate::name("name", name)?;
        Ok(self.catalog.delete_tag(session, name).await?)
    }

    pub async fn list_tags(&self, session: &str) -> Result<Vec<TagRecord>, EngineError> {
        self.session(session).await?;
        Ok(self.catalog.list_tags(session).await?)
    }

    /// `from` and its ancestors with a sequence below `before`, newest first.
    pub async fn history(
        &self,
        from: Uuid,
        first_parent: bool,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>, EngineError> {
        self.checkpoint(from).await?;
        Ok(self
            .catalog
            .ancestry(from, first_parent, before, limit)
            .await?)
    }

    /// Every key that differs from one checkpoint to another, in key order.
    pub async fn diff(self: &Arc<Self>, from: Uuid, to: Uuid) -> Result<Vec<Change>, EngineError> {
        let a = self.checkpoint(from).await?;
        let b = self.checkpoint(to).await?;
        let loader = self.page_loader();
        let changes = diff::diff(
            &loader,
            Engine::root_of(&a).as_ref(),
            Engine::root_of(&b).as_ref(),
        )
        .await?;
        Ok(changes)
    }
}
