//! `ckpt-bench scenarios`: the reference benchmark's scenarios, end to end over gRPC, each
//! figure printed beside the reference bar: creates, incremental creates, loads, queries,
//! branching, merging and collection.

mod basic;
mod collection;

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use ckpt_client::{Client, MergeOptions, MergeOutcome, NewCheckpoint, State};
use clap::{Args, ValueEnum};

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Full creates of 10 KB, 100 KB, 1 MB and 10 MB states.
    Creating,
    /// Incremental creates changing 1, 5, 10, 25 and 50 % of a 100-file state.
    Incremental,
    /// Loads of 10 KB, 100 KB, 1 MB and 5 MB checkpoints.
    Loading,
    /// Listing and search among 1,000 checkpoints of 50 sessions.
    Querying,
    /// Branches of checkpoints from one root: linear 1x100, shallow 10x10, deep 5x20, wide 50x2.
    Branching,
    /// Merges of 200-file states with 0, 10, 50 and 100 conflicting files.
    Merging,
    /// Collection of 1,000 checkpoints aged over 90 days under 7-, 30- and 60-day retention
    /// (needs `--database`).
    Collection,
}

#[derive(Debug, Args)]
pub(crate) struct ScenarioArgs {
    /// Server to run against.
    #[arg(long, env = "CKPT_SERVER", default_value = "http://127.0.0.1:7777")]
    server: String,
    /// API key for a server that requires one (an admin key: the scenarios collect).
    #[arg(long, env = "CKPT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Scenarios to run (all by default).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Merges per conflict count.
    #[arg(long, default_value_t = 10)]
    merge_runs: u32,
    /// Repetitions of each create, incremental create and load (the reference's counts: 10
    /// creates, 20 incremental creates and 20 loads, 20 queries); loads and queries run twice
    /// this many.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The server's catalog (`postgres://…` or the SQLite file, `DATA_DIR/catalog.db`), for
    /// the collection scenario to age its checkpoints; without it that scenario is skipped.
    #[arg(long, env = "CKPT_BENCH_DATABASE")]
    database: Option<String>,
}

pub(crate) async fn run(args: ScenarioArgs) -> anyhow::Result<()> {
    let mut builder = Client::builder(args.server.clone());
    if let Some(key) = args.api_key.as_deref().filter(|key| !key.trim().is_empty()) {
        builder = builder.api_key(key);
    }
    let client = builder
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.server))?;
    let run_id = format!("{:x}", rand_u64());
    let all = args.only.is_empty();
    println!(
        "{:<34} {:>14} {:>16} {:>8}",
        "scenario", "figure", "reference bar", "ratio"
    );
    if all || args.only.contains(&Scenario::Creating) {
        basic::creating(&client, &run_id, args.runs).await?;
    }
    if all || args.only.contains(&Scenario::Incremental) {
        basic::incremental(&client, &run_id, 2 * args.runs).await?;
    }
    if all || args.only.contains(&Scenario::Loading) {
        basic::loading(&client, &run_id, args.runs).await?;
    }
    if all || args.only.contains(&Scenario::Querying) {
        basic::querying(&client, &run_id, args.runs).await?;
    }
    if all || args.only.contains(&Scenario::Branching) {
        branching(&client, &run_id).await?;
    }
    if all || args.only.contains(&Scenario::Merging) {
        merging(&client, &run_id, args.merge_runs).await?;
    }
    if all || args.only.contains(&Scenario::Collection) {
        match &args.database {
            Some(spec) => {
                let catalog = collection::Catalog::open(spec).await?;
                collection::collection(&client, &run_id, &catalog).await?;
            }
            None => println!(
                "{:<34} skipped: needs --database to age checkpoints",
                "collection"
            ),
        }
    }
    Ok(())
}

fn rand_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    nanos.as_nanos() as u64 ^ u64::from(std::process::id())
}

/// A state of `files` small files, as the reference fixtures build them.
fn files_state(files: usize, tag: &str) -> State {
    (0..files)
        .map(|i| {
            (
                format!("files/file_{i}/content"),
                Bytes::from(format!("content of file {i} ({tag})\n").repeat(20)),
            )
        })
        .collect()
}

