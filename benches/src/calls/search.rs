//! `search`: one page of Search results for `--query`, in `--target-session` or every session.
//! Nothing is seeded: point it at a store that holds what you want to search.

use std::time::Duration;

use ckpt_client::Client;

use super::{Context, Outcome, timed};

/// A caller searching.
#[derive(Debug)]
pub(crate) struct Worker {
    client: Client,
    session: Option<String>,
    query: String,
    page_size: u32,
}

pub(crate) fn prepare(ctx: &Context) -> Vec<Worker> {
    (0..ctx.concurrency)
        .map(|w| Worker {
            client: ctx.client(w),
            session: ctx.target_session.clone(),
            query: ctx.query.clone(),
            page_size: ctx.page_size,
        })
        .collect()
}

impl Worker {
    /// Searches once; moves no payload.
    pub(crate) async fn call(&mut self, _seq: u64, timeout: Duration) -> Outcome {
        let search = self
            .client
            .search(self.session.as_deref(), &self.query, self.page_size, "");
        let (span, result) = timed(timeout, search).await;
        Outcome {
            span,
            result: result.map(|_| 0),
        }
    }
}
