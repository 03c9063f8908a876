//! The catalog: sessions, branches, checkpoints and the chunk registry, behind one trait with
//! a Postgres implementation (and room for more). Everything mutable lives here; the object
//! store only ever receives new immutable objects.

pub mod keys;
mod postgres;
mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::keys::{ApiKeyRecord, KeyStore, NewApiKey, Role};
pub use self::postgres::PostgresCatalog;
pub use self::sqlite::SqliteCatalog;
use crate::core::codec::Codec;
use crate::core::hash::Hash;

/// Opens the catalog a URL names: `postgres://…` (or `postgresql://…`) for Postgres, anything
/// else (`sqlite://PATH` or a plain path) for a SQLite file.
pub async fn open(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Arc<dyn Catalog>> {
    Ok(open_with_keys(url, max_connections, acquire_timeout)
        .await?
        .0)
}

/// Like [`open`], also returning the same database's API keys (sharing its connections).
pub async fn open_with_keys(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<(Arc<dyn Catalog>, Arc<dyn KeyStore>)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let catalog =
            Arc::new(PostgresCatalog::connect(url, max_connections, acquire_timeout).await?);
        Ok((Arc::clone(&catalog) as Arc<dyn Catalog>, catalog))
    } else {
        let catalog = Arc::new(SqliteCatalog::open_url(url, max_connections).await?);
        Ok((Arc::clone(&catalog) as Arc<dyn Catalog>, catalog))
    }
}

/// What a blob in the registry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// A piece of a value.
    Chunk = 0,
    /// A manifest page.
    Page = 1,
}

/// Where a blob's stored bytes are.
#[derive(Clone, Debug)]
pub enum Location {
    /// In the catalog row itself (small blobs: one commit, no extra file or request).
    Inline(Bytes),
    /// In the object store, under this key.
    Object(String),
}

/// A blob to register in the commit that first references it.
#[derive(Clone, Debug)]
pub struct NewBlob {
    pub hash: Hash,
    pub kind: BlobKind,
    pub codec: Codec,
    pub raw_len: u64,
    pub stored_len: u64,
    pub location: Location,
}

/// A registered blob, as reads need it.
#[derive(Clone, Debug)]
pub struct BlobRecord {
    pub hash: Hash,
    pub codec: Codec,
    pub raw_len: u64,
    pub location: Location,
}

/// Everything one checkpoint commit writes.
#[derive(Clone, Debug)]
pub struct NewCheckpoint {
    pub id: Uuid,
    pub session: String,
    pub branch: String,
    /// Must be the branch's current head; `None` when the branch has no checkpoint yet.
    pub parent: Option<Uuid>,
    /// The second parent of a merge.
    pub merge_parent: Option<Uuid>,
    /// Canonical JSON text of a JSON object.
    pub metadata: String,
    pub message: String,
    pub manifest_root: Option<Hash>,
    pub entry_count: u64,
    pub logical_bytes: u64,
    pub blobs: Vec<NewBlob>,
    /// Registered blobs this checkpoint references without registering them (deduplicated
    /// against the registry). The commit stamps them with the collection epoch and fails with
    /// [`CatalogError::Aborted`] when one was collected since the writer found it.
    pub reused: Vec<Hash>,
    /// A checkpoint of another session whose manifest this one shares (a fork). The commit
    /// holds it against deletion until it is done, and fails when it is gone.
    pub source: Option<Uuid>,
    /// What search finds this checkpoint by (see `core::search`).
    pub search_text: String,
    /// The client's id for this create: a second commit with the same id in the session
    /// fails with [`CatalogError::Replayed`] naming the first one's checkpoint.
    pub request_id: Option<String>,
    /// The token of the lease the writer holds on the branch, if any.
    pub lease: Option<u64>,
}

/// A committed checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointRecord {
    pub id: Uuid,
    pub session: String,
    pub seq: u64,
    pub branch: String,
    pub parents: Vec<Uuid>,
    pub generation: u64,
    pub created_at: DateTime<Utc>,
    pub metadata: String,
    pub message: String,
    pub manifest_root: Option<Hash>,
    pub entry_count: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
}

