//! `ckpt gc`, `verify` and `retention`: keeping the store small and checking it is whole.

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::HumanBytes;
use serde_json::{Value, json};

use ckpt_client::{
    Client, CollectOptions, CollectReport, Collection, RetentionDecision, RetentionPolicy,
    VerifyProblem, VerifyReport,
};

use super::log::short_id;
use super::output::{self, OutputFormat};
use super::{Failure, exit, progress, server_not_found};

/// Checkpoints checked per `Verify` call unless --slice says otherwise (the server's default).
const DEFAULT_SLICE: u32 = 1000;

const POLICY_HELP: &str = "\
Policy syntax:
  Comma-separated rules, any subset in any order; a checkpoint stays when any rule keeps it:
    last=N             the N newest checkpoints
    within=DURATION    every checkpoint at most DURATION older than the newest one (36h, 7d,
                       2weeks...)
    hourly=N           the newest checkpoint of each of the last N hours that have one
    daily=N            ... of each of the last N days (UTC) that have one
    weekly=N           ... of each of the last N ISO weeks
    monthly=N          ... of each of the last N months
    yearly=N           ... of each of the last N years
  `none` keeps everything. Branch heads and tagged checkpoints are always kept, whatever the
  policy. A branch's policy overrides its session's, which overrides the server's default.
  Checkpoints are only dropped when `ckpt gc` (or the server's own schedule) runs.

Examples:
  ckpt retention get --session s1
  ckpt retention set --session s1 last=20,daily=7,weekly=4
  ckpt retention set --session s1 --branch scratch last=3
  ckpt retention clear --session s1 --branch scratch";

/// Runs one collection pass.
#[derive(Debug, Args)]
#[command(after_help = "\
A pass first applies retention (see `ckpt retention --help`): in every branch, checkpoints
the policy no longer keeps are dropped. Then blobs no remaining checkpoint references, and
uploads abandoned long enough ago, are deleted from storage. Writes go on meanwhile. Only one
pass runs at a time in a deployment; a second one fails with exit code 4.

Examples:
  ckpt gc --dry-run --explain                 what retention would keep and drop, and why
  ckpt gc --dry-run --session s1 --explain    the same for one session
  ckpt gc                                     collect for real
  ckpt gc --no-retention                      only free what nothing references already")]
pub(crate) struct GcArgs {
    /// Decide and count, but delete nothing.
    #[arg(long)]
    dry_run: bool,

    /// Apply retention to this session only. Blobs nothing references are still freed
    /// store-wide.
    #[arg(long, value_name = "SESSION", value_parser = not_blank)]
    session: Option<String>,

    /// Drop no checkpoint; only free blobs and abandoned uploads that nothing references
    /// already.
    #[arg(long, conflicts_with_all = ["session", "explain"])]
    no_retention: bool,

    /// Print every retention decision: keep or drop, the checkpoint, when it was created, its
    /// session/branch and why it is kept. Usually combined with --dry-run.
    #[arg(long)]
    explain: bool,
}

/// Checks that every blob a checkpoint needs is present and hashes right.
#[derive(Debug, Args)]
#[command(after_help = "\
The store is checked in slices of --slice checkpoints, then the object store is listed for
orphans: objects no checkpoint knows that are older than the server's upload lease (24h by
default), such as uploads that never finished. Younger ones may be uploads in progress and
are not reported. Orphans are harmless; `ckpt gc` deletes them, or pass --remove-orphans.
Files in the object store that checkpointd did not write are counted and listed, never removed.
Blob counts are per slice: a blob shared by checkpoints of two slices is read in each.

Output: one line per problem, `missing|damaged CHECKPOINT BLOB DETAIL`, then one line per
orphan, `orphan KEY`, then one per foreign file, `foreign KEY`.

Exit codes: 0 when no blob is missing or damaged (orphans do not count), 6 when some are.