fn row(name: &str, figure: f64, unit: &str, bar: f64, higher_is_better: bool) {
    let ratio = if higher_is_better {
        figure / bar
    } else {
        bar / figure
    };
    let op = if higher_is_better { ">" } else { "<" };
    println!(
        "{name:<34} {:>9.1} {unit:<4} {op:>6} {bar:>5} {unit:<4} {ratio:>7.1}x",
        figure
    );
}

async fn branching(client: &Client, run_id: &str) -> anyhow::Result<()> {
    let session = format!("bench/branching/{run_id}");
    let base = files_state(10, "base");
    let root = client
        .create(NewCheckpoint::full(&session, base.clone()))
        .await?;
    for (pattern, branches, per_branch, bar) in [
        ("linear", 1, 100, 50.0),
        ("shallow", 10, 10, 0.0),
        ("deep", 5, 20, 0.0),
        ("wide", 50, 2, 100.0),
    ] {
        let started = Instant::now();
        for b in 0..branches {
            let name = format!("{pattern}-branch-{b}");
            client.create_branch(&session, &name, &root.id).await?;
            let mut parent = root.id.clone();
            for c in 0..per_branch {
                let mut state = base.clone();
                state.insert("checkpoint".into(), Bytes::from(c.to_string()));
                let cp = client
                    .create(
                        NewCheckpoint::full(&session, state)
                            .branch(&name)
                            .parent(&parent),
                    )
                    .await?;
                parent = cp.id;
            }
        }
        let rate = f64::from(branches * per_branch) / started.elapsed().as_secs_f64();
        let label = format!("branching {pattern} {branches}x{per_branch}");
        if bar > 0.0 {
            row(&label, rate, "/s", bar, true);
        } else {
            println!("{label:<34} {rate:>9.1} /s   (no bar)");
        }
    }
    client.delete_session(&session).await?;
    Ok(())
}

async fn merging(client: &Client, run_id: &str, runs: u32) -> anyhow::Result<()> {
    for conflicts in [0usize, 10, 50, 100] {
        let mut total = Duration::ZERO;
        let mut seen_conflicts = 0;
        for run in 0..runs {
            let session = format!("bench/merging/{run_id}/{conflicts}-{run}");
            let base_state = files_state(200, "base");
            let base = client
                .create(NewCheckpoint::full(&session, base_state.clone()))
                .await?;
            client.create_branch(&session, "branch1", &base.id).await?;
            client.create_branch(&session, "branch2", &base.id).await?;
            let mut one = base_state.clone();
            for i in 0..100 {
                one.insert(
                    format!("files/file_{i}/content"),
                    Bytes::from(format!("Branch1 modification {i}")),
                );
            }
            let start = 100 - conflicts;
            let mut two = base_state;
            for i in start..start + 100 {
                two.insert(
                    format!("files/file_{i}/content"),
                    Bytes::from(format!("Branch2 modification {i}")),
                );
            }
            client
                .create(
                    NewCheckpoint::full(&session, one)
                        .branch("branch1")
                        .parent(&base.id),
                )
                .await?;
            client
                .create(
                    NewCheckpoint::full(&session, two)
                        .branch("branch2")
                        .parent(&base.id),
                )
                .await?;

            let started = Instant::now();
            let merged = client
                .merge(
                    &session,
                    "branch2",
                    "branch1",
                    true,
                    MergeOptions::default(),
                )
                .await?;
            total += started.elapsed();
            seen_conflicts = merged.conflicts.len();
            let expected = if conflicts == 0 {
                MergeOutcome::Merged
            } else {
                MergeOutcome::Conflicted
            };
            anyhow::ensure!(
                merged.outcome == expected,
                "merge with {conflicts} conflicts: {:?}",
                merged.outcome
            );
            client.delete_session(&session).await?;
        }
        anyhow::ensure!(
            seen_conflicts == conflicts,
            "expected {conflicts} conflicts, saw {seen_conflicts}"
        );
        let mean = total.as_secs_f64() / f64::from(runs);
        let label = format!("merge, {conflicts} conflicts");
        match conflicts {
            0 => row(&label, 1.0 / mean, "/s", 10.0, true),
            100 => row(&label, mean * 1000.0, "ms", 1000.0, false),
            _ => println!("{label:<34} {:>9.1} ms   (no bar)", mean * 1000.0),
        }
    }
    Ok(())
}
