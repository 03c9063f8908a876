//! `create-incremental`: CreateCheckpoint putting `--change-keys` new values into a state of
//! `--keys` keys, the parent being the session's previous checkpoint. Setup writes each
//! session's base state; the changed keys then rotate through the state.

use std::sync::Arc;
use std::time::Duration;

use ckpt_client::{Client, NewCheckpoint, Op};

use super::heads::OwnedSessions;
use super::{Context, Outcome, seed, timed};
use crate::payload::Payload;

/// A caller changing part of the states of the sessions it owns.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    payload: Arc<Payload>,
    sessions: OwnedSessions,
    change_keys: usize,
    next_key: usize,
}

/// Writes one base state per session and hands each worker its sessions with their heads.
pub(crate) async fn prepare(ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let chains = seed::chains(ctx, 1).await?;
    let mut heads: Vec<Vec<(String, Option<String>)>> = vec![Vec::new(); ctx.concurrency];
    for (i, (session, chain)) in ctx.sessions.iter().zip(chains).enumerate() {
        heads[i % ctx.concurrency].push((session.clone(), chain.last().cloned()));
    }
    let workers = heads
        .into_iter()
        .enumerate()
        .map(|(w, sessions)| Worker {
            client: ctx.client(w),
            payload: Arc::clone(&ctx.payload),
            sessions: OwnedSessions::new(sessions),
            change_keys: ctx.change_keys,
            next_key: 0,
        })
        .collect();
    Ok(workers)
}

impl Worker {
    /// Creates one checkpoint; the payload is the values put.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let (i, session, head) = self.sessions.next();
        let keys = self.next_keys();
        let bytes = keys.iter().map(|&k| self.payload.value_bytes(k)).sum();
        let new = match head {
            Some(head) => {
                let ops = keys
                    .into_iter()
                    .map(|k| Op::Put(self.payload.key(k).to_owned(), self.payload.value(k, seq)))
                    .collect();
                NewCheckpoint::incremental(session, head, ops)
            }
            // Only if the server reported an empty branch: start the state over.
            None => NewCheckpoint::full(session, self.payload.state(seq)),
        };

        let (span, result) = timed(timeout, self.client.create(new)).await;

        self.sessions.settle(i, &result);
        Outcome {
            span,
            result: result.map(|_| bytes),
        }
    }

    /// The keys the next call changes: the following `change_keys`, wrapping around.
    fn next_keys(&mut self) -> Vec<usize> {
        let count = self.payload.key_count();
        let keys = (0..self.change_keys)
            .map(|j| (self.next_key + j) % count)
            .collect();
        self.next_key = (self.next_key + self.change_keys) % count;
        keys
    }
}