Examples:
  ckpt verify                          check everything
  ckpt verify --session s1             check one session's checkpoints
  ckpt verify --slice 200              check everything, 200 checkpoints per call
  ckpt verify --cursor ''              check the first slice only, print the next cursor
  ckpt verify --cursor CURSOR          resume there: check one more slice")]
pub(crate) struct VerifyArgs {
    /// Check this session's checkpoints only; every checkpoint and every object by default.
    #[arg(long, value_name = "SESSION", value_parser = not_blank)]
    session: Option<String>,

    /// Checkpoints checked per call to the server (objects: ten times as many).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SLICE,
          value_parser = clap::value_parser!(u32).range(1..))]
    slice: u32,

    /// Check only the slice starting at this cursor (printed by an earlier run; '' for the
    /// first slice), then print the cursor of the next one. Without it, every slice is
    /// checked.
    #[arg(long, value_name = "CURSOR")]
    cursor: Option<String>,

    /// Delete the orphans found, if they are older than the server's upload lease.
    #[arg(long)]
    remove_orphans: bool,
}

/// Shows or changes which checkpoints a session or branch keeps.
#[derive(Debug, Args)]
#[command(after_help = POLICY_HELP)]
pub(crate) struct RetentionArgs {
    #[command(subcommand)]
    command: RetentionCommand,
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// Show the policy that applies to a session or branch, and where it comes from.
    Get(Scope),
    /// Give a session or branch its own policy.
    #[command(after_help = POLICY_HELP)]
    Set {
        #[command(flatten)]
        scope: Scope,
        /// The policy, e.g. `last=20,daily=7`, or `none` to keep everything (see below).
        policy: String,
    },
    /// Remove a session's or branch's own policy: the session's policy (for a branch) or the
    /// server's default applies again.
    Clear(Scope),
}

/// The session, or one branch of it, a policy applies to.
#[derive(Debug, Args)]
struct Scope {
    /// The session.
    #[arg(long, value_name = "SESSION", value_parser = not_blank)]
    session: String,

    /// One branch of the session; the whole session when absent.
    #[arg(long, value_name = "BRANCH", value_parser = not_blank)]
    branch: Option<String>,
}

/// Refuses a blank value: an empty shell variable must not widen a command's scope.
fn not_blank(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    Ok(value.to_owned())
}

pub(crate) async fn gc(client: &Client, args: GcArgs, format: OutputFormat) -> anyhow::Result<()> {
    let options = CollectOptions {
        dry_run: args.dry_run,
        session_id: args.session,
        skip_retention: args.no_retention,
        explain: args.explain,
    };

    let spinner = progress::spinner("collecting");
    let result = client.collect(&options).await;
    spinner.finish_and_clear();
    let collection = result.map_err(collect_failure)?;

    match format {
        OutputFormat::Json => output::print_json(&collection_json(&collection))?,
        OutputFormat::Table => {
            let mut text = report_text(&collection.report);
            if options.explain {
                text.push('\n');
                for decision in &collection.decisions {
                    text.push_str(&decision_line(decision));
                }
            }
            output::print(&text)?
        }
    }
    Ok(())
}

/// Explains a failed collection; another pass running is the one a user can act on.
fn collect_failure(err: ckpt_client::Error) -> anyhow::Error {
    match err {
        // The server's message says why (another pass is running) and what to do.
        ckpt_client::Error::Aborted { .. } => Failure::new(exit::CONFLICT, err.to_string()).into(),
        other => server_not_found(other, "").context("cannot collect"),
    }
}

pub(crate) async fn verify(
    client: &Client,
    args: VerifyArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let session = args.session.as_deref();
    let one_slice = args.cursor.is_some();

    let spinner = progress::spinner("verifying");
    let result = match args.cursor.as_deref() {
        Some(cursor) => {
            client
                .verify(session, Some(cursor), args.slice, args.remove_orphans)
                .await
        }
        None => {
            client
                .verify_all(session, args.slice, args.remove_orphans)
                .await
        }
    };
    spinner.finish_and_clear();
    let report = result.map_err(|err| server_not_found(err, "").context("cannot verify"))?;

    match format {
        OutputFormat::Json => output::print_json(&verify_json(&report))?,
        OutputFormat::Table => output::print(&verify_text(&report, one_slice))?,
    }
    if !report.problems.is_empty() {
        let problems = plural(report.problems.len() as u64, "problem");
        return Err(Failure::new(
            exit::DATA_LOSS,
            format!("verification found {problems}: blobs missing or damaged"),
        )
        .into());
    }
    Ok(())
}

