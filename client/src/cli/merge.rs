//! `ckpt merge`: three-way merge of a branch or checkpoint into a branch, with per-key
//! resolutions for conflicts.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::{ArgGroup, Args, ValueEnum};
use serde_json::{Value, json};

use ckpt_client::{
    Client, Conflict, ConflictKind, MergeOptions, MergeOutcome, MergeResult, MergeStrategy,
    Resolution,
};

use super::output::{self, OutputFormat, Table};
use super::{Failure, exit, server_not_found};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ckpt merge s1 try-2 --into main --dry-run        what would happen, writing nothing
  ckpt merge s1 try-2 --into main --resolve notes.md=theirs --resolve-value plan.md=@plan.md
  ckpt merge s1 --checkpoint ID --into main --strategy ours")]
#[command(group(ArgGroup::new("source").required(true).args(["source_branch", "checkpoint"])))]
pub(crate) struct MergeArgs {
    /// The session.
    session: String,

    /// The branch to merge from.
    source_branch: Option<String>,

    /// Merge this checkpoint of the session instead of a branch.
    #[arg(long, value_name = "ID")]
    checkpoint: Option<String>,

    /// The branch to merge into.
    #[arg(long, value_name = "TARGET")]
    into: String,

    /// How conflicts without a --resolve are settled: fail (commit nothing and list them),
    /// ours (keep the target's value), theirs (take the source's). `recursive` is a synonym
    /// of fail: merge bases are always found recursively.
    #[arg(long, value_enum, default_value_t = StrategyArg::Fail)]
    strategy: StrategyArg,

    /// Settle one conflicting key: KEY=ours, KEY=theirs or KEY=delete (split at the last `=`).
    /// Repeat for several keys.
    #[arg(long, value_name = "KEY=CHOICE", value_parser = parse_resolve)]
    resolve: Vec<(String, Choice)>,

    /// Settle one conflicting key with the contents of a file: KEY=@FILE (split at the first
    /// `=@`). Repeat for several keys.
    #[arg(long, value_name = "KEY=@FILE", value_parser = parse_resolve_value)]
    resolve_value: Vec<(String, PathBuf)>,

    /// Only report what the merge would do; write nothing.
    #[arg(long)]
    dry_run: bool,

    /// Merge only if the target branch still points at this checkpoint.
    #[arg(long, value_name = "HEAD")]
    expect: Option<String>,

    /// A description stored with the merge checkpoint.
    #[arg(long, short)]
    message: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    /// Commit nothing while any key conflicts.
    Fail,
    /// Conflicts keep the target's value.
    Ours,
    /// Conflicts take the source's value.
    Theirs,
    /// The same as fail.
    Recursive,
}

/// A `--resolve` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    Ours,
    Theirs,
    Delete,
}

/// Parses `KEY=ours|theirs|delete`, splitting at the last `=` since keys may contain `=`.
pub(crate) fn parse_resolve(text: &str) -> Result<(String, Choice), String> {
    let Some((key, choice)) = text.rsplit_once('=') else {
        return Err(format!("expected KEY=ours|theirs|delete, got {text:?}"));
    };
    if key.is_empty() {
        return Err("the key before `=` is empty".into());
    }
    let choice = match choice {
        "ours" => Choice::Ours,
        "theirs" => Choice::Theirs,
        "delete" => Choice::Delete,
        other if other.starts_with('@') => {
            return Err(format!(
                "use --resolve-value {key}={other} to resolve with a file"
            ));
        }
        other => {
            return Err(format!(
                "unknown choice {other:?}: use ours, theirs or delete"
            ));
        }
    };
    Ok((key.to_owned(), choice))
}

/// Parses `KEY=@FILE`, splitting at the first `=@`.
pub(crate) fn parse_resolve_value(text: &str) -> Result<(String, PathBuf), String> {
    let Some((key, file)) = text.split_once("=@") else {
        return Err(format!("expected KEY=@FILE, got {text:?}"));
    };
    if key.is_empty() || file.is_empty() {
        return Err(format!("expected KEY=@FILE with both parts, got {text:?}"));
    }
    Ok((key.to_owned(), PathBuf::from(file)))
}

