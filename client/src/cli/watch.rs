//! `ckpt watch`: the change feed, printed live, one line (or one JSON object) per event.

use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tonic::Code;

use ckpt_client::{Client, Error, Event, EventKind};

use super::output::{self, OutputFormat};

/// The longest pause between attempts to reconnect a dropped watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ckpt watch                      every change on the server, from now on
  ckpt watch s1 --branch main     changes to branch main of session s1
  ckpt watch s1 --cursor 4711     resume after the event whose cursor was 4711
  ckpt watch --output json        one JSON object per line

The watch reconnects by itself when the connection drops, resuming after the last event it
printed, so no event is lost or printed twice.")]
pub(crate) struct WatchArgs {
    /// The session to watch; every session when absent.
    session: Option<String>,

    /// Only this branch of the session (and the session's deletion).
    #[arg(long, requires = "session")]
    branch: Option<String>,

    /// Resume after the event with this cursor instead of starting from now.
    #[arg(long)]
    cursor: Option<String>,

    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

pub(crate) async fn run(
    client: &Client,
    args: WatchArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let session = args.session.unwrap_or_default();
    let branch = args.branch.unwrap_or_default();
    let mut cursor = args.cursor.unwrap_or_default();
    let mut printed = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = async {
            let mut events = Box::pin(client.watch(&session, &branch, &cursor).await?);
            while let Some(event) = events.next().await {
                let event = event?;
                cursor = event.cursor.clone();
                backoff = Duration::from_millis(100);
                if event.kind == EventKind::Heartbeat {
                    continue;
                }
                print_event(&event, format)?;
                printed += 1;
                if args.count.is_some_and(|count| printed >= count) {
                    return Ok(());
                }
            }
            Err(Error::Unavailable("the server ended the watch".into()).into())
        }
        .await;
        match outcome {
            Ok(()) => return Ok(()),
            Err(err) if is_transient(&err) => {
                eprintln!("watch interrupted ({err:#}); resuming after cursor {cursor:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Whether a failed watch is worth resuming: the connection or the server went away.
fn is_transient(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Error>().is_some_and(|err| {
        matches!(
            err.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        )
    })
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Heartbeat => "heartbeat",
        EventKind::CheckpointCreated => "checkpoint-created",
        EventKind::BranchCreated => "branch-created",
        EventKind::BranchMoved => "branch-moved",
        EventKind::BranchDeleted => "branch-deleted",
        EventKind::TagSet => "tag-set",
        EventKind::TagRemoved => "tag-removed",
        EventKind::SessionDeleted => "session-deleted",
    }
}

fn print_event(event: &Event, format: OutputFormat) -> std::io::Result<()> {
    let time = event.time.as_ref().map(output::rfc3339).unwrap_or_default();
    let line = match format {
        OutputFormat::Json => json!({
            "cursor": event.cursor,
            "kind": kind_name(event.kind),
            "session_id": event.session_id,
            "ref": event.ref_name,
            "old_checkpoint_id": event.old_checkpoint_id,
            "new_checkpoint_id": event.new_checkpoint_id,
            "operation": event.operation,
            "time": time,
        })
        .to_string(),
        OutputFormat::Table => {
            let dash = |id: &str| {
                if id.is_empty() {
                    "-".to_owned()
                } else {
                    id.to_owned()
                }
            };
            format!(
                "{time}  {:>8}  {:<18}  {}  {}  {} -> {}  ({})",
                event.cursor,
                kind_name(event.kind),
                event.session_id,
                dash(&event.ref_name),
                dash(&event.old_checkpoint_id),
                dash(&event.new_checkpoint_id),
                event.operation,
            )
        }
    };
    output::print(&(line + "\n"))
}