pub(crate) async fn retention(
    client: &Client,
    args: RetentionArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let (result, action) = match &args.command {
        RetentionCommand::Get(scope) => {
            let branch = scope.branch.as_deref();
            (
                client.retention_policy(&scope.session, branch).await,
                "read",
            )
        }
        RetentionCommand::Set { scope, policy } => {
            let branch = scope.branch.as_deref();
            let result = client
                .set_retention_policy(&scope.session, branch, policy)
                .await;
            (result, "set")
        }
        RetentionCommand::Clear(scope) => {
            let branch = scope.branch.as_deref();
            let result = client.clear_retention_policy(&scope.session, branch).await;
            (result, "clear")
        }
    };
    let policy = result.map_err(|err| {
        server_not_found(err, "").context(format!("cannot {action} the retention policy"))
    })?;

    match format {
        OutputFormat::Json => output::print_json(&policy_json(&policy))?,
        OutputFormat::Table => output::print(&policy_line(&policy))?,
    }
    Ok(())
}

/// `s1/main: last=3 (from branch)`.
fn policy_line(policy: &RetentionPolicy) -> String {
    let scope = match &policy.branch {
        Some(branch) => format!("{}/{branch}", policy.session_id),
        None => policy.session_id.clone(),
    };
    format!("{scope}: {} (from {})\n", policy.policy, policy.source)
}

/// A few lines for a person: what was (or would be) deleted, freed and how long it took.
fn report_text(report: &CollectReport) -> String {
    let (deleted, freed) = if report.dry_run {
        ("would be deleted", "would be freed")
    } else {
        ("deleted", "freed")
    };
    let mut text = if report.dry_run {
        "collection dry run: nothing was deleted\n".to_owned()
    } else {
        format!("collection pass done (epoch {})\n", report.epoch)
    };

    text.push_str(&format!(
        "checkpoints: {} {deleted} (of {} examined in {})\n",
        report.checkpoints_deleted,
        report.checkpoints_examined,
        plural(report.sessions_examined, "session"),
    ));
    if !report.groups_refused.is_empty() {
        text.push_str(&format!(
            "refused:     {} (the policy would drop every checkpoint; all kept)\n",
            report.groups_refused.join(", ")
        ));
    }
    text.push_str(&format!(
        "blobs:       {}, {}, {} {deleted}; {} {freed}; {} still live\n",
        plural(report.chunks_deleted, "chunk"),
        plural(report.pages_deleted, "page"),
        plural(report.objects_deleted, "object"),
        HumanBytes(report.bytes_freed),
        report.blobs_live,
    ));
    text.push_str(&format!(
        "orphans:     {} {deleted}; {} {freed}\n",
        report.orphans_deleted,
        HumanBytes(report.orphan_bytes_freed),
    ));
    text.push_str(&format!(
        "took:        retain {}, mark {}, sweep {}, reclaim {}\n",
        duration(report.retain),
        duration(report.mark),
        duration(report.sweep),
        duration(report.reclaim),
    ));
    text
}

/// `keep  0123456789ab  2026-12-03 10:00:00  s1/main  head of branch main; tag v1`.
fn decision_line(decision: &RetentionDecision) -> String {
    let verdict = if decision.keep { "keep" } else { "drop" };
    let line = format!(
        "{verdict}  {}  {}  {}/{}  {}",
        short_id(&decision.checkpoint_id, false),
        output::short_time(&decision.created_at),
        decision.session_id,
        decision.branch,
        decision.reasons.join("; "),
    );
    format!("{}\n", line.trim_end())
}

