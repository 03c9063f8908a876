//! [`TracedCatalog`]: a catalog that gives every call a `catalog.<method>` span and counts the
//! bytes commits store; and the connection-pool gauges.
//!
//! A decorator rather than attributes on each implementation, so the Postgres and SQLite
//! catalogs stay as they are and a new implementation is traced the day it is wrapped.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableUpDownCounter;
use tracing::Instrument;
use uuid::Uuid;

use super::metrics::{SCOPE, metrics};
use crate::catalog::{
    BlobRecord, BlobStamp, BranchRecord, Catalog, CheckpointFilter, CheckpointRecord, DeletedBlob,
    Edge, EventPage, ImportOutcome, LeaseRecord, NewCheckpoint, PoolUse, RefKind, RefLogRecord,
    Result, RetentionCandidate, SessionImport, SessionRecord, TagRecord,
};
use crate::core::hash::Hash;

/// A catalog whose calls run in spans of their own.
#[derive(Debug)]
pub struct TracedCatalog {
    inner: Arc<dyn Catalog>,
}

impl TracedCatalog {
    pub fn wrap(inner: Arc<dyn Catalog>) -> Arc<dyn Catalog> {
        Arc::new(Self { inner })
    }
}

/// Runs `call` in a DEBUG span named `name`: disabled at its call site (and so nearly free)
/// unless OpenTelemetry tracing or a DEBUG log filter wants it. A failure is recorded on the
/// span; logging it is left to whoever handles it.
async fn traced<T>(span: tracing::Span, call: impl Future<Output = Result<T>>) -> Result<T> {
    let result = call.instrument(span.clone()).await;
    if let Err(err) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error", tracing::field::display(err));
    }
    result
}

macro_rules! traced_catalog {
    ($( $method:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty $(=> $hook:ident)?; )*) => {
        #[async_trait::async_trait]
        impl Catalog for TracedCatalog {
            fn pool_use(&self) -> Vec<PoolUse> {
                self.inner.pool_use()
            }

            $(
                async fn $method(&self, $($arg: $ty),*) -> Result<$ret> {
                    let span = tracing::debug_span!(
                        concat!("catalog.", stringify!($method)),
                        otel.status_code = tracing::field::Empty,
                        error = tracing::field::Empty,
                    );
                    let result = traced(span, self.inner.$method($($arg),*)).await;
                    $( if let Ok(value) = &result { $hook(value) } )?
                    result
                }
            )*
        }
    };
}

