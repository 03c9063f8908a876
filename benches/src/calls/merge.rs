//! `merge`: a dry-run Merge of one branch into another: the server finds the merge base,
//! diffs both sides and reports the result and its conflicts without writing, so the call can
//! repeat. Each worker's session holds a base state of `--keys` keys and two branches, each
//! changing `--change-keys` keys from its own end of the key range (they overlap, and so
//! conflict, when `2 x --change-keys` exceeds `--keys`).

use std::time::Duration;

use anyhow::Context as _;
use ckpt_client::{Client, MergeOptions, NewCheckpoint, Op};

use super::{Context, Outcome, SETUP_STAMPS, timed};

/// A caller merging its session's two branches.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    session: String,
}

pub(crate) async fn prepare(ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let mut workers = Vec::with_capacity(ctx.concurrency);
    for w in 0..ctx.concurrency {
        let client = ctx.client(w);
        let session = ctx.sessions[w % ctx.sessions.len()].clone();
        if w < ctx.sessions.len() {
            branches(ctx, &client, &session, SETUP_STAMPS + w as u64 * 4)
                .await
                .with_context(|| format!("setup: branching {session}"))?;
        }
        workers.push(Worker { client, session });
    }
    Ok(workers)
}

/// A base checkpoint on `main` and branches `ours` and `theirs` changing keys from each end.
async fn branches(ctx: &Context, client: &Client, session: &str, stamp: u64) -> anyhow::Result<()> {
    let base = client
        .create(NewCheckpoint::full(session, ctx.payload.state(stamp)))
        .await?;
    let keys = ctx.payload.key_count();
    let change = ctx.change_keys.min(keys);
    for (n, branch) in ["ours", "theirs"].into_iter().enumerate() {
        client.create_branch(session, branch, &base.id).await?;
        let ops = (0..change)
            .map(|i| {
                let k = if n == 0 { i } else { keys - 1 - i };
                let value = ctx.payload.value(k, stamp + 1 + n as u64);
                Op::Put(ctx.payload.key(k).to_owned(), value)
            })
            .collect();
        client
            .create(NewCheckpoint::incremental(session, &base.id, ops).branch(branch))
            .await?;
    }
    Ok(())
}

impl Worker {
    /// Merges `theirs` into `ours` without writing; moves no payload.
    pub(crate) async fn call(&mut self, _seq: u64, timeout: Duration) -> Outcome {
        let options = MergeOptions {
            dry_run: true,
            ..MergeOptions::default()
        };
        let merge = self
            .client
            .merge(&self.session, "ours", "theirs", true, options);
        let (span, result) = timed(timeout, merge).await;
        Outcome {
            span,
            result: result.map(|_| 0),
        }
    }
}
