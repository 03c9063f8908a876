//! `ckpt tag` and `ckpt fork`: naming checkpoints, and starting a session from one.

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use ckpt_client::{Client, Tag};

use super::branch::{print_ref_log, ref_log};
use super::output::{self, OutputFormat, Table};
use super::{Failure, exit, explain_not_found, server_not_found};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ckpt tag s1                       list the tags of session s1
  ckpt tag s1 good ID               name checkpoint ID `good`
  ckpt tag s1 good ID2 --move       move it to ID2
  ckpt tag s1 good --delete")]
pub(crate) struct TagArgs {
    /// The session.
    session: String,

    /// The tag to show, create, move or delete; without it, every tag of the session is
    /// listed.
    name: Option<String>,

    /// The checkpoint of the session to tag (creates the tag, or moves it with --move).
    #[arg(requires = "name")]
    checkpoint_id: Option<String>,

    /// Move an existing tag to CHECKPOINT_ID (only if nobody moved it meanwhile).
    #[arg(long = "move", requires = "checkpoint_id", conflicts_with_all = ["delete", "log"])]
    move_tag: bool,

    /// Delete the tag. The checkpoint stays, and can be deleted once nothing names it.
    #[arg(long, requires = "name", conflicts_with_all = ["checkpoint_id", "log"])]
    delete: bool,

    /// Show the tag's ref-log: every time it was set, moved or removed, newest first.
    #[arg(long, requires = "name", conflicts_with = "checkpoint_id")]
    log: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ForkArgs {
    /// The checkpoint whose state the new session starts from (any session).
    checkpoint_id: String,
    /// The id of the new session; it must not exist yet.
    new_session: String,
    /// A description stored with the new session's first checkpoint.
    #[arg(long, short)]
    message: Option<String>,
}

pub(crate) async fn tag(
    client: &Client,
    args: TagArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let session = args.session.as_str();
    let tags = || async {
        client
            .list_tags(session)
            .await
            .map_err(|err| explain_not_found(err, || format!("session {session}")))
    };
    let Some(name) = args.name.as_deref() else {
        return print_tags(&tags().await?, format);
    };
    if args.delete {
        return delete(client, session, name, format).await;
    }
    if args.log {
        let entries = ref_log(client, session, name, true, None).await?;
        return print_ref_log(&entries, format);
    }
    let Some(checkpoint) = args.checkpoint_id.as_deref() else {
        let found: Vec<Tag> = tags()
            .await?
            .into_iter()
            .filter(|t| t.name == name)
            .collect();
        if found.is_empty() {
            return Err(Failure::not_found(format!(
                "session {session} has no tag {name}; create it with `ckpt tag {session} {name} ID`"
            ))
            .into());
        }
        return print_tags(&found, format);
    };

    // Moving needs the current binding, so the move fails if someone else moved it meanwhile.
    let expected = if args.move_tag {
        let current = tags().await?.into_iter().find(|t| t.name == name);
        let Some(current) = current else {
            return Err(Failure::not_found(format!(
                "session {session} has no tag {name} to move; drop --move to create it"
            ))
            .into());
        };
        Some(current.checkpoint_id)
    } else {
        None
    };
    let tag = client
        .set_tag(session, name, checkpoint, expected.as_deref())
        .await
        .map_err(|err| set_failure(err, session, name))?;

    match (format, expected) {
        (OutputFormat::Json, old) => {
            let mut value = tag_json(&tag);
            if let Some(old) = old {
                value["old_checkpoint_id"] = json!(old);
            }
            output::print_json(&value)?
        }
        (OutputFormat::Table, Some(old)) => output::print(&format!(
            "moved tag {name} of session {session}: {old} → {}\n",
            tag.checkpoint_id
        ))?,
        (OutputFormat::Table, None) => output::print(&format!(
            "tagged {} as {name} in session {session}\n",
            tag.checkpoint_id
        ))?,
    }
    Ok(())
}

/// Explains why a tag could not be set, and what to do about it.
fn set_failure(err: ckpt_client::Error, session: &str, name: &str) -> anyhow::Error {
    let message = match &err {
        ckpt_client::Error::AlreadyExists(_) => {
            format!("tag {name} already exists in session {session}; pass --move to move it")
        }
        ckpt_client::Error::Aborted { .. } | ckpt_client::Error::FailedPrecondition(_) => format!(
            "tag {name} was moved or removed meanwhile ({err}); check it with \
             `ckpt tag {session} {name}` and retry"
        ),
        ckpt_client::Error::NotFound(_) => return server_not_found(err, ""),
        _ => return anyhow::Error::from(err).context(format!("cannot set tag {name}")),
    };
    Failure::new(exit::CONFLICT, message).into()
}

async fn delete(
    client: &Client,
    session: &str,
    name: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    client
        .delete_tag(session, name)
        .await
        .map_err(|err| explain_not_found(err, || format!("tag {name} of session {session}")))
        .with_context(|| format!("cannot delete tag {name}"))?;
    match format {
        OutputFormat::Table => {
            output::print(&format!("deleted tag {name} of session {session}\n"))?
        }
        OutputFormat::Json => output::print_json(&json!({
            "session_id": session,
            "deleted": name,
        }))?,
    }
    Ok(())
}

pub(crate) async fn fork(
    client: &Client,
    args: ForkArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let message = args.message.as_deref().unwrap_or_default();
    let checkpoint = client
        .fork_session(&args.checkpoint_id, &args.new_session, message)
        .await
        .map_err(|err| match err {
            ckpt_client::Error::AlreadyExists(_) => Failure::new(
                exit::CONFLICT,
                format!(
                    "session {} already exists; choose another id for the fork",
                    args.new_session
                ),
            )
            .into(),
            other => server_not_found(other, ""),
        })
        .with_context(|| format!("cannot fork checkpoint {}", args.checkpoint_id))?;
    match format {
        OutputFormat::Table => output::print(&format!(
            "forked {} into session {}: {}\n",
            args.checkpoint_id,
            args.new_session,
            output::checkpoint_label(&checkpoint)
        ))?,
        OutputFormat::Json => output::print_json(&output::checkpoint_json(&checkpoint))?,
    }
    Ok(())
}

fn print_tags(tags: &[Tag], format: OutputFormat) -> anyhow::Result<()> {
    if format == OutputFormat::Json {
        output::print_json(&tags.iter().map(tag_json).collect())?;
        return Ok(());
    }
    let mut table = Table::new(&["TAG", "CHECKPOINT", "UPDATED (UTC)"]);
    for tag in tags {
        table.row(vec![
            tag.name.clone(),
            tag.checkpoint_id.clone(),
            output::short_time(&tag.update_time),
        ]);
    }
    output::print(&table.render())?;
    Ok(())
}

fn tag_json(tag: &Tag) -> Value {
    json!({
        "session_id": tag.session_id,
        "name": tag.name,
        "checkpoint_id": tag.checkpoint_id,
        "create_time": output::rfc3339(&tag.create_time),
        "update_time": output::rfc3339(&tag.update_time),
    })
}
