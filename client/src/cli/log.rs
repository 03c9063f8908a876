//! `ckpt log`: a checkpoint's history, newest first, optionally as a graph of branches and
//! merges, with branch heads and tags marked.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use ckpt_client::{Checkpoint, Client, Target};

use super::graph::{self, Node};
use super::output::{self, OutputFormat};
use super::restore::candidates;
use super::{Failure, explain_not_found, server_not_found};

/// Largest page GetHistory serves.
const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ckpt log s1                      history of the head of main
  ckpt log s1@try-2 -n 20          the 20 newest checkpoints behind branch try-2
  ckpt log s1 --all --graph        every branch, drawn with its forks and merges
  ckpt log ID --first-parent       the line of ID's branch, without merged-in work")]
pub(crate) struct LogArgs {
    /// A checkpoint id, or `SESSION[@BRANCH]` for the history of a branch head (main by
    /// default). The session is split from the branch at the last `@`; use --branch for a
    /// session id that contains `@`.
    start: String,

    /// Start at the head of this branch, taking START whole as the session id.
    #[arg(long, conflicts_with = "all")]
    branch: Option<String>,

    /// Show the history of every branch of the session START, merged into one list.
    #[arg(long)]
    all: bool,

    /// Follow first parents only: the line of the branch, without what merges brought in.
    #[arg(long)]
    first_parent: bool,

    /// Show at most this many checkpoints (the newest); all by default.
    #[arg(long, short = 'n')]
    limit: Option<usize>,

    /// Draw the branches and merges of the listed checkpoints as an ASCII graph.
    #[arg(long)]
    graph: bool,

    /// Print whole checkpoint ids instead of their last 12 hex digits.
    #[arg(long)]
    full_ids: bool,
}

/// Checkpoints fetched for a log, newest first.
struct History {
    checkpoints: Vec<Checkpoint>,
    /// Whether the listing reached the root of every line it followed.
    complete: bool,
}

pub(crate) async fn run(
    client: &Client,
    args: LogArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    if args.limit == Some(0) {
        return Err(Failure::usage("--limit must be at least 1").into());
    }
    let history = if args.all {
        all_branches(client, &args).await?
    } else {
        from_start(client, &args).await?
    };
    if history.checkpoints.is_empty() {
        eprintln!("note: no checkpoints to show");
        return Ok(());
    }

    let session = history.checkpoints[0].session_id.clone();
    let refs = refs_by_checkpoint(client, &session).await?;
    let pruned = pruned_parents(client, &history, args.first_parent).await?;
    match format {
        OutputFormat::Json => {
            let items = history
                .checkpoints
                .iter()
                .map(|c| log_json(c, &refs, &pruned))
                .collect();
            output::print_json(&Value::Array(items))?;
        }
        OutputFormat::Table => output::print(&render(&history, &refs, &pruned, &args))?,
    }
    Ok(())
}

/// History from START: a checkpoint id or a branch head, trying each reading of START in turn.
async fn from_start(client: &Client, args: &LogArgs) -> anyhow::Result<History> {
    let targets = candidates(&args.start, args.branch.as_deref());
    let mut last_missing = None;
    for target in &targets {
        match fetch(client, target.clone(), args.first_parent, args.limit).await {
            Ok(history) => return Ok(history),
            Err(err @ ckpt_client::Error::NotFound(_)) => last_missing = Some(err),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read the history of {target}"));
            }
        }
    }
    if let [Target::Checkpoint(id), _] = targets.as_slice() {
        return Err(Failure::not_found(format!("no checkpoint or session named {id}")).into());
    }
    let Some(err) = last_missing else {
        return Err(Failure::not_found(format!("{} not found", args.start)).into());
    };
    let session = match targets.as_slice() {
        [Target::Head { session_id, .. }] => session_id.as_str(),
        _ => args.start.as_str(),
    };
    Err(server_not_found(
        err,
        &format!("list sessions with `ckpt sessions`, branches with `ckpt branch {session}`"),
    ))
}

