//! The change feed and leases.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use ckpt_proto::v1 as pb;

use crate::model::timestamp;
use crate::{Client, Error};

/// What an [`Event`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Nothing changed; the feed is alive and stands at the event's cursor.
    Heartbeat,
    /// A new checkpoint became the head of a branch (create, upload, merge, fork).
    CheckpointCreated,
    BranchCreated,
    /// A branch moved to an existing checkpoint (reset, fast-forward, import).
    BranchMoved,
    BranchDeleted,
    TagSet,
    TagRemoved,
    SessionDeleted,
}

/// One entry of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Pass it to [`Client::watch`] to resume after this event.
    pub cursor: String,
    pub kind: EventKind,
    pub session_id: String,
    /// The branch or tag; empty for a session's deletion and heartbeats.
    pub ref_name: String,
    /// Empty when the ref was created.
    pub old_checkpoint_id: String,
    /// Empty when the ref was removed.
    pub new_checkpoint_id: String,
    /// The ref-log operation (commit, merge, reset, ...; delete-session).
    pub operation: String,
    /// When the change committed; `None` for heartbeats.
    pub time: Option<DateTime<Utc>>,
}

impl TryFrom<pb::WatchEvent> for Event {
    type Error = Error;
    fn try_from(e: pb::WatchEvent) -> Result<Self, Error> {
        let kind = match pb::EventKind::try_from(e.kind) {
            Ok(pb::EventKind::Heartbeat) => EventKind::Heartbeat,
            Ok(pb::EventKind::CheckpointCreated) => EventKind::CheckpointCreated,
            Ok(pb::EventKind::BranchCreated) => EventKind::BranchCreated,
            Ok(pb::EventKind::BranchMoved) => EventKind::BranchMoved,
            Ok(pb::EventKind::BranchDeleted) => EventKind::BranchDeleted,
            Ok(pb::EventKind::TagSet) => EventKind::TagSet,
            Ok(pb::EventKind::TagRemoved) => EventKind::TagRemoved,
            Ok(pb::EventKind::SessionDeleted) => EventKind::SessionDeleted,
            Ok(pb::EventKind::Unspecified) | Err(_) => {
                return Err(Error::Protocol(format!(
                    "WatchEvent.kind {} is unknown",
                    e.kind
                )));
            }
        };
        let time = match e.time {
            Some(_) => Some(timestamp("WatchEvent.time", e.time)?),
            None => None,
        };
        Ok(Event {
            cursor: e.cursor,
            kind,
            session_id: e.session_id,
            ref_name: e.ref_name,
            old_checkpoint_id: e.old_checkpoint_id,
            new_checkpoint_id: e.new_checkpoint_id,
            operation: e.operation,
            time,
        })
    }
}

/// A lease on a branch: while it lives, writes on the branch must carry its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub session_id: String,
    pub branch: String,
    pub holder: String,
    /// Carry it in writes ([`NewCheckpoint::lease`](crate::NewCheckpoint::lease)).
    pub token: u64,
    pub expire_time: DateTime<Utc>,
}

impl TryFrom<pb::Lease> for Lease {
    type Error = Error;
    fn try_from(l: pb::Lease) -> Result<Self, Error> {
        Ok(Lease {
            expire_time: timestamp("Lease.expire_time", l.expire_time)?,
            session_id: l.session_id,
            branch: l.branch,
            holder: l.holder,
            token: l.token,
        })
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Follows the change feed: of every session when `session_id` is empty, of one branch
    /// when `branch` is not. Starts after `cursor` (from an earlier event), or at the present
    /// when it is empty; the first event is a heartbeat carrying the starting cursor. The
    /// stream runs until dropped or the connection fails; resume with the last cursor seen.
    pub async fn watch(
        &self,
        session_id: &str,
        branch: &str,
        cursor: &str,
    ) -> Result<impl Stream<Item = Result<Event, Error>> + Send + 'static, Error> {
        let request = pb::WatchRequest {
            session_id: session_id.into(),
            branch: branch.into(),
            cursor: cursor.into(),
        };
        let events = self.raw().watch(request).await?.into_inner();
        Ok(events.map(|event| Event::try_from(event?)))
    }

    /// Takes the lease on a branch (`""` is `main`) for `ttl`, if it is free or expired;
    /// [`Error::FailedPrecondition`] naming the holder if not.
    pub async fn acquire_lease(
        &self,
        session_id: &str,
        branch: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, Error> {
        let request = pb::AcquireLeaseRequest {
            session_id: session_id.into(),
            branch: branch.into(),
            holder: holder.into(),
            ttl_ms: millis(ttl),
        };
        Lease::try_from(self.raw().acquire_lease(request).await?.into_inner())
    }

    /// Extends a live lease to `ttl` from now; [`Error::FailedPrecondition`] if it was lost.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease, Error> {
        let request = pb::RenewLeaseRequest {
            session_id: lease.session_id.clone(),
            branch: lease.branch.clone(),
            token: lease.token,
            ttl_ms: millis(ttl),
        };
        Lease::try_from(self.raw().renew_lease(request).await?.into_inner())
    }

    /// Ends a lease now.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), Error> {
        let request = pb::ReleaseLeaseRequest {
            session_id: lease.session_id.clone(),
            branch: lease.branch.clone(),
            token: lease.token,
        };
        self.raw().release_lease(request).await?;
        Ok(())
    }
}