pub(crate) async fn run(
    client: &Client,
    args: MergeArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let options = options(&args).await?;
    let (source, is_branch) = match (&args.source_branch, &args.checkpoint) {
        (Some(branch), _) => (branch.as_str(), true),
        (None, Some(id)) => (id.as_str(), false),
        (None, None) => {
            return Err(Failure::usage("name a SOURCE_BRANCH or pass --checkpoint ID").into());
        }
    };
    let label = if is_branch {
        format!("branch {source}")
    } else {
        format!("checkpoint {source}")
    };

    let result = client
        .merge(&args.session, &args.into, source, is_branch, options)
        .await
        .map_err(|err| merge_failure(err, &args, &label))?;

    match format {
        OutputFormat::Json => output::print_json(&result_json(&result, args.dry_run))?,
        OutputFormat::Table => output::print(&report(&result, &args, &label))?,
    }
    if result.outcome == MergeOutcome::Conflicted {
        let n = result.conflicts.len();
        return Err(Failure::new(
            exit::CONFLICT,
            format!(
                "{n} conflicting key{}; nothing was written. Settle them with --resolve \
                 KEY=ours|theirs|delete, --resolve-value KEY=@FILE or --strategy ours|theirs",
                if n == 1 { "" } else { "s" }
            ),
        )
        .into());
    }
    Ok(())
}

/// Builds the merge options, reading the files of `--resolve-value`.
async fn options(args: &MergeArgs) -> anyhow::Result<MergeOptions> {
    let mut keys = HashSet::new();
    let mut resolutions = Vec::new();
    for (key, choice) in &args.resolve {
        let resolution = match choice {
            Choice::Ours => Resolution::Ours,
            Choice::Theirs => Resolution::Theirs,
            Choice::Delete => Resolution::Delete,
        };
        resolutions.push((key.clone(), resolution, None, None));
    }
    for (key, path) in &args.resolve_value {
        let value = tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read {} for key {key}", path.display()))?;
        resolutions.push((
            key.clone(),
            Resolution::Value(Bytes::from(value)),
            None,
            None,
        ));
    }
    for (key, ..) in &resolutions {
        if !keys.insert(key.clone()) {
            return Err(Failure::usage(format!("key {key} is resolved more than once")).into());
        }
    }
    let strategy = match args.strategy {
        StrategyArg::Fail | StrategyArg::Recursive => MergeStrategy::Fail,
        StrategyArg::Ours => MergeStrategy::Ours,
        StrategyArg::Theirs => MergeStrategy::Theirs,
    };
    Ok(MergeOptions {
        strategy,
        resolutions,
        dry_run: args.dry_run,
        expected_target_head: args.expect.clone(),
        message: args.message.clone().unwrap_or_default(),
        metadata: None,
        lease_token: None,
    })
}

fn merge_failure(err: ckpt_client::Error, args: &MergeArgs, source: &str) -> anyhow::Error {
    let (session, into) = (&args.session, &args.into);
    match err {
        ckpt_client::Error::Aborted { current_head, .. } => {
            let now = current_head.unwrap_or_else(|| "another checkpoint".into());
            let expected = args.expect.as_deref().unwrap_or("the expected head");
            Failure::new(
                exit::CONFLICT,
                format!(
                    "branch {into} points at {now}, not {expected}; check it with \
                     `ckpt log {session}@{into}` and retry"
                ),
            )
            .into()
        }
        other => {
            let missing_branch =
                matches!(&other, ckpt_client::Error::NotFound(m) if m.starts_with("branch"));
            let hint = if missing_branch {
                format!("list branches with `ckpt branch {session}`")
            } else {
                String::new()
            };
            server_not_found(other, &hint).context(format!("cannot merge {source} into {into}"))
        }
    }
}

/// The outcome in a sentence, then the conflicts as a table.
fn report(result: &MergeResult, args: &MergeArgs, source: &str) -> String {
    let target = format!("{}@{}", args.session, args.into);
    let head = result
        .checkpoint
        .as_ref()
        .map(|c| c.id.as_str())
        .unwrap_or("?");
    let would = if args.dry_run { "would be " } else { "" };
    let mut out = match (result.outcome, args.dry_run) {
        (MergeOutcome::UpToDate, _) => format!("already up to date: {target} contains {source}\n"),
        (MergeOutcome::FastForward, true) => format!("would fast-forward {target} to {source}\n"),
        (MergeOutcome::FastForward, false) => format!("fast-forward: {target} now at {head}\n"),
        (MergeOutcome::Merged, true) => format!("{source} would merge cleanly into {target}\n"),
        (MergeOutcome::Merged, false) => {
            format!("merged {source} into {target}: new checkpoint {head}\n")
        }
        (MergeOutcome::Conflicted, _) => format!("conflicted: {source} into {target}\n"),
    };
    if !result.conflicts.is_empty() {
        if result.outcome != MergeOutcome::Conflicted {
            out.push_str(&format!("resolved conflicts ({would}settled as asked):\n"));
        }
        out.push_str(&conflicts_table(&result.conflicts));
    }
    out
}