traced_catalog! {
    existing_blobs(hashes: &[Hash]) -> HashSet<Hash>;
    blobs(hashes: &[Hash]) -> Vec<BlobRecord>;
    commit(checkpoint: NewCheckpoint) -> CheckpointRecord => count_commit;
    checkpoint(id: Uuid) -> Option<CheckpointRecord>;
    branch_head(session: &str, branch: &str) -> Option<Uuid>;
    list_checkpoints(session: &str, filter: &CheckpointFilter, before: Option<u64>, limit: u32)
        -> Vec<CheckpointRecord>;
    session(name: &str) -> Option<SessionRecord>;
    list_sessions(after: Option<&str>, limit: u32) -> Vec<SessionRecord>;
    delete_checkpoint(id: Uuid) -> ();
    delete_session(name: &str) -> u64;
    list_branches(session: &str) -> Vec<BranchRecord>;
    import(import: SessionImport) -> ImportOutcome => count_import;
    checkpoints(ids: &[Uuid]) -> Vec<CheckpointRecord>;
    ancestry(from: Uuid, first_parent: bool, before: Option<u64>, limit: u32)
        -> Vec<CheckpointRecord>;
    edges(roots: &[Uuid], min_generation: u64) -> Vec<Edge>;
    branch(session: &str, name: &str) -> Option<BranchRecord>;
    create_branch(session: &str, name: &str, at: Uuid) -> BranchRecord;
    move_branch(session: &str, name: &str, expected: Uuid, to: Uuid, op: &str, lease: Option<u64>)
        -> ();
    delete_branch(session: &str, name: &str, expected: Option<Uuid>) -> ();
    set_tag(session: &str, name: &str, to: Uuid, expected: Option<Uuid>) -> ();
    delete_tag(session: &str, name: &str) -> ();
    list_tags(session: &str) -> Vec<TagRecord>;
    search(session: Option<&str>, words: &str, tag: &str, offset: u32, limit: u32)
        -> Vec<CheckpointRecord>;
    acquire_collector(holder: &str, ttl: Duration) -> bool;
    release_collector(holder: &str) -> ();
    advance_epoch() -> u64;
    retention_candidates(session: &str, after_seq: u64, limit: u32) -> Vec<RetentionCandidate>;
    delete_unpinned(session: &str, ids: &[Uuid]) -> Vec<Uuid>;
    checkpoint_roots(session: Option<&str>, after: Option<Uuid>, limit: u32)
        -> Vec<(Uuid, Option<Hash>)>;
    manifest_roots() -> Vec<(Uuid, Option<Hash>)>;
    scan_blobs(after: Option<Hash>, limit: u32) -> Vec<BlobStamp>;
    delete_blobs(hashes: &[Hash], epoch: u64) -> Vec<DeletedBlob>;
    pending_deletes(limit: u32) -> Vec<String>;
    clear_pending_deletes(keys: &[String]) -> ();
    known_objects(objects: &[(Hash, String)]) -> HashSet<String>;
    now() -> DateTime<Utc>;
    record_collection(started_at: DateTime<Utc>, dry_run: bool, report: &str) -> ();
    retention_policies(session: &str) -> Vec<(String, String)>;
    set_retention_policy(session: &str, branch: &str, policy: Option<&str>) -> ();
    ref_log(session: &str, kind: RefKind, name: &str, before: Option<i64>, limit: u32)
        -> Vec<RefLogRecord>;
    created_by_request(session: &str, request_id: &str) -> Option<Uuid>;
    acquire_lease(session: &str, branch: &str, holder: &str, ttl: Duration) -> LeaseRecord;
    renew_lease(session: &str, branch: &str, token: u64, ttl: Duration) -> LeaseRecord;
    release_lease(session: &str, branch: &str, token: u64) -> ();
    events_after(after: i64, limit: u32) -> EventPage;
    last_event() -> i64;
    feed_horizon() -> i64;
    expire_feed(before: DateTime<Utc>, limit: u32) -> u64;
}

fn count_commit(checkpoint: &CheckpointRecord) {
    metrics().stored.add(checkpoint.stored_bytes, &[]);
}

fn count_import(outcome: &ImportOutcome) {
    metrics().stored.add(outcome.stored_bytes, &[]);
}

/// Registers the connection-pool instruments (OpenTelemetry's `db.client.connection.*`),
/// read from `catalog`'s pools at each collection. The callbacks hold the catalog weakly: once
/// it is dropped they report nothing. Keep the returned handles as long as the server runs.
pub fn observe_pools(catalog: &Arc<dyn Catalog>) -> Vec<ObservableUpDownCounter<i64>> {
    let meter = opentelemetry::global::meter(SCOPE);
    let weak = Arc::downgrade(catalog);
    let count = meter
        .i64_observable_up_down_counter("db.client.connection.count")
        .with_description("Catalog connections, by pool and state (idle or used).")
        .with_unit("{connection}")
        .with_callback(move |observer| {
            for pool in pools(&weak) {
                let name = KeyValue::new("db.client.connection.pool.name", pool.name);
                for (state, n) in [("used", pool.in_use), ("idle", pool.idle)] {
                    let state = KeyValue::new("db.client.connection.state", state);
                    observer.observe(i64::from(n), &[name.clone(), state]);
                }
            }
        })
        .build();
    let weak = Arc::downgrade(catalog);
    let max = meter
        .i64_observable_up_down_counter("db.client.connection.max")
        .with_description("The most connections each catalog pool opens.")
        .with_unit("{connection}")
        .with_callback(move |observer| {
            for pool in pools(&weak) {
                let name = KeyValue::new("db.client.connection.pool.name", pool.name);
                observer.observe(i64::from(pool.max), &[name]);
            }
        })
        .build();
    vec![count, max]
}

fn pools(catalog: &Weak<dyn Catalog>) -> Vec<PoolUse> {
    catalog.upgrade().map(|c| c.pool_use()).unwrap_or_default()
}
