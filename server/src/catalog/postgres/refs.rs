//! The postgres catalog's transaction helpers, history, branches, tags and import.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::rows::*;
use super::{CHECKPOINT_COLUMNS, PostgresCatalog};
use crate::catalog::{
    BranchRecord, CatalogError, CheckpointRecord, Edge, ImportOutcome, ImportedBranch,
    ImportedCheckpoint, RefKind, RefLogRecord, Result, SessionImport, TagRecord, refusing_deletion,
};

impl PostgresCatalog {
    /// Records a ref move in the ref-log, inside the transaction that makes it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn log_ref(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        kind: RefKind,
        name: &str,
        old: Option<Uuid>,
        new: Option<Uuid>,
        op: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ref_log (session_id, ref_kind, ref_name, old_head, new_head, op) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session_id)
        .bind(kind as i16)
        .bind(name)
        .bind(old)
        .bind(new)
        .bind(op)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Locks an existing session's row; NOT_FOUND when there is none.
    pub(super) async fn lock_existing(
        tx: &mut Transaction<'static, Postgres>,
        name: &str,
    ) -> Result<i64> {
        Self::lock_session(tx, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("session {name}")))
    }

    /// Checks that a checkpoint belongs to the session.
    pub(super) async fn require_checkpoint(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        session: &str,
        id: Uuid,
    ) -> Result<()> {
        // By id alone: with the session in the WHERE clause too, a generic plan may scan the
        // whole session through the (session_id, branch, seq) index.
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT session_id FROM checkpoints WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        match owner {
            Some(owner) if owner == session_id => Ok(()),
            _ => Err(CatalogError::NotFound(format!(
                "checkpoint {id} in session {session}"
            ))),
        }
    }

    pub(super) async fn head_of(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        name: &str,
    ) -> Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT head FROM branches WHERE session_id = $1 AND name = $2")
            .bind(session_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(classify)
    }

    /// Inserts one imported checkpoint unless present; returns whether it was inserted.
    pub(super) async fn import_checkpoint(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        cp: &ImportedCheckpoint,
    ) -> Result<bool> {
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT session_id FROM checkpoints WHERE id = $1")
                .bind(cp.id)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        match owner {
            Some(owner) if owner == session_id => return Ok(false),
            Some(_) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "checkpoint {} already exists in another session",
                    cp.id
                )));
            }
            None => {}
        }
        let seq: i64 = sqlx::query_scalar(
            "UPDATE sessions SET last_seq = last_seq + 1, checkpoint_count = checkpoint_count + 1, \
             updated_at = now() WHERE id = $1 RETURNING last_seq",
        )
        .bind(session_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id, \
             generation, created_at, metadata, message, manifest_root, entry_count, \
             logical_bytes, stored_bytes, search_text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15)",
        )
        .bind(cp.id)
        .bind(session_id)
        .bind(seq)
        .bind(&cp.branch)
        .bind(cp.parents.first())
        .bind(cp.parents.get(1))
        .bind(cp.generation as i64)
        .bind(cp.created_at)
        .bind(&cp.metadata)
        .bind(&cp.message)
        .bind(cp.manifest_root.map(|h| h.0.to_vec()))
        .bind(cp.entry_count as i64)
        .bind(cp.logical_bytes as i64)
        .bind(cp.stored_bytes as i64)
        .bind(&cp.search_text)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Ok(true)
    }

    /// Creates one imported tag unless it already names the same checkpoint; returns whether
    /// it was created.
    pub(super) async fn import_tag(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        name: &str,
        at: Uuid,
    ) -> Result<bool> {
        let current: Option<Uuid> = sqlx::query_scalar(
            "SELECT checkpoint_id FROM tags WHERE session_id = $1 AND name = $2",
        )
        .bind(session_id)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?;
        match current {
            Some(c) if c == at => return Ok(false),
            Some(c) => {
                return Err(CatalogError::FailedPrecondition(format!(
                    "tag {name} names {c} here but {at} in the bundle"
                )));
            }
            None => {}
        }
        sqlx::query("INSERT INTO tags (session_id, name, checkpoint_id) VALUES ($1, $2, $3)")
            .bind(session_id)
            .bind(name)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        Self::log_ref(tx, session_id, RefKind::Tag, name, None, Some(at), "import").await?;
        Ok(true)
    }

    /// Creates or fast-forwards one imported branch; returns whether it changed.
    pub(super) async fn import_branch(
        tx: &mut Transaction<'static, Postgres>,
        session_id: i64,
        branch: &ImportedBranch,
    ) -> Result<bool> {
        let head: Option<Uuid> =
            sqlx::query_scalar("SELECT head FROM branches WHERE session_id = $1 AND name = $2")
                .bind(session_id)
                .bind(&branch.name)
                .fetch_optional(&mut **tx)
                .await
                .map_err(classify)?;
        match head {
            Some(current) if current == branch.head => return Ok(false),
            Some(current) if !branch.ancestors.contains(&current) => {
                return Err(CatalogError::FailedPrecondition(format!(
                    "branch {} has diverged: its head {current} is not in the bundle's history of {}",
                    branch.name, branch.head
                )));
            }
            _ => {}
        }
        sqlx::query(
            "INSERT INTO branches (session_id, name, head) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO UPDATE SET head = EXCLUDED.head, updated_at = now()",
        )
        .bind(session_id)
        .bind(&branch.name)
        .bind(branch.head)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
        Self::log_ref(
            tx,
            session_id,
            RefKind::Branch,
            &branch.name,
            head,
            Some(branch.head),
            "import",
        )
        .await?;
        Ok(true)
    }
}

