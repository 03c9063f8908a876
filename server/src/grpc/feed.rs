//! The change feed and leases on the wire.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ckpt_proto::v1;
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, debug};

use super::convert::timestamp;
use crate::catalog::{EventRecord, LeaseRecord};
use crate::core::{Engine, EventKind, FeedTail, WatchScope};

/// How often an idle watch asks the catalog for new events. Changes made on any instance show
/// within this; it bounds the feed's latency.
const POLL: Duration = Duration::from_millis(100);

/// An idle watch sends a heartbeat this often, so clients and proxies see it alive.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Watches one server holds open at most; the next is refused with RESOURCE_EXHAUSTED.
pub(super) const MAX_WATCHES: usize = 4096;

pub(super) type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

/// Open watches, counted against [`MAX_WATCHES`].
pub(super) fn watch_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_WATCHES))
}

pub(super) async fn watch(
    engine: Arc<Engine>,
    permits: &Arc<Semaphore>,
    req: v1::WatchRequest,
) -> Result<WatchStream, Status> {
    let permit = Arc::clone(permits).try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "this server holds {MAX_WATCHES} watches open, its limit; try another instance"
        ))
    })?;
    let scope = WatchScope::new(&req.session_id, &req.branch)?;
    let tail = engine.watch(scope, &req.cursor).await?;

    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(follow(engine, tail, tx, permit).in_current_span());
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends a tail's events until the client goes away or the catalog fails.
async fn follow(
    engine: Arc<Engine>,
    mut tail: FeedTail,
    tx: mpsc::Sender<Result<v1::WatchEvent, Status>>,
    _permit: OwnedSemaphorePermit,
) {
    if tx.send(Ok(heartbeat(&tail))).await.is_err() {
        return;
    }
    let mut last_sent = Instant::now();
    loop {
        let (events, more) = match engine.feed_next(&mut tail).await {
            Ok(read) => read,
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        };
        for event in events {
            if tx.send(Ok(wire_event(event))).await.is_err() {
                return;
            }
            last_sent = Instant::now();
        }
        if more {
            continue;
        }
        if last_sent.elapsed() >= HEARTBEAT {
            if tx.send(Ok(heartbeat(&tail))).await.is_err() {
                return;
            }
            last_sent = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => {
                debug!("watcher went away");
                return;
            }
        }
    }
}

fn heartbeat(tail: &FeedTail) -> v1::WatchEvent {
    v1::WatchEvent {
        cursor: tail.cursor(),
        kind: v1::EventKind::Heartbeat.into(),
        ..Default::default()
    }
}

fn wire_event(event: EventRecord) -> v1::WatchEvent {
    let kind = match EventKind::of(&event) {
        EventKind::CheckpointCreated => v1::EventKind::CheckpointCreated,
        EventKind::BranchCreated => v1::EventKind::BranchCreated,
        EventKind::BranchMoved => v1::EventKind::BranchMoved,
        EventKind::BranchDeleted => v1::EventKind::BranchDeleted,
        EventKind::TagSet => v1::EventKind::TagSet,
        EventKind::TagRemoved => v1::EventKind::TagRemoved,
        EventKind::SessionDeleted => v1::EventKind::SessionDeleted,
    };
    let id = |id: Option<uuid::Uuid>| id.map(|i| i.to_string()).unwrap_or_default();
    v1::WatchEvent {
        cursor: event.id.to_string(),
        kind: kind.into(),
        session_id: event.session,
        ref_name: event.name,
        old_checkpoint_id: id(event.old),
        new_checkpoint_id: id(event.new),
        operation: event.op,
        time: Some(timestamp(event.at)),
    }
}

pub(super) fn lease(record: LeaseRecord) -> v1::Lease {
    v1::Lease {
        session_id: record.session,
        branch: record.branch,
        holder: record.holder,
        token: record.token,
        expire_time: Some(timestamp(record.expires_at)),
    }
}
