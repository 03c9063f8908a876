//! `create`: CreateCheckpoint with a full state of `--size` bytes over `--keys` keys, unique per
//! call, each checkpoint the child of its session's previous one.

use std::sync::Arc;
use std::time::Duration;

use ckpt_client::{Client, NewCheckpoint};

use super::heads::OwnedSessions;
use super::{Context, Outcome, timed};
use crate::payload::Payload;

/// A caller writing full states to the sessions it owns.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    payload: Arc<Payload>,
    sessions: OwnedSessions,
}

/// Nothing to set up: the run's sessions are new and start empty.
pub(crate) fn prepare(ctx: &Context) -> Vec<Worker> {
    (0..ctx.concurrency)
        .map(|w| Worker {
            client: ctx.client(w),
            payload: Arc::clone(&ctx.payload),
            sessions: OwnedSessions::new(
                ctx.owned_sessions(w)
                    .into_iter()
                    .map(|s| (s, None))
                    .collect(),
            ),
        })
        .collect()
}

impl Worker {
    /// Creates one checkpoint; the payload is the whole state.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let (i, session, head) = self.sessions.next();
        let mut new = NewCheckpoint::full(session, self.payload.state(seq));
        if let Some(head) = head {
            new = new.parent(head);
        }

        let (span, result) = timed(timeout, self.client.create(new)).await;

        self.sessions.settle(i, &result);
        let bytes = self.payload.state_bytes();
        Outcome {
            span,
            result: result.map(|_| bytes),
        }
    }
}
