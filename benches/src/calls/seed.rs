//! Setup shared by the calls: chains of full checkpoints created before timing starts, each
//! the parent of the next within its session, sessions in parallel.

use anyhow::Context as _;
use bytesize::ByteSize;
use futures::{StreamExt, TryStreamExt};

use ckpt_client::NewCheckpoint;

use super::{Context, SETUP_STAMPS};

/// Creates `per_session` checkpoints in every session of the run; returns each session's ids,
/// oldest first, in session order.
pub(crate) async fn chains(ctx: &Context, per_session: u32) -> anyhow::Result<Vec<Vec<String>>> {
    eprintln!(
        "setup: creating {} checkpoints of {} in {} sessions",
        u64::from(per_session) * ctx.sessions.len() as u64,
        ByteSize(ctx.payload.state_bytes()).display().si(),
        ctx.sessions.len()
    );
    let chains = ctx
        .sessions
        .iter()
        .enumerate()
        .map(|(i, session)| chain(ctx, i, session, per_session));
    futures::stream::iter(chains)
        .buffered(ctx.concurrency)
        .try_collect()
        .await
}

/// At least `ctx.checkpoints` checkpoints spread evenly over the sessions, in one list.
pub(crate) async fn pool(ctx: &Context) -> anyhow::Result<Vec<String>> {
    let per_session = ctx.checkpoints.div_ceil(ctx.sessions.len() as u32);
    let chains = chains(ctx, per_session).await?;
    Ok(chains.into_iter().flatten().collect())
}

async fn chain(ctx: &Context, index: usize, session: &str, n: u32) -> anyhow::Result<Vec<String>> {
    let client = ctx.client(index);
    let mut ids: Vec<String> = Vec::with_capacity(n as usize);
    for k in 0..u64::from(n) {
        let stamp = SETUP_STAMPS + index as u64 * u64::from(n) + k;
        let mut new =
            NewCheckpoint::full(session, ctx.payload.state(stamp)).message("ckpt-bench setup");
        if let Some(parent) = ids.last() {
            new = new.parent(parent.as_str());
        }
        let created = tokio::time::timeout(ctx.timeout, client.create(new))
            .await
            .with_context(|| format!("setup: creating a checkpoint in {session} timed out"))?
            .with_context(|| format!("setup: failed to create a checkpoint in {session}"))?;
        ids.push(created.id);
    }
    Ok(ids)
}