/// A branch and where it points.
#[derive(Clone, Debug, PartialEq)]
pub struct BranchRecord {
    pub name: String,
    pub head: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored manifest root, checked to be a hash.
pub(crate) fn manifest_root(checkpoint: Uuid, bytes: Option<Vec<u8>>) -> Result<Option<Hash>> {
    bytes
        .map(|b| {
            Hash::from_slice(&b).ok_or_else(|| {
                CatalogError::Internal(format!(
                    "checkpoint {checkpoint} has a malformed manifest hash"
                ))
            })
        })
        .transpose()
}

/// The error for a commit whose reused blobs a collection deleted meanwhile.
pub(crate) fn collected(missing: usize) -> CatalogError {
    CatalogError::Aborted(format!(
        "{missing} stored blob(s) this write reuses were collected while it ran; retry the write"
    ))
}

/// A registry row's hash, checked to be one.
pub(crate) fn parse_hash(bytes: &[u8]) -> Result<Hash> {
    Hash::from_slice(bytes)
        .ok_or_else(|| CatalogError::Internal("a registry row has a malformed hash".into()))
}

/// Which checkpoints a listing returns; every set field must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointFilter {
    pub branch: Option<String>,
    /// Only the checkpoint this tag names.
    pub tag: Option<String>,
    /// A JSON object the metadata must contain, with PostgreSQL `jsonb @>` semantics.
    pub metadata: Option<serde_json::Value>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created strictly before.
    pub created_before: Option<DateTime<Utc>>,
    /// Case-insensitive text the message contains.
    pub message: Option<String>,
}

/// Whether `doc` contains `pattern` as PostgreSQL's `jsonb @>` decides: objects contain every
/// member of the pattern with a contained value, arrays contain each element of the pattern
/// array somewhere, scalars are equal (numbers by value).
pub fn json_contains(doc: &serde_json::Value, pattern: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (doc, pattern) {
        (Value::Object(d), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| d.get(k).is_some_and(|dv| json_contains(dv, pv))),
        (Value::Array(d), Value::Array(p)) => {
            p.iter().all(|pv| d.iter().any(|dv| json_contains(dv, pv)))
        }
        // A top-level array contains a scalar it holds, as in jsonb.
        (Value::Array(d), p) if !p.is_object() && !p.is_array() => {
            d.iter().any(|dv| json_contains(dv, p))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// What kind of ref a ref-log entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Branch = 0,
    Tag = 1,
}

impl RefKind {
    pub fn from_i64(value: i64) -> Option<Self> {
        match value {
            0 => Some(Self::Branch),
            1 => Some(Self::Tag),
            _ => None,
        }
    }
}

/// A tag and the checkpoint it names.
#[derive(Clone, Debug, PartialEq)]
pub struct TagRecord {
    pub name: String,
    pub checkpoint: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One recorded move of a branch head or a tag.
#[derive(Clone, Debug, PartialEq)]
pub struct RefLogRecord {
    pub id: i64,
    pub kind: RefKind,
    pub name: String,
    pub old: Option<Uuid>,
    pub new: Option<Uuid>,
    pub op: String,
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
}

/// A lease on a branch.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRecord {
    pub session: String,
    pub branch: String,
    pub holder: String,
    pub token: u64,
    pub expires_at: DateTime<Utc>,
}

/// One entry of the change feed: a ref-log entry or a session's deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub id: i64,
    pub session: String,
    /// `None` for the session itself (its deletion).
    pub kind: Option<RefKind>,
    pub name: String,
    pub old: Option<Uuid>,
    pub new: Option<Uuid>,
    pub op: String,
    pub at: DateTime<Utc>,
}

/// A page of the change feed, with what a reader needs to tell a gap in the ids that a running
/// transaction will fill from one a rolled-back transaction left (see `core::watch`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventPage {
    /// In id order.
    pub events: Vec<EventRecord>,
    /// Every transaction below this id had ended when the page was read.
    pub xmin: u64,
    /// Every transaction running when the page was read is below this id.
    pub xmax: u64,
}

