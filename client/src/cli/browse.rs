//! `ckpt sessions`, `list`, `show`, `delete` and `delete-session`: looking around and cleaning
//! up.

use anyhow::Context;
use clap::Args;
use serde_json::json;

use ckpt_client::{Checkpoint, Client};

use super::output::{self, OutputFormat};
use super::{Failure, explain_not_found};

/// Largest page requested while listing; the server's maximum.
const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The session whose checkpoints to list.
    session: String,
    /// Only checkpoints written on this branch.
    #[arg(long)]
    branch: Option<String>,
    /// Show at most this many checkpoints (the newest); all by default.
    #[arg(long)]
    limit: Option<usize>,
    /// Only the checkpoint this tag names.
    #[arg(long)]
    tag: Option<String>,
    /// Only checkpoints whose metadata contains this JSON object, e.g. '{"tool":"bash"}'.
    #[arg(long, value_name = "JSON", value_parser = parse_object)]
    meta: Option<serde_json::Value>,
    /// Only checkpoints created at or after this time (RFC 3339, e.g. 2026-12-03T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only checkpoints created before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only checkpoints whose message contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    grep: Option<String>,
}

/// Search matches whole words (letters and digits; other characters separate words) in
/// checkpoint messages, metadata values (not keys) and the keys each checkpoint wrote, all
/// words required, case-insensitively; or a tag's exact name. Symbols and emoji are not
/// indexed: use `ckpt list --grep` for those.
#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// The words to find, or a tag's exact name.
    query: String,
    /// Search one session only; every session by default.
    #[arg(long)]
    session: Option<String>,
    /// Show at most this many results, best first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

fn parse_object(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err("must be a JSON object".into())
    }
}

pub(crate) async fn search(
    client: &Client,
    args: SearchArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let found = client
        .search(args.session.as_deref(), &args.query, args.limit, "")
        .await;
    let page = match (found, &args.session) {
        (Ok(page), _) => page,
        (Err(err), Some(session)) => {
            return Err(explain_not_found(err, || format!("session {session}")));
        }
        (Err(err), None) => return Err(anyhow::Error::from(err).context("cannot search")),
    };
    if page.items.is_empty() && !args.query.chars().any(char::is_alphanumeric) {
        eprintln!(
            "note: the query has no letters or digits, and search indexes words only \
             (try `ckpt list SESSION --grep TEXT`)"
        );
    }
    match format {
        OutputFormat::Table => output::print(&output::found_table(&page.items))?,
        OutputFormat::Json => {
            output::print_json(&page.items.iter().map(output::checkpoint_json).collect())?
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The checkpoint id.
    id: String,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The checkpoint id.
    id: String,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteSessionArgs {
    /// The session to delete.
    session: String,
    /// Confirm the deletion of every checkpoint of the session.
    #[arg(long)]
    yes: bool,
}

pub(crate) async fn sessions(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let sessions = client
        .list_all_sessions()
        .await
        .context("cannot list sessions")?;
    match format {
        OutputFormat::Table => output::print(&output::sessions_table(&sessions))?,
        OutputFormat::Json => {
            output::print_json(&sessions.iter().map(output::session_json).collect())?
        }
    }
    Ok(())
}

pub(crate) async fn list(
    client: &Client,
    args: ListArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let checkpoints = list_newest(client, &args)
        .await
        .map_err(|err| explain_not_found(err, || format!("session {}", args.session)))?;
    match format {
        OutputFormat::Table => output::print(&output::checkpoints_table(&checkpoints))?,
        OutputFormat::Json => {
            output::print_json(&checkpoints.iter().map(output::checkpoint_json).collect())?
        }
    }
    Ok(())
}

/// Follows pages until `--limit` checkpoints (or all of them) are in hand.
async fn list_newest(
    client: &Client,
    args: &ListArgs,
) -> Result<Vec<Checkpoint>, ckpt_client::Error> {
    let filter = ckpt_client::ListFilter {
        branch: args.branch.clone(),
        tag: args.tag.clone(),
        metadata_contains: args.meta.clone(),
        created_after: args.since,
        created_before: args.until,
        message_contains: args.grep.clone(),
    };
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        return Err(ckpt_client::Error::InvalidArgument(
            "--until must be later than --since".into(),
        ));
    }
    let limit = args.limit.unwrap_or(usize::MAX);

    let mut checkpoints = Vec::new();
    let mut token = String::new();
    while checkpoints.len() < limit {
        let wanted = (limit - checkpoints.len()).min(MAX_PAGE_SIZE) as u32;
        let page = client
            .list_checkpoints_where(&args.session, &filter, wanted, &token)
            .await?;
        checkpoints.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    checkpoints.truncate(limit);
    Ok(checkpoints)
}

pub(crate) async fn show(
    client: &Client,
    args: ShowArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let checkpoint = client
        .get(&args.id)
        .await
        .map_err(|err| explain_not_found(err, || format!("checkpoint {}", args.id)))?;
    match format {
        OutputFormat::Table => output::print(&output::checkpoint_details(&checkpoint))?,
        OutputFormat::Json => output::print_json(&output::checkpoint_json(&checkpoint))?,
    }
    Ok(())
}

pub(crate) async fn delete(
    client: &Client,
    args: DeleteArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    client
        .delete_checkpoint(&args.id)
        .await
        .map_err(|err| explain_not_found(err, || format!("checkpoint {}", args.id)))
        .with_context(|| format!("cannot delete checkpoint {}", args.id))?;
    match format {
        OutputFormat::Table => output::print(&format!("deleted checkpoint {}\n", args.id))?,
        OutputFormat::Json => output::print_json(&json!({ "deleted": args.id }))?,
    }
    Ok(())
}

/// Deleting a session cannot be undone, so it needs `--yes`.
pub(crate) fn confirm_delete_session(args: &DeleteSessionArgs) -> Result<(), Failure> {
    if args.yes {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "deleting session {} removes all its checkpoints; pass --yes to confirm",
        args.session
    )))
}

pub(crate) async fn delete_session(
    client: &Client,
    args: DeleteSessionArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    confirm_delete_session(&args)?;
    let deleted = client
        .delete_session(&args.session)
        .await
        .map_err(|err| explain_not_found(err, || format!("session {}", args.session)))?;
    match format {
        OutputFormat::Table => output::print(&format!(
            "deleted session {} ({deleted} checkpoints)\n",
            args.session
        ))?,
        OutputFormat::Json => output::print_json(&json!({
            "session_id": args.session,
            "checkpoints_deleted": deleted,
        }))?,
    }
    Ok(())
}
