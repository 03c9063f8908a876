//! `list`: ListCheckpoints, the first page of `--page-size` of a session that setup filled with
//! `--checkpoints` checkpoints (at least a page and one more, so every page is full).

use std::sync::Arc;
use std::time::Duration;

use ckpt_client::Client;

use super::{Context, Outcome, seed, timed};

/// A caller listing pre-populated sessions.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    sessions: Arc<[String]>,
    page_size: u32,
    filter: ckpt_client::ListFilter,
}

/// Fills every session of the run.
pub(crate) async fn prepare(ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let sessions: Arc<[String]> = match &ctx.target_session {
        Some(existing) => vec![existing.clone()].into(),
        None => {
            let per_session = ctx.checkpoints.max(ctx.page_size + 1);
            seed::chains(ctx, per_session).await?;
            ctx.sessions.clone().into()
        }
    };
    let filter = ckpt_client::ListFilter {
        metadata_contains: ctx.meta.clone(),
        ..Default::default()
    };
    let workers = (0..ctx.concurrency)
        .map(|w| Worker {
            client: ctx.client(w),
            sessions: Arc::clone(&sessions),
            page_size: ctx.page_size,
            filter: filter.clone(),
        })
        .collect();
    Ok(workers)
}

impl Worker {
    /// Lists one page; moves no payload.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        let session = &self.sessions[(seq % self.sessions.len() as u64) as usize];

        let list = self
            .client
            .list_checkpoints_where(session, &self.filter, self.page_size, "");
        let (span, result) = timed(timeout, list).await;

        Outcome {
            span,
            result: result.map(|_| 0),
        }
    }
}