/// A checkpoint's place in the history graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub id: Uuid,
    pub parents: Vec<Uuid>,
    pub generation: u64,
}

/// A checkpoint arriving from a bundle, with the id and times it was created with.
#[derive(Clone, Debug)]
pub struct ImportedCheckpoint {
    pub id: Uuid,
    pub branch: String,
    pub parents: Vec<Uuid>,
    pub generation: u64,
    pub created_at: DateTime<Utc>,
    pub metadata: String,
    pub message: String,
    pub manifest_root: Option<Hash>,
    pub entry_count: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub search_text: String,
}

/// A branch arriving from a bundle.
#[derive(Clone, Debug)]
pub struct ImportedBranch {
    pub name: String,
    pub head: Uuid,
    /// The checkpoints `head` descends from: an existing branch pointing at one of them moves
    /// forward to `head`; one pointing elsewhere has diverged and stops the import.
    pub ancestors: HashSet<Uuid>,
}

/// Everything one import commits, in one transaction.
#[derive(Clone, Debug)]
pub struct SessionImport {
    pub session: String,
    /// In commit order: parents before children.
    pub checkpoints: Vec<ImportedCheckpoint>,
    pub branches: Vec<ImportedBranch>,
    /// Tags (name, checkpoint): created where absent; one naming another checkpoint here
    /// stops the import.
    pub tags: Vec<(String, Uuid)>,
    pub blobs: Vec<NewBlob>,
    /// Blobs the bundle holds that were already registered; stamped and checked as in
    /// [`NewCheckpoint::reused`].
    pub reused: Vec<Hash>,
}

/// What an import changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub imported: u64,
    pub present: u64,
    pub branches_updated: u64,
    pub tags_created: u64,
    pub stored_bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub checkpoint_count: u64,
}

/// A checkpoint as retention sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionCandidate {
    pub id: Uuid,
    pub seq: u64,
    pub branch: String,
    pub created_at: DateTime<Utc>,
}

/// A registered blob as the sweep sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobStamp {
    pub hash: Hash,
    /// The collection epoch in which a commit last registered or reused it.
    pub touched_epoch: u64,
    pub stored_len: u64,
    pub kind: BlobKind,
    /// Whether its bytes are in the object store (rather than inline).
    pub in_object: bool,
}

impl BlobKind {
    /// The kind a registry row's code names; unknown codes read as chunks.
    pub fn from_code(code: i64) -> Self {
        if code == Self::Page as i64 {
            Self::Page
        } else {
            Self::Chunk
        }
    }
}

/// A registry row the sweep deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedBlob {
    pub hash: Hash,
    pub kind: BlobKind,
    pub stored_len: u64,
    /// Queued in the same transaction for deletion from the object store.
    pub object_key: Option<String>,
}

/// Why a catalog call failed, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("branch {branch} has moved: its head is {}", current.map(|c| c.to_string()).unwrap_or_else(|| "empty".into()))]
    HeadMoved {
        branch: String,
        current: Option<Uuid>,
    },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent operation got in the way; retrying the whole call will succeed.
    #[error("{0}")]
    Aborted(String),
    /// The database could not be reached or is overloaded; worth retrying.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    #[error("catalog error: {0}")]
    Internal(String),
    /// A create's request id was committed before, as this checkpoint.
    #[error("the request was committed before as checkpoint {0}")]
    Replayed(Uuid),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// How one connection pool is used right now, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUse {
    /// Which pool: `main` for Postgres; `writer` and `reader` for SQLite.
    pub name: &'static str,
    /// Connections lent to a call.
    pub in_use: u32,
    /// Connections open and waiting in the pool.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl PoolUse {
    /// Reads a sqlx pool's statistics.
    pub fn of<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) -> Self {
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        Self {
            name,
            in_use: pool.size().saturating_sub(idle),
            idle,
            max: pool.options().get_max_connections(),
        }
    }
}

