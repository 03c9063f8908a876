//! `diff`: Diff of two consecutive pre-created checkpoints of a session (full states of
//! `--keys` keys, every value different), first page of `--page-size` changes, keys only.

use std::sync::Arc;
use std::time::Duration;

use ckpt_client::Client;

use super::{Context, Outcome, seed, timed};

/// A caller diffing pairs of checkpoints.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    pairs: Arc<[(String, String)]>,
    page_size: u32,
}

/// Creates chains of checkpoints to diff, at least two per session.
pub(crate) async fn prepare(ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let per_session = ctx.checkpoints.div_ceil(ctx.sessions.len() as u32).max(2);
    let pairs: Arc<[(String, String)]> = seed::chains(ctx, per_session)
        .await?
        .into_iter()
        .flat_map(|ids| {
            ids.windows(2)
                .map(|w| (w[0].clone(), w[1].clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((0..ctx.concurrency)
        .map(|w| Worker {
            client: ctx.client(w),
            pairs: Arc::clone(&pairs),
            page_size: ctx.page_size,
        })
        .collect())
}

impl Worker {
    /// Diffs one pair; the payload is the number of changes returned.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let (from, to) = &self.pairs[(seq % self.pairs.len() as u64) as usize];
        let diff = self.client.diff(from, to, false, self.page_size, "");
        let (span, result) = timed(timeout, diff).await;
        Outcome {
            span,
            result: result.map(|_| 0),
        }
    }
}