impl PostgresCatalog {
    pub(super) async fn list_branches_impl(&self, session: &str) -> Result<Vec<BranchRecord>> {
        let rows: Vec<BranchRow> = sqlx::query_as(
            "SELECT b.name, b.head, b.created_at, b.updated_at FROM branches b \
             JOIN sessions s ON s.id = b.session_id WHERE s.name = $1 ORDER BY b.name",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(BranchRecord::from).collect())
    }

    pub(super) async fn import_impl(&self, import: SessionImport) -> Result<ImportOutcome> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let epoch = Self::join_epoch(&mut tx).await?;
        let session_id = Self::lock_or_create_session(&mut tx, &import.session).await?;
        let mut outcome = ImportOutcome {
            stored_bytes: Self::insert_blobs(&mut tx, &import.blobs, epoch).await? as u64,
            ..ImportOutcome::default()
        };
        Self::touch_reused(&mut tx, &import.reused, epoch).await?;
        // TODO: one statement per checkpoint; a bundle of 100,000 checkpoints would want
        // UNNEST batches like insert_blobs.
        for cp in &import.checkpoints {
            if Self::import_checkpoint(&mut tx, session_id, cp).await? {
                outcome.imported += 1;
            } else {
                outcome.present += 1;
            }
        }
        for branch in &import.branches {
            if Self::import_branch(&mut tx, session_id, branch).await? {
                outcome.branches_updated += 1;
            }
        }
        for (name, at) in &import.tags {
            if Self::import_tag(&mut tx, session_id, name, *at).await? {
                outcome.tags_created += 1;
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    pub(super) async fn checkpoints_impl(&self, ids: &[Uuid]) -> Result<Vec<CheckpointRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
             WHERE c.id = ANY($1)"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    pub(super) async fn ancestry_impl(
        &self,
        from: Uuid,
        first_parent: bool,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        if first_parent {
            // A branch's line: walk from `from` at most `limit` steps, so a page costs its
            // size whatever the history's length (callers continue from the next id).
            let sql = format!(
                "WITH RECURSIVE chain(id, depth) AS ( \
                     SELECT $1::uuid, 0 \
                     UNION ALL \
                     SELECT c.parent_id, ch.depth + 1 FROM chain ch JOIN checkpoints c ON c.id = ch.id \
                     WHERE c.parent_id IS NOT NULL AND ch.depth + 1 < $2) \
                 SELECT {CHECKPOINT_COLUMNS} FROM chain ch \
                 JOIN checkpoints c ON c.id = ch.id JOIN sessions s ON s.id = c.session_id \
                 ORDER BY ch.depth"
            );
            let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(from)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
            return rows.into_iter().map(CheckpointRecord::try_from).collect();
        }
        // Parents always commit before their children, so sequence order is history order.
        let step = if first_parent {
            "SELECT c.parent_id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
             WHERE c.parent_id IS NOT NULL"
        } else {
            "SELECT p.id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
             CROSS JOIN LATERAL (VALUES (c.parent_id), (c.merge_parent_id)) AS p(id) \
             WHERE p.id IS NOT NULL"
        };
        let sql = format!(
            "WITH RECURSIVE ancestry(id) AS (SELECT $1::uuid UNION {step}) \
             SELECT {CHECKPOINT_COLUMNS} FROM ancestry a \
             JOIN checkpoints c ON c.id = a.id JOIN sessions s ON s.id = c.session_id \
             WHERE ($2::int8 IS NULL OR c.seq < $2) ORDER BY c.seq DESC LIMIT $3"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(before.map(|b| b as i64))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }

    pub(super) async fn edges_impl(
        &self,
        roots: &[Uuid],
        min_generation: u64,
    ) -> Result<Vec<Edge>> {
        let rows: Vec<EdgeRow> = sqlx::query_as(
            "WITH RECURSIVE ancestry(id) AS ( \
                 SELECT unnest($1::uuid[]) \
                 UNION \
                 SELECT p.id FROM ancestry a JOIN checkpoints c ON c.id = a.id \
                 CROSS JOIN LATERAL (VALUES (c.parent_id), (c.merge_parent_id)) AS p(id) \
                 WHERE p.id IS NOT NULL AND c.generation >= $2) \
             SELECT c.id, c.parent_id, c.merge_parent_id, c.generation \
             FROM ancestry a JOIN checkpoints c ON c.id = a.id",
        )
        .bind(roots)
        .bind(min_generation as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| Edge {
                id: r.id,
                parents: r.parent_id.into_iter().chain(r.merge_parent_id).collect(),
                generation: r.generation as u64,
            })
            .collect())
    }

    pub(super) async fn branch_impl(
        &self,
        session: &str,
        name: &str,
    ) -> Result<Option<BranchRecord>> {
        let row: Option<BranchRow> = sqlx::query_as(
            "SELECT b.name, b.head, b.created_at, b.updated_at FROM branches b \
             JOIN sessions s ON s.id = b.session_id WHERE s.name = $1 AND b.name = $2",
        )
        .bind(session)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(BranchRecord::from))
    }

