//! `load`: ReadState of a whole pre-created checkpoint, collected in memory; the payload is the
//! value bytes read. Calls cycle through `--checkpoints` checkpoints created during setup.

use std::sync::Arc;
use std::time::Duration;

use ckpt_client::{Client, ReadFilter, Target};

use super::{Context, Outcome, seed, timed};

/// A caller reading pre-created checkpoints.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    ids: Arc<[String]>,
}

/// Creates the checkpoints to read.
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
    /// Reads one checkpoint's whole state.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let id = &self.ids[(seq % self.ids.len() as u64) as usize];
        let target = Target::checkpoint(id.as_str());

        let read = self.client.read_state(target, ReadFilter::default());
        let (span, result) = timed(timeout, read).await;

        let bytes = |(_, state): (_, ckpt_client::State)| -> u64 {
            state.values().map(|value| value.len() as u64).sum()
        };
        Outcome {
            span,
            result: result.map(bytes),
        }
    }
}