/// Totals, then one line per problem and per orphan; for a single slice, where to resume.
fn verify_text(report: &VerifyReport, one_slice: bool) -> String {
    let mut text = format!(
        "checked {}: {} ({}); listed {}\n",
        plural(report.checkpoints_checked, "checkpoint"),
        plural(report.blobs_checked, "blob"),
        HumanBytes(report.bytes_checked),
        plural(report.objects_listed, "object"),
    );
    text.push_str(&format!(
        "found {}, {} ({} removed)\n",
        plural(report.problems.len() as u64, "problem"),
        plural(report.orphans.len() as u64, "orphan"),
        report.orphans_removed,
    ));
    for problem in &report.problems {
        text.push_str(&problem_line(problem));
    }
    for orphan in &report.orphans {
        text.push_str(&format!("orphan {orphan}\n"));
    }
    for key in &report.foreign {
        text.push_str(&format!("foreign {key}\n"));
    }
    if report.foreign_objects > 0 {
        text.push_str(&format!(
            "{} in the object store not made by checkpointd (left alone)\n",
            plural(report.foreign_objects, "object")
        ));
    }
    if one_slice {
        match &report.next_cursor {
            Some(cursor) => text.push_str(&format!("next cursor: {cursor}\n")),
            None => text.push_str("done: this was the last slice\n"),
        }
    }
    text
}

/// `missing CHECKPOINT BLOB DETAIL`.
fn problem_line(problem: &VerifyProblem) -> String {
    format!(
        "{} {} {} {}\n",
        problem.kind, problem.checkpoint_id, problem.blob, problem.detail
    )
}

fn collection_json(collection: &Collection) -> Value {
    let report = &collection.report;
    json!({
        "report": {
            "dry_run": report.dry_run,
            "epoch": report.epoch,
            "sessions_examined": report.sessions_examined,
            "checkpoints_examined": report.checkpoints_examined,
            "checkpoints_deleted": report.checkpoints_deleted,
            "groups_refused": report.groups_refused,
            "blobs_live": report.blobs_live,
            "chunks_deleted": report.chunks_deleted,
            "pages_deleted": report.pages_deleted,
            "bytes_freed": report.bytes_freed,
            "objects_deleted": report.objects_deleted,
            "orphans_deleted": report.orphans_deleted,
            "orphan_bytes_freed": report.orphan_bytes_freed,
            "retain_ms": millis(report.retain),
            "mark_ms": millis(report.mark),
            "sweep_ms": millis(report.sweep),
            "reclaim_ms": millis(report.reclaim),
        },
        "decisions": collection.decisions.iter().map(decision_json).collect::<Vec<_>>(),
    })
}

fn decision_json(decision: &RetentionDecision) -> Value {
    json!({
        "session_id": decision.session_id,
        "branch": decision.branch,
        "checkpoint_id": decision.checkpoint_id,
        "created_at": output::rfc3339(&decision.created_at),
        "keep": decision.keep,
        "reasons": decision.reasons,
        "policy": decision.policy,
    })
}

fn verify_json(report: &VerifyReport) -> Value {
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|p| {
            json!({
                "checkpoint_id": p.checkpoint_id,
                "blob": p.blob,
                "kind": p.kind,
                "detail": p.detail,
            })
        })
        .collect();
    json!({
        "checkpoints_checked": report.checkpoints_checked,
        "blobs_checked": report.blobs_checked,
        "bytes_checked": report.bytes_checked,
        "objects_listed": report.objects_listed,
        "problems": problems,
        "orphans": report.orphans,
        "orphans_removed": report.orphans_removed,
        "foreign_objects": report.foreign_objects,
        "foreign": report.foreign,
        "next_cursor": report.next_cursor,
    })
}

fn policy_json(policy: &RetentionPolicy) -> Value {
    json!({
        "session_id": policy.session_id,
        "branch": policy.branch,
        "policy": policy.policy,
        "source": policy.source,
    })
}