    pub(super) async fn create_branch_impl(
        &self,
        session: &str,
        name: &str,
        at: Uuid,
    ) -> Result<BranchRecord> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        Self::require_checkpoint(&mut tx, session_id, session, at).await?;
        let row: Option<BranchRow> = sqlx::query_as(
            "INSERT INTO branches (session_id, name, head) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO NOTHING \
             RETURNING name, head, created_at, updated_at",
        )
        .bind(session_id)
        .bind(name)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let row = row.ok_or_else(|| {
            CatalogError::AlreadyExists(format!("branch {name} of session {session}"))
        })?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            name,
            None,
            Some(at),
            "create",
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        Ok(BranchRecord::from(row))
    }

    pub(super) async fn move_branch_impl(
        &self,
        session: &str,
        name: &str,
        expected: Uuid,
        to: Uuid,
        op: &str,
        lease: Option<u64>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        Self::check_lease(&mut tx, session, name, lease).await?;
        let head = Self::head_of(&mut tx, session_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("branch {name} of session {session}")))?;
        if head != expected {
            return Err(CatalogError::HeadMoved {
                branch: name.to_owned(),
                current: Some(head),
            });
        }
        Self::require_checkpoint(&mut tx, session_id, session, to).await?;
        sqlx::query(
            "UPDATE branches SET head = $3, updated_at = now() WHERE session_id = $1 AND name = $2",
        )
        .bind(session_id)
        .bind(name)
        .bind(to)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            name,
            Some(head),
            Some(to),
            op,
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    pub(super) async fn delete_branch_impl(
        &self,
        session: &str,
        name: &str,
        expected: Option<Uuid>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        let head = Self::head_of(&mut tx, session_id, name)
            .await?
            .ok_or_else(|| CatalogError::NotFound(format!("branch {name} of session {session}")))?;
        if expected.is_some_and(|e| e != head) {
            return Err(CatalogError::HeadMoved {
                branch: name.to_owned(),
                current: Some(head),
            });
        }
        // A leased branch is its holder's: nobody deletes it until the lease ends.
        Self::check_lease(&mut tx, session, name, None)
            .await
            .map_err(refusing_deletion)?;
        sqlx::query("DELETE FROM branches WHERE session_id = $1 AND name = $2")
            .bind(session_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        // Its retention override goes with it: a later branch of the same name starts clean.
        sqlx::query("DELETE FROM retention_policies WHERE session_id = $1 AND branch = $2")
            .bind(session_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Branch,
            name,
            Some(head),
            None,
            "delete",
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    pub(super) async fn set_tag_impl(
        &self,
        session: &str,
        name: &str,
        to: Uuid,
        expected: Option<Uuid>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        Self::require_checkpoint(&mut tx, session_id, session, to).await?;
        let current: Option<Uuid> = sqlx::query_scalar(
            "SELECT checkpoint_id FROM tags WHERE session_id = $1 AND name = $2",
        )
        .bind(session_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        match (current, expected) {
            (Some(c), None) => {
                return Err(CatalogError::AlreadyExists(format!(
                    "tag {name} of session {session} (it names {c}; move it explicitly)"
                )));
            }
            (None, Some(_)) => {
                return Err(CatalogError::NotFound(format!(
                    "tag {name} of session {session}"
                )));
            }
            (Some(c), Some(e)) if c != e => {
                return Err(CatalogError::FailedPrecondition(format!(
                    "tag {name} names {c}, not {e}"
                )));
            }
            _ => {}
        }
        sqlx::query(
            "INSERT INTO tags (session_id, name, checkpoint_id) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id, updated_at = now()",
        )
        .bind(session_id)
        .bind(name)
        .bind(to)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Tag,
            name,
            current,
            Some(to),
            "tag",
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    pub(super) async fn delete_tag_impl(&self, session: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let session_id = Self::lock_existing(&mut tx, session).await?;
        let removed: Option<Uuid> = sqlx::query_scalar(
            "DELETE FROM tags WHERE session_id = $1 AND name = $2 RETURNING checkpoint_id",
        )
        .bind(session_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let removed = removed
            .ok_or_else(|| CatalogError::NotFound(format!("tag {name} of session {session}")))?;
        Self::log_ref(
            &mut tx,
            session_id,
            RefKind::Tag,
            name,
            Some(removed),
            None,
            "untag",
        )
        .await?;
        tx.commit().await.map_err(classify)
    }

    pub(super) async fn list_tags_impl(&self, session: &str) -> Result<Vec<TagRecord>> {
        let rows: Vec<TagRow> = sqlx::query_as(
            "SELECT t.name, t.checkpoint_id, t.created_at, t.updated_at FROM tags t \
             JOIN sessions s ON s.id = t.session_id WHERE s.name = $1 ORDER BY t.name",
        )
        .bind(session)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| TagRecord {
                name: r.name,
                checkpoint: r.checkpoint_id,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    pub(super) async fn ref_log_impl(
        &self,
        session: &str,
        kind: RefKind,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RefLogRecord>> {
        let rows: Vec<RefLogRow> = sqlx::query_as(
            "SELECT r.id, r.ref_kind, r.ref_name, r.old_head, r.new_head, r.op, r.actor, r.created_at \
             FROM ref_log r JOIN sessions s ON s.id = r.session_id \
             WHERE s.name = $1 AND r.ref_kind = $2 AND r.ref_name = $3 AND ($4::int8 IS NULL OR r.id < $4) \
             ORDER BY r.id DESC LIMIT $5",
        )
        .bind(session)
        .bind(kind as i16)
        .bind(name)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|r| RefLogRecord {
                id: r.id,
                kind: RefKind::from_i64(i64::from(r.ref_kind)).unwrap_or(RefKind::Branch),
                name: r.ref_name,
                old: r.old_head,
                new: r.new_head,
                op: r.op,
                actor: r.actor,
                at: r.created_at,
            })
            .collect())
    }

    pub(super) async fn search_impl(
        &self,
        session: Option<&str>,
        words: &str,
        tag: &str,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>> {
        // Word matches ranked by ts_rank; an exact tag name outranks them all. The session is
        // looked up once (not joined) so the full-text index drives the plan, and at most
        // 10,000 matches are ranked: a word in nearly every checkpoint would otherwise rank
        // the whole store.
        let sql = format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM ( \
                 SELECT id, MAX(score) AS score FROM ( \
                     (SELECT c.id, ts_rank(to_tsvector('simple', c.search_text), \
                                           plainto_tsquery('simple', $1)) AS score \
                      FROM checkpoints c \
                      WHERE to_tsvector('simple', c.search_text) @@ plainto_tsquery('simple', $1) \
                        AND ($2::text IS NULL \
                             OR c.session_id = (SELECT id FROM sessions WHERE name = $2)) \
                      LIMIT 10000) \
                     UNION ALL \
                     SELECT t.checkpoint_id, 1.0 FROM tags t \
                     WHERE lower(t.name) = lower($5) \
                       AND ($2::text IS NULL \
                            OR t.session_id = (SELECT id FROM sessions WHERE name = $2)) \
                 ) hits GROUP BY id \
             ) m JOIN checkpoints c ON c.id = m.id JOIN sessions s ON s.id = c.session_id \
             ORDER BY m.score DESC, c.seq DESC LIMIT $3 OFFSET $4"
        );
        let rows: Vec<CheckpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(words)
            .bind(session)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .bind(tag)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter().map(CheckpointRecord::try_from).collect()
    }
}