/// The catalog's operations. Each call uses at most one database connection at a time.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// The use of each of the catalog's connection pools; none for a catalog without one.
    fn pool_use(&self) -> Vec<PoolUse> {
        Vec::new()
    }

    /// Of `hashes`, those already registered.
    async fn existing_blobs(&self, hashes: &[Hash]) -> Result<HashSet<Hash>>;

    /// Registered blobs among `hashes`, in no particular order; absent ones are left out.
    async fn blobs(&self, hashes: &[Hash]) -> Result<Vec<BlobRecord>>;

    /// Registers the new blobs, inserts the checkpoint and moves its branch head to it, in one
    /// transaction. Fails with [`CatalogError::HeadMoved`] when the parent is not the head.
    async fn commit(&self, checkpoint: NewCheckpoint) -> Result<CheckpointRecord>;

    async fn checkpoint(&self, id: Uuid) -> Result<Option<CheckpointRecord>>;

    async fn branch_head(&self, session: &str, branch: &str) -> Result<Option<Uuid>>;

    /// A session's checkpoints that pass `filter`, with `seq < before` (all when `None`),
    /// newest first.
    async fn list_checkpoints(
        &self,
        session: &str,
        filter: &CheckpointFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>>;

    async fn session(&self, name: &str) -> Result<Option<SessionRecord>>;

    /// Sessions whose names sort after `after`, in name order.
    async fn list_sessions(&self, after: Option<&str>, limit: u32) -> Result<Vec<SessionRecord>>;

    /// Deletes a checkpoint that no branch points at.
    async fn delete_checkpoint(&self, id: Uuid) -> Result<()>;

    /// Deletes a session and everything in it; returns how many checkpoints went with it.
    async fn delete_session(&self, name: &str) -> Result<u64>;

    /// A session's branches, by name.
    async fn list_branches(&self, session: &str) -> Result<Vec<BranchRecord>>;

    /// Adds a bundle's blobs, checkpoints and branches to a session (created if absent), in one
    /// transaction. Checkpoints already present are skipped; one that exists in another
    /// session fails with [`CatalogError::AlreadyExists`], a diverged branch with
    /// [`CatalogError::FailedPrecondition`].
    async fn import(&self, import: SessionImport) -> Result<ImportOutcome>;

    /// Checkpoints by id, in no particular order; unknown ids are left out.
    async fn checkpoints(&self, ids: &[Uuid]) -> Result<Vec<CheckpointRecord>>;

    /// `from` and its ancestors, newest first. Through all parents: those with a sequence
    /// below `before`. Through first parents only: `before` is ignored and the walk starts at
    /// `from` (continue a listing from the next id). The walk stops where a parent was deleted.
    async fn ancestry(
        &self,
        from: Uuid,
        first_parent: bool,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>>;

    /// The history graph above `roots`: every ancestor reachable through checkpoints whose
    /// generation is at least `min_generation` (those below are listed but not followed).
    async fn edges(&self, roots: &[Uuid], min_generation: u64) -> Result<Vec<Edge>>;

    async fn branch(&self, session: &str, name: &str) -> Result<Option<BranchRecord>>;

    /// Creates a branch at a checkpoint of the session.
    async fn create_branch(&self, session: &str, name: &str, at: Uuid) -> Result<BranchRecord>;

    /// Moves a branch from `expected` to `to`, a checkpoint of the same session
    /// ([`CatalogError::HeadMoved`] when the head is not `expected`). `op` goes to the ref-log.
    /// A live lease on the branch refuses the move unless `lease` is its token.
    async fn move_branch(
        &self,
        session: &str,
        name: &str,
        expected: Uuid,
        to: Uuid,
        op: &str,
        lease: Option<u64>,
    ) -> Result<()>;

    /// Deletes a branch; with `expected`, only if its head is still that checkpoint.
    async fn delete_branch(&self, session: &str, name: &str, expected: Option<Uuid>) -> Result<()>;

    /// Binds a tag to a checkpoint of the session. With `expected: None` the tag must not
    /// exist ([`CatalogError::AlreadyExists`]); with `Some(id)` it must name `id` now.
    async fn set_tag(
        &self,
        session: &str,
        name: &str,
        to: Uuid,
        expected: Option<Uuid>,
    ) -> Result<()>;

    async fn delete_tag(&self, session: &str, name: &str) -> Result<()>;

    async fn list_tags(&self, session: &str) -> Result<Vec<TagRecord>>;

    /// Checkpoints whose search text holds every one of `words` (lowercase, space-separated),
    /// or that a tag named `tag` (case-insensitively) points at, in one session or all, best
    /// first, then newest.
    async fn search(
        &self,
        session: Option<&str>,
        words: &str,
        tag: &str,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>>;

    // ---- Collection (see core::collect for the protocol these calls make up) ----

    /// Takes the collector lease for `holder`, or renews it, for `ttl` by the database clock.
    /// False when another holder's lease has not expired.
    async fn acquire_collector(&self, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease up, if `holder` has it.
    async fn release_collector(&self, holder: &str) -> Result<()>;

    /// Raises the collection epoch once every commit that read the old epoch has finished, and
    /// returns the new one: commits from then on stamp the blobs they reference with it.
    async fn advance_epoch(&self) -> Result<u64>;

    /// The session's checkpoints with a sequence above `after_seq`, by sequence.
    async fn retention_candidates(
        &self,
        session: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RetentionCandidate>>;

    /// Deletes those of `ids` (checkpoints of `session`) that are neither a branch head nor
    /// tagged at the time of the delete; returns the ids deleted.
    async fn delete_unpinned(&self, session: &str, ids: &[Uuid]) -> Result<Vec<Uuid>>;

    /// Checkpoints (of one session, or all) with ids above `after`, by id, with their
    /// manifest roots.
    async fn checkpoint_roots(
        &self,
        session: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<(Uuid, Option<Hash>)>>;

    /// Every checkpoint's manifest root, read in one snapshot.
    async fn manifest_roots(&self) -> Result<Vec<(Uuid, Option<Hash>)>>;

    /// Registered blobs with hashes above `after`, by hash.
    async fn scan_blobs(&self, after: Option<Hash>, limit: u32) -> Result<Vec<BlobStamp>>;

    /// Deletes the blobs among `hashes` still stamped before `epoch`, queueing their objects
    /// for deletion in the same transaction; returns what it deleted.
    async fn delete_blobs(&self, hashes: &[Hash], epoch: u64) -> Result<Vec<DeletedBlob>>;

    /// Objects queued for deletion, oldest first.
    async fn pending_deletes(&self, limit: u32) -> Result<Vec<String>>;

    /// Forgets queued deletions once their objects are gone.
    async fn clear_pending_deletes(&self, keys: &[String]) -> Result<()>;

    /// Of `objects` (a blob's hash and an object key), the keys the catalog knows: a registry
    /// row names the key, or its deletion is queued.
    async fn known_objects(&self, objects: &[(Hash, String)]) -> Result<HashSet<String>>;

    /// The database's clock: leases and ages are measured by it, never by a host's.
    async fn now(&self) -> Result<DateTime<Utc>>;

    /// Keeps a pass's report (JSON).
    async fn record_collection(
        &self,
        started_at: DateTime<Utc>,
        dry_run: bool,
        report: &str,
    ) -> Result<()>;

    /// The session's retention overrides as (branch, policy text); branch `""` is the whole
    /// session.
    async fn retention_policies(&self, session: &str) -> Result<Vec<(String, String)>>;

    /// Sets (or with `None` removes) a session's or branch's (`""` = session) override.
    async fn set_retention_policy(
        &self,
        session: &str,
        branch: &str,
        policy: Option<&str>,
    ) -> Result<()>;

    /// A ref's recorded moves with ids below `before`, newest first.
    async fn ref_log(
        &self,
        session: &str,
        kind: RefKind,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RefLogRecord>>;

    /// The checkpoint a create with this request id made in the session, if any.
    async fn created_by_request(&self, session: &str, request_id: &str) -> Result<Option<Uuid>>;

    /// Takes the lease on a branch if it is free or expired, with the next token;
    /// [`CatalogError::FailedPrecondition`] naming the holder if it is live.
    async fn acquire_lease(
        &self,
        session: &str,
        branch: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseRecord>;

    /// Extends a live lease held with `token`.
    async fn renew_lease(
        &self,
        session: &str,
        branch: &str,
        token: u64,
        ttl: Duration,
    ) -> Result<LeaseRecord>;

    /// Ends the lease held with `token` now.
    async fn release_lease(&self, session: &str, branch: &str, token: u64) -> Result<()>;

    /// Change-feed entries with ids above `after`, of every session, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage>;

    /// The newest change-feed entry's id, or the horizon when every entry was pruned (0 when
    /// there was never one).
    async fn last_event(&self) -> Result<i64>;

    /// The highest id collection pruned from the feed: a cursor below it may have missed
    /// events.
    async fn feed_horizon(&self) -> Result<i64>;

    /// Deletes up to `limit` feed entries written before `before`, oldest first, moving the
    /// horizon past them; returns how many went.
    async fn expire_feed(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;
}

/// Why a write carrying `token` may not move `branch`, given its live lease if any; the same
/// words from every catalog.
pub(crate) fn lease_refusal(
    branch: &str,
    live: Option<&LeaseRecord>,
    token: Option<u64>,
) -> Option<String> {
    match (token, live) {
        (Some(t), Some(l)) if l.token == t => None,
        (Some(t), _) => Some(format!("lease token {t} on branch {branch} is not current")),
        (None, Some(l)) => Some(format!(
            "branch {branch} is leased by {} until {}; writes must carry its token",
            l.holder, l.expires_at
        )),
        (None, None) => None,
    }
}

/// The refusal of a lease someone else holds.
pub(crate) fn held_by(branch: &str, lease: LeaseRecord) -> CatalogError {
    CatalogError::FailedPrecondition(format!(
        "branch {branch} is leased by {} (token {}) until {}",
        lease.holder, lease.token, lease.expires_at
    ))
}

/// A lease's refusal of a write, reworded for the deletion of its branch.
pub(crate) fn refusing_deletion(err: CatalogError) -> CatalogError {
    match err {
        CatalogError::FailedPrecondition(why) => CatalogError::FailedPrecondition(format!(
            "{why}; the holder must release it before the branch is deleted"
        )),
        other => other,
    }
}

/// The refusal to delete a session one of whose branches is leased.
pub(crate) fn leased_session(session: &str, lease: LeaseRecord) -> CatalogError {
    CatalogError::FailedPrecondition(format!(
        "session {session} has branch {} leased by {} until {}; release the lease first",
        lease.branch, lease.holder, lease.expires_at
    ))
}

/// The refusal of a token that is not the lease's current one.
pub(crate) fn lease_not_current(branch: &str, token: u64) -> CatalogError {
    CatalogError::FailedPrecondition(format!(
        "lease token {token} on branch {branch} is not current or has expired"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::json_contains;

    #[test]
    fn containment_follows_jsonb_semantics() {
        let doc = json!({"a": 1, "b": {"c": [1, 2, {"d": "x"}]}, "s": "t", "n": null});
        assert!(json_contains(&doc, &json!({})));
        assert!(json_contains(&doc, &json!({"a": 1.0})));
        assert!(json_contains(&doc, &json!({"b": {"c": [2]}})));
        assert!(json_contains(&doc, &json!({"b": {"c": [{"d": "x"}, 1]}})));
        assert!(json_contains(&doc, &json!({"n": null})));
        assert!(!json_contains(&doc, &json!({"a": 2})));
        assert!(!json_contains(&doc, &json!({"b": {"c": [3]}})));
        assert!(!json_contains(&doc, &json!({"s": ["t"]})));
        assert!(!json_contains(&doc, &json!({"missing": null})));
    }
}