/// The union of every branch's history, newest first.
async fn all_branches(client: &Client, args: &LogArgs) -> anyhow::Result<History> {
    let session = args.start.as_str();
    let branches = client
        .list_branches(session)
        .await
        .map_err(|err| explain_not_found(err, || format!("session {session}")))?;

    // TODO: each branch's walk repeats the ancestors it shares with the others; a history
    // request with several starts would fetch each checkpoint once.
    let mut seen = HashSet::new();
    let mut checkpoints = Vec::new();
    let mut complete = true;
    for branch in &branches {
        let target = Target::branch_head(session, &branch.name);
        let history = fetch(client, target, args.first_parent, args.limit)
            .await
            .with_context(|| format!("cannot read the history of {session}@{}", branch.name))?;
        complete &= history.complete;
        for checkpoint in history.checkpoints {
            if seen.insert(checkpoint.id.clone()) {
                checkpoints.push(checkpoint);
            }
        }
    }
    checkpoints.sort_by_key(|c| std::cmp::Reverse(c.sequence));
    if let Some(limit) = args.limit
        && checkpoints.len() > limit
    {
        checkpoints.truncate(limit);
        complete = false;
    }
    Ok(History {
        checkpoints,
        complete,
    })
}

/// Follows GetHistory pages until `limit` checkpoints (or all of them) are in hand.
async fn fetch(
    client: &Client,
    start: Target,
    first_parent: bool,
    limit: Option<usize>,
) -> Result<History, ckpt_client::Error> {
    let mut checkpoints = Vec::new();
    let mut token = String::new();
    loop {
        let wanted = limit.map_or(MAX_PAGE_SIZE, |l| {
            (l - checkpoints.len()).min(MAX_PAGE_SIZE)
        });
        let page = client
            .history(start.clone(), first_parent, wanted as u32, &token)
            .await?;
        checkpoints.extend(page.items);
        if page.next_page_token.is_empty() {
            return Ok(History {
                checkpoints,
                complete: true,
            });
        }
        if limit.is_some_and(|l| checkpoints.len() >= l) {
            return Ok(History {
                checkpoints,
                complete: false,
            });
        }
        token = page.next_page_token;
    }
}

/// Branch and tag names by the checkpoint they point at: `main`, `tag: v1`.
async fn refs_by_checkpoint(
    client: &Client,
    session: &str,
) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let branches = client
        .list_branches(session)
        .await
        .with_context(|| format!("cannot list the branches of session {session}"))?;
    let tags = client
        .list_tags(session)
        .await
        .with_context(|| format!("cannot list the tags of session {session}"))?;
    let mut refs: HashMap<String, Vec<String>> = HashMap::new();
    for branch in branches {
        refs.entry(branch.head).or_default().push(branch.name);
    }
    for tag in tags {
        refs.entry(tag.checkpoint_id)
            .or_default()
            .push(format!("tag: {}", tag.name));
    }
    Ok(refs)
}

/// Parent ids that name no listed checkpoint because the checkpoint was deleted. When the list
/// stops short of the roots, a missing parent may just be older than the last one listed, so
/// those are looked up.
async fn pruned_parents(
    client: &Client,
    history: &History,
    first_parent: bool,
) -> anyhow::Result<HashSet<String>> {
    let listed: HashSet<&str> = history.checkpoints.iter().map(|c| c.id.as_str()).collect();
    let mut missing: Vec<&str> = Vec::new();
    for checkpoint in &history.checkpoints {
        let followed = if first_parent { 1 } else { usize::MAX };
        for parent in checkpoint.parent_ids.iter().take(followed) {
            if !listed.contains(parent.as_str()) && !missing.contains(&parent.as_str()) {
                missing.push(parent);
            }
        }
    }
    if history.complete {
        return Ok(missing.into_iter().map(str::to_owned).collect());
    }
    let mut pruned = HashSet::new();
    for id in missing {
        match client.get(id).await {
            Ok(_) => {}
            Err(ckpt_client::Error::NotFound(_)) => {
                pruned.insert(id.to_owned());
            }
            Err(err) => return Err(err).with_context(|| format!("cannot look up checkpoint {id}")),
        }
    }
    Ok(pruned)
}

