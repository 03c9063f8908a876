//! `get`: GetCheckpoint (metadata and summary, no state) of a pre-created checkpoint. Calls
//! cycle through `--checkpoints` checkpoints created during setup.

use std::sync::Arc;
use std::time::Duration;

use ckpt_client::Client;

use super::{Context, Outcome, seed, timed};

/// A caller fetching pre-created checkpoints' metadata.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    ids: Arc<[String]>,
}

/// Creates the checkpoints to fetch.
pub(crate) async fn prepare(ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let ids: Arc<[String]> = seed::pool(ctx).await?.into();
    let workers = (0..ctx.concurrency)
        .map(|w| Worker {
            client: ctx.client(w),
            ids: Arc::clone(&ids),
        })
        .collect();
    Ok(workers)
}

impl Worker {
    /// Fetches one checkpoint; moves no payload.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let id = &self.ids[(seq % self.ids.len() as u64) as usize];

        let (span, result) = timed(timeout, self.client.get(id)).await;

        Outcome {
            span,
            result: result.map(|_| 0),
        }
    }
}