pub(crate) fn conflicts_table(conflicts: &[Conflict]) -> String {
    let mut table = Table::new(&["KEY", "KIND", "OURS", "THEIRS"]);
    for conflict in conflicts {
        table.row(vec![
            conflict.key.clone(),
            kind_name(conflict.kind).to_owned(),
            short_hash(&conflict.ours_hash),
            short_hash(&conflict.theirs_hash),
        ]);
    }
    table.render()
}

/// The first 12 hex digits of a value identity, `(deleted)` for a side without the key.
fn short_hash(hash: &str) -> String {
    if hash.is_empty() {
        return "(deleted)".to_owned();
    }
    hash.chars().take(12).collect()
}

fn kind_name(kind: ConflictKind) -> &'static str {
    match kind {
        ConflictKind::BothModified => "both-modified",
        ConflictKind::ModifiedDeleted => "modified-deleted",
        ConflictKind::DeletedModified => "deleted-modified",
        ConflictKind::BothAdded => "both-added",
    }
}

fn result_json(result: &MergeResult, dry_run: bool) -> Value {
    let outcome = match result.outcome {
        MergeOutcome::UpToDate => "up_to_date",
        MergeOutcome::FastForward => "fast_forward",
        MergeOutcome::Merged => "merged",
        MergeOutcome::Conflicted => "conflicted",
    };
    let conflicts: Vec<Value> = result
        .conflicts
        .iter()
        .map(|c| {
            json!({
                "key": c.key,
                "kind": kind_name(c.kind),
                "base_hash": c.base_hash,
                "ours_hash": c.ours_hash,
                "theirs_hash": c.theirs_hash,
            })
        })
        .collect();
    json!({
        "outcome": outcome,
        "dry_run": dry_run,
        "checkpoint": result.checkpoint.as_ref().map(output::checkpoint_json),
        "conflicts": conflicts,
        "merge_base_ids": result.merge_base_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_splits_at_the_last_equals_sign() {
        assert_eq!(
            parse_resolve("a.txt=ours"),
            Ok(("a.txt".into(), Choice::Ours))
        );
        assert_eq!(
            parse_resolve("x=y=theirs"),
            Ok(("x=y".into(), Choice::Theirs))
        );
        assert_eq!(
            parse_resolve("dir/k=delete"),
            Ok(("dir/k".into(), Choice::Delete))
        );
    }

    #[test]
    fn resolve_rejects_bad_choices_with_a_hint() {
        assert!(
            parse_resolve("k")
                .unwrap_err()
                .contains("KEY=ours|theirs|delete")
        );
        assert!(parse_resolve("=ours").unwrap_err().contains("empty"));
        assert!(
            parse_resolve("k=mine")
                .unwrap_err()
                .contains("ours, theirs or delete")
        );
        assert!(
            parse_resolve("k=@f")
                .unwrap_err()
                .contains("--resolve-value k=@f")
        );
    }

    #[test]
    fn resolve_value_splits_at_the_first_at_sign() {
        assert_eq!(
            parse_resolve_value("k=@/tmp/a=@b"),
            Ok(("k".into(), PathBuf::from("/tmp/a=@b")))
        );
        assert!(parse_resolve_value("k=file").is_err());
        assert!(parse_resolve_value("k=@").is_err());
    }

    #[test]
    fn conflicts_show_short_hashes() {
        let conflict = Conflict {
            key: "notes.md".into(),
            kind: ConflictKind::ModifiedDeleted,
            base_hash: "00".repeat(32),
            ours_hash: "ab".repeat(32),
            theirs_hash: String::new(),
        };
        assert_eq!(
            conflicts_table(&[conflict]),
            "KEY       KIND              OURS          THEIRS\n\
             notes.md  modified-deleted  abababababab  (deleted)\n"
        );
    }
}
