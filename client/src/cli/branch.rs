//! `ckpt branch` and `ckpt reset`: listing, creating, deleting and rewinding branches, and
//! reading their ref-logs.

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use ckpt_client::{Branch, Client, RefLogEntry};

use super::output::{self, OutputFormat, Table};
use super::{Failure, exit, explain_not_found, server_not_found};

/// Largest page ListRefLog serves.
const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ckpt branch s1                              list the branches of session s1
  ckpt branch s1 try-2 --from-branch main     start branch try-2 at the head of main
  ckpt branch s1 try-2 --log                  every move of try-2's head
  ckpt branch s1 try-2 --delete")]
pub(crate) struct BranchArgs {
    /// The session.
    session: String,

    /// The branch to show, create, delete or read the log of; without it, every branch of
    /// the session is listed.
    name: Option<String>,

    /// Create NAME pointing at this checkpoint of the session.
    #[arg(long, requires = "name", value_name = "ID", group = "action")]
    from: Option<String>,

    /// Create NAME pointing at the current head of this branch.
    #[arg(long, requires = "name", value_name = "BRANCH", group = "action")]
    from_branch: Option<String>,

    /// Delete NAME. Its checkpoints stay and can still be read by id.
    #[arg(long, requires = "name", group = "action")]
    delete: bool,

    /// With --delete: delete only if the branch still points at this checkpoint.
    #[arg(long, requires = "delete", value_name = "HEAD")]
    expect: Option<String>,

    /// Show NAME's ref-log: every move of its head, newest first.
    #[arg(long, requires = "name", group = "action")]
    log: bool,

    /// With --log: show at most this many entries.
    #[arg(long, requires = "log")]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct ResetArgs {
    /// The session.
    session: String,
    /// The branch to move.
    branch: String,
    /// The checkpoint of the session the branch should point at.
    checkpoint_id: String,
    /// Move the branch only if it still points at this checkpoint [default: its head as read
    /// just before the reset].
    #[arg(long, value_name = "HEAD")]
    expect: Option<String>,
}

pub(crate) async fn branch(
    client: &Client,
    args: BranchArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let Some(name) = args.name.clone() else {
        return list(client, &args.session, format).await;
    };
    if let Some(from) = &args.from {
        return create(client, &args.session, &name, from, format).await;
    }
    if let Some(source) = &args.from_branch {
        let head = get(client, &args.session, source).await?.head;
        return create(client, &args.session, &name, &head, format).await;
    }
    if args.delete {
        return delete(client, &args, &name, format).await;
    }
    if args.log {
        let entries = ref_log(client, &args.session, &name, false, args.limit).await?;
        return print_ref_log(&entries, format);
    }
    let branch = get(client, &args.session, &name).await?;
    match format {
        OutputFormat::Table => output::print(&branches_table(&[branch]))?,
        OutputFormat::Json => output::print_json(&branch_json(&branch))?,
    }
    Ok(())
}

async fn list(client: &Client, session: &str, format: OutputFormat) -> anyhow::Result<()> {
    let branches = client
        .list_branches(session)
        .await
        .map_err(|err| explain_not_found(err, || format!("session {session}")))?;
    match format {
        OutputFormat::Table => output::print(&branches_table(&branches))?,
        OutputFormat::Json => output::print_json(&branches.iter().map(branch_json).collect())?,
    }
    Ok(())
}

/// One branch, with a not-found message that says how to find or create one.
async fn get(client: &Client, session: &str, name: &str) -> anyhow::Result<Branch> {
    client.get_branch(session, name).await.map_err(|err| {
        let hint = format!(
            "list branches with `ckpt branch {session}`, create one with \
             `ckpt branch {session} {name} --from ID`"
        );
        server_not_found(err, &hint)
    })
}

async fn create(
    client: &Client,
    session: &str,
    name: &str,
    from: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let branch = client
        .create_branch(session, name, from)
        .await
        .map_err(|err| match err {
            ckpt_client::Error::AlreadyExists(_) => Failure::new(
                exit::CONFLICT,
                format!(
                    "branch {name} already exists in session {session}; move it with \
                     `ckpt reset {session} {name} {from}`"
                ),
            )
            .into(),
            other => server_not_found(other, ""),
        })
        .with_context(|| format!("cannot create branch {name}"))?;
    match format {
        OutputFormat::Table => output::print(&format!(
            "created branch {session}@{name} at {}\n",
            branch.head
        ))?,
        OutputFormat::Json => output::print_json(&branch_json(&branch))?,
    }
    Ok(())
}

