//! `branch`: CreateBranch at a pre-created checkpoint, a new branch name every call. Each
//! worker branches in its own sessions, so the calls never wait on one another's session lock.

use std::time::Duration;

use ckpt_client::Client;

use super::{Context, Outcome, seed, timed};

/// A caller creating branches.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    /// (session, checkpoint to branch from) of each session the worker owns.
    roots: Vec<(String, String)>,
}

pub(crate) async fn prepare(ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let chains = seed::chains(ctx, 1).await?;
    let roots: Vec<(String, String)> = ctx
        .sessions
        .iter()
        .cloned()
        .zip(chains.into_iter().map(|ids| ids[0].clone()))
        .collect();
    Ok((0..ctx.concurrency)
        .map(|w| {
            let mut own: Vec<_> = roots
                .iter()
                .skip(w)
                .step_by(ctx.concurrency)
                .cloned()
                .collect();
            if own.is_empty() {
                // Fewer sessions than workers: share them (calls then queue on session locks).
                own.push(roots[w % roots.len()].clone());
            }
            Worker {
                client: ctx.client(w),
                roots: own,
            }
        })
        .collect())
}

impl Worker {
    /// Creates branch `b<seq>`; moves no payload.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let (session, root) = &self.roots[(seq % self.roots.len() as u64) as usize];
        let name = format!("b{seq}");
        let (span, result) = timed(timeout, self.client.create_branch(session, &name, root)).await;
        Outcome {
            span,
            result: result.map(|_| 0),
        }
    }
}