/// The table form: one line per checkpoint, beside the graph when asked for.
fn render(
    history: &History,
    refs: &HashMap<String, Vec<String>>,
    pruned: &HashSet<String>,
    args: &LogArgs,
) -> String {
    let checkpoints = &history.checkpoints;
    let seq_width = checkpoints
        .iter()
        .map(|c| c.sequence.to_string().len())
        .max()
        .unwrap_or(1);
    let branch_width = checkpoints
        .iter()
        .map(|c| c.branch.chars().count())
        .max()
        .unwrap_or(0);
    let labels: Vec<String> = checkpoints
        .iter()
        .map(|c| {
            let columns = format!(
                "{}  #{:<seq_width$}  {:<branch_width$}  {}  ",
                short_id(&c.id, args.full_ids),
                c.sequence,
                c.branch,
                output::short_time(&c.create_time),
            );
            let mut label = columns + &describe(c, refs, pruned, args);
            label.truncate(label.trim_end().len());
            label
        })
        .collect();
    if !args.graph {
        return labels.iter().map(|l| format!("{l}\n")).collect();
    }

    // Pruned parents end their line; any other unlisted parent is older than the last row.
    let followed = if args.first_parent { 1 } else { usize::MAX };
    let drawn_parents: Vec<Vec<String>> = checkpoints
        .iter()
        .map(|c| {
            let parents = c.parent_ids.iter().take(followed);
            parents.filter(|p| !pruned.contains(*p)).cloned().collect()
        })
        .collect();
    let nodes: Vec<Node<'_>> = checkpoints
        .iter()
        .zip(&drawn_parents)
        .map(|(c, parents)| Node { id: &c.id, parents })
        .collect();
    graph::render(&graph::layout(&nodes), &labels)
}

/// `(main, tag: v1) message (pruned parent …)`.
fn describe(
    checkpoint: &Checkpoint,
    refs: &HashMap<String, Vec<String>>,
    pruned: &HashSet<String>,
    args: &LogArgs,
) -> String {
    let mut parts = Vec::new();
    if let Some(names) = refs.get(&checkpoint.id) {
        parts.push(format!("({})", names.join(", ")));
    }
    parts.push(output::first_line(&checkpoint.message, 60));
    let gone: Vec<String> = checkpoint
        .parent_ids
        .iter()
        .filter(|p| pruned.contains(*p))
        .map(|p| short_id(p, args.full_ids).to_owned())
        .collect();
    match gone.as_slice() {
        [] => {}
        [one] => parts.push(format!("(pruned parent {one})")),
        many => parts.push(format!("(pruned parents {})", many.join(", "))),
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

/// Checkpoint ids are UUIDv7: the leading digits encode the time and are shared by
/// checkpoints written close together, so the short form keeps the random tail.
pub(crate) fn short_id(id: &str, full: bool) -> &str {
    if full || id.len() <= 12 {
        return id;
    }
    &id[id.len() - 12..]
}

fn log_json(
    checkpoint: &Checkpoint,
    refs: &HashMap<String, Vec<String>>,
    pruned: &HashSet<String>,
) -> Value {
    let mut value = output::checkpoint_json(checkpoint);
    let names = refs.get(&checkpoint.id).cloned().unwrap_or_default();
    let (tags, branches): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| n.starts_with("tag: "));
    let tags: Vec<&str> = tags.iter().map(|t| &t["tag: ".len()..]).collect();
    let gone: Vec<&String> = checkpoint
        .parent_ids
        .iter()
        .filter(|p| pruned.contains(*p))
        .collect();
    value["branch_heads"] = json!(branches);
    value["tags"] = json!(tags);
    value["pruned_parent_ids"] = json!(gone);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_id_keeps_the_random_tail_of_a_uuid() {
        let id = "0193aaaa-0000-7000-8000-0123456789ab";
        assert_eq!(short_id(id, false), "0123456789ab");
        assert_eq!(short_id(id, true), id);
        assert_eq!(short_id("abc", false), "abc");
    }
}