/// `1 chunk`, `3 chunks`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Milliseconds under a second, seconds with one decimal above: `850ms`, `1.5s`.
fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    format!("{:.1}s", d.as_secs_f64())
}

/// Whole milliseconds for JSON; the report's durations came from whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn report() -> CollectReport {
        CollectReport {
            dry_run: false,
            epoch: 9,
            sessions_examined: 2,
            checkpoints_examined: 30,
            checkpoints_deleted: 12,
            groups_refused: vec![],
            blobs_live: 400,
            chunks_deleted: 50,
            pages_deleted: 1,
            bytes_freed: 1_048_576,
            objects_deleted: 51,
            orphans_deleted: 1,
            orphan_bytes_freed: 10,
            retain: Duration::from_millis(3),
            mark: Duration::from_millis(1_500),
            sweep: Duration::ZERO,
            reclaim: Duration::from_millis(42),
        }
    }

    fn decision(keep: bool, reasons: &[&str]) -> RetentionDecision {
        RetentionDecision {
            session_id: "s1".into(),
            branch: "main".into(),
            checkpoint_id: "0193aaaa-0000-7000-8000-0123456789ab".into(),
            created_at: Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap(),
            keep,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            policy: "last=1".into(),
        }
    }

    #[test]
    fn blank_sessions_and_branches_are_refused() {
        assert!(not_blank("").is_err());
        assert!(not_blank("  ").is_err());
        assert_eq!(not_blank("s1").unwrap(), "s1");
    }

    #[test]
    fn report_text_states_what_was_deleted_and_freed() {
        assert_eq!(
            report_text(&report()),
            "collection pass done (epoch 9)\n\
             checkpoints: 12 deleted (of 30 examined in 2 sessions)\n\
             blobs:       50 chunks, 1 page, 51 objects deleted; 1.00 MiB freed; 400 still live\n\
             orphans:     1 deleted; 10 B freed\n\
             took:        retain 3ms, mark 1.5s, sweep 0ms, reclaim 42ms\n"
        );
    }

    #[test]
    fn report_text_of_a_dry_run_says_nothing_was_deleted() {
        let report = CollectReport {
            dry_run: true,
            groups_refused: vec!["s2/main".into(), "s3/x".into()],
            ..report()
        };
        assert_eq!(
            report_text(&report),
            "collection dry run: nothing was deleted\n\
             checkpoints: 12 would be deleted (of 30 examined in 2 sessions)\n\
             refused:     s2/main, s3/x (the policy would drop every checkpoint; all kept)\n\
             blobs:       50 chunks, 1 page, 51 objects would be deleted; 1.00 MiB would be \
             freed; 400 still live\n\
             orphans:     1 would be deleted; 10 B would be freed\n\
             took:        retain 3ms, mark 1.5s, sweep 0ms, reclaim 42ms\n"
        );
    }

    #[test]
    fn decision_line_shows_verdict_short_id_time_group_and_reasons() {
        assert_eq!(
            decision_line(&decision(true, &["head of branch main", "tag v1"])),
            "keep  0123456789ab  2026-12-03 10:00:00  s1/main  head of branch main; tag v1\n"
        );
        assert_eq!(
            decision_line(&decision(false, &[])),
            "drop  0123456789ab  2026-12-03 10:00:00  s1/main\n"
        );
    }

    fn verify_report() -> VerifyReport {
        VerifyReport {
            checkpoints_checked: 3,
            blobs_checked: 1,
            bytes_checked: 2048,
            objects_listed: 0,
            problems: vec![VerifyProblem {
                checkpoint_id: "c1".into(),
                blob: "b1".into(),
                kind: "missing".into(),
                detail: "no object at chunks/b1".into(),
            }],
            orphans: vec!["chunks/zz".into()],
            orphans_removed: 0,
            foreign_objects: 1,
            foreign: vec!["chunks/notes.txt".into()],
            next_cursor: Some("k:42".into()),
        }
    }

    #[test]
    fn verify_text_lists_totals_problems_and_orphans() {
        assert_eq!(
            verify_text(&verify_report(), false),
            "checked 3 checkpoints: 1 blob (2.00 KiB); listed 0 objects\n\
             found 1 problem, 1 orphan (0 removed)\n\
             missing c1 b1 no object at chunks/b1\n\
             orphan chunks/zz\n\
             foreign chunks/notes.txt\n\
             1 object in the object store not made by checkpointd (left alone)\n"
        );
    }

    #[test]
    fn verify_text_of_one_slice_says_where_to_resume() {
        assert!(verify_text(&verify_report(), true).ends_with("(left alone)\nnext cursor: k:42\n"));
        let last = VerifyReport {
            next_cursor: None,
            ..VerifyReport::default()
        };
        assert_eq!(
            verify_text(&last, true),
            "checked 0 checkpoints: 0 blobs (0 B); listed 0 objects\n\
             found 0 problems, 0 orphans (0 removed)\n\
             done: this was the last slice\n"
        );
    }

    #[test]
    fn policy_line_names_the_scope_and_the_source() {
        let mut policy = RetentionPolicy {
            session_id: "s1".into(),
            branch: Some("main".into()),
            policy: "last=3,daily=7".into(),
            source: "branch".into(),
        };
        assert_eq!(
            policy_line(&policy),
            "s1/main: last=3,daily=7 (from branch)\n"
        );
        policy.branch = None;
        policy.source = "default".into();
        assert_eq!(policy_line(&policy), "s1: last=3,daily=7 (from default)\n");
    }

    #[test]
    fn durations_are_milliseconds_under_a_second() {
        assert_eq!(duration(Duration::ZERO), "0ms");
        assert_eq!(duration(Duration::from_millis(999)), "999ms");
        assert_eq!(duration(Duration::from_millis(61_250)), "61.2s");
    }

    #[test]
    fn collection_json_reports_durations_in_milliseconds() {
        let collection = Collection {
            report: report(),
            decisions: vec![decision(false, &[])],
        };
        let value = collection_json(&collection);
        assert_eq!(value["report"]["mark_ms"], 1_500);
        assert_eq!(
            value["decisions"][0]["created_at"],
            "2026-12-03T10:00:00.000Z"
        );
        assert_eq!(value["decisions"][0]["keep"], false);
    }

    #[test]
    fn new_subcommands_parse() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let cli = parse(&[
            "ckpt",
            "retention",
            "set",
            "--session",
            "s1",
            "--branch",
            "b",
            "last=3",
        ]);
        let Command::Retention(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let RetentionCommand::Set { scope, policy } = args.command else {
            panic!("parsed as {:?}", args.command);
        };
        assert_eq!((scope.session.as_str(), policy.as_str()), ("s1", "last=3"));
        assert_eq!(scope.branch.as_deref(), Some("b"));

        let cli = parse(&["ckpt", "verify", "--cursor", "k:1", "--remove-orphans"]);
        let Command::Verify(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.slice, DEFAULT_SLICE);
        assert_eq!(args.cursor.as_deref(), Some("k:1"));

        // An empty cursor asks for the first slice alone.
        let cli = parse(&["ckpt", "verify", "--cursor", ""]);
        let Command::Verify(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.cursor.as_deref(), Some(""));

        parse(&[
            "ckpt",
            "--output",
            "json",
            "gc",
            "--dry-run",
            "--session",
            "s1",
            "--explain",
        ]);
        parse(&["ckpt", "retention", "get", "--session", "s1"]);
        parse(&["ckpt", "retention", "clear", "--session", "s1"]);
    }

    #[test]
    fn conflicting_or_empty_flags_are_usage_errors() {
        for args in [
            &["ckpt", "gc", "--no-retention", "--explain"][..],
            &["ckpt", "gc", "--no-retention", "--session", "s1"],
            &["ckpt", "verify", "--slice", "0"],
            &["ckpt", "retention", "set", "--session", "s1"],
            &["ckpt", "retention", "get"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} parsed");
        }
    }
}