async fn delete(
    client: &Client,
    args: &BranchArgs,
    name: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let session = &args.session;
    client
        .delete_branch(session, name, args.expect.as_deref())
        .await
        .map_err(|err| match err {
            ckpt_client::Error::Aborted { current_head, .. } => {
                let now = current_head.unwrap_or_else(|| "another checkpoint".into());
                Failure::new(
                    exit::CONFLICT,
                    format!("branch {name} now points at {now}, not the expected head"),
                )
                .into()
            }
            other => explain_not_found(other, || format!("branch {name} of session {session}")),
        })
        .with_context(|| format!("cannot delete branch {name}"))?;
    match format {
        OutputFormat::Table => output::print(&format!("deleted branch {session}@{name}\n"))?,
        OutputFormat::Json => output::print_json(&json!({
            "session_id": session,
            "deleted": name,
        }))?,
    }
    Ok(())
}

pub(crate) async fn reset(
    client: &Client,
    args: ResetArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let (session, name) = (&args.session, &args.branch);
    let expected = match &args.expect {
        Some(head) => head.clone(),
        None => get(client, session, name).await?.head,
    };

    let branch = client
        .reset_branch(session, name, &args.checkpoint_id, &expected)
        .await
        .map_err(|err| match err {
            ckpt_client::Error::Aborted { current_head, .. } => {
                let now = current_head.unwrap_or_else(|| "another checkpoint".into());
                Failure::new(
                    exit::CONFLICT,
                    format!(
                        "branch {name} moved to {now} (expected {expected}); check it with \
                         `ckpt log {session}@{name}` and retry"
                    ),
                )
                .into()
            }
            other => server_not_found(other, ""),
        })
        .with_context(|| format!("cannot reset branch {name}"))?;

    match format {
        OutputFormat::Table => output::print(&format!(
            "reset {session}@{name}: {expected} → {}\n",
            branch.head
        ))?,
        OutputFormat::Json => {
            let mut value = branch_json(&branch);
            value["old_head"] = json!(expected);
            output::print_json(&value)?
        }
    }
    Ok(())
}

/// A branch's or tag's ref-log, newest first, following pages up to `limit` entries.
pub(crate) async fn ref_log(
    client: &Client,
    session: &str,
    name: &str,
    tag: bool,
    limit: Option<usize>,
) -> anyhow::Result<Vec<RefLogEntry>> {
    let what = if tag { "tag" } else { "branch" };
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let wanted = limit.map_or(MAX_PAGE_SIZE, |l| (l - entries.len()).min(MAX_PAGE_SIZE));
        if wanted == 0 {
            return Ok(entries);
        }
        let page = client
            .ref_log(session, name, tag, wanted as u32, &token)
            .await
            .map_err(|err| explain_not_found(err, || format!("{what} {name} of session {session}")))
            .with_context(|| format!("cannot read the log of {what} {name}"))?;
        entries.extend(page.items);
        if page.next_page_token.is_empty() || page.next_page_token == token {
            return Ok(entries);
        }
        token = page.next_page_token;
    }
}

pub(crate) fn print_ref_log(entries: &[RefLogEntry], format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        output::print_json(&entries.iter().map(ref_log_json).collect())?;
        return Ok(());
    }
    if entries.is_empty() {
        eprintln!("note: no recorded moves under this name");
        return Ok(());
    }
    let mut table = Table::new(&["TIME (UTC)", "OPERATION", "OLD → NEW"]);
    for entry in entries {
        let side = |head: &Option<String>| head.clone().unwrap_or_else(|| "(none)".into());
        table.row(vec![
            output::short_time(&entry.time),
            entry.operation.clone(),
            format!("{} → {}", side(&entry.old_head), side(&entry.new_head)),
        ]);
    }
    output::print(&table.render())?;
    Ok(())
}

fn branches_table(branches: &[Branch]) -> String {
    let mut table = Table::new(&["BRANCH", "HEAD", "UPDATED (UTC)"]);
    for branch in branches {
        table.row(vec![
            branch.name.clone(),
            branch.head.clone(),
            output::short_time(&branch.update_time),
        ]);
    }
    table.render()
}

fn branch_json(branch: &Branch) -> Value {
    json!({
        "session_id": branch.session_id,
        "name": branch.name,
        "head": branch.head,
        "create_time": output::rfc3339(&branch.create_time),
        "update_time": output::rfc3339(&branch.update_time),
    })
}

fn ref_log_json(entry: &RefLogEntry) -> Value {
    json!({
        "id": entry.id,
        "name": entry.name,
        "operation": entry.operation,
        "old_head": entry.old_head,
        "new_head": entry.new_head,
        "time": output::rfc3339(&entry.time),
    })
}
