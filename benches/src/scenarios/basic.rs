//! The reference benchmark's create, incremental-create, load and query scenarios.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt_client::{Client, ListFilter, NewCheckpoint, Op, ReadFilter, State, Target};

use super::{files_state, row};
use crate::payload::rng::SplitMix64;

/// A state of about `bytes` bytes in 1 KiB values of incompressible data, as the reference's
/// "large state" fixture builds it (many keys, random content).
fn large_state(bytes: usize, seed: u64) -> State {
    let mut rng = SplitMix64::new(seed);
    let values = bytes.div_ceil(1024);
    (0..values)
        .map(|i| {
            let value: Vec<u8> = (0..1024 / 8)
                .flat_map(|_| rng.next_u64().to_le_bytes())
                .collect();
            (format!("state/key_{i:06}"), Bytes::from(value))
        })
        .collect()
}

/// State sizes of the create scenario, in KiB, with their labels.
const SIZES_KB: [(usize, &str); 4] = [
    (10, "10 KB"),
    (100, "100 KB"),
    (1000, "1 MB"),
    (10_000, "10 MB"),
];

/// Full creates of 10 KB to 10 MB states, `runs` of each, each on a fresh session.
pub(super) async fn creating(client: &Client, run_id: &str, runs: u32) -> anyhow::Result<()> {
    for (n, (kb, label)) in SIZES_KB.into_iter().enumerate() {
        let mut total = Duration::ZERO;
        for run in 0..runs {
            let state = large_state(kb * 1024, (n as u64) << 32 | u64::from(run));
            let session = format!("bench/create/{run_id}/{kb}/{run}");
            let started = Instant::now();
            client.create(NewCheckpoint::full(&session, state)).await?;
            total += started.elapsed();
            client.delete_session(&session).await?;
        }
        let mean = total.as_secs_f64() / f64::from(runs);
        let name = format!("create {label}");
        match kb {
            10 => row(&name, 1.0 / mean, "/s", 100.0, true),
            100 => row(&name, 1.0 / mean, "/s", 50.0, true),
            1000 => row(&name, kb as f64 / 1024.0 / mean, "MB/s", 10.0, true),
            _ => println!(
                "{name:<34} {:>9.1} MB/s (no bar)",
                kb as f64 / 1024.0 / mean
            ),
        }
    }
    Ok(())
}

/// Incremental creates changing 1 to 50 % of a 100-file state, against a full create of it.
pub(super) async fn incremental(client: &Client, run_id: &str, runs: u32) -> anyhow::Result<()> {
    let session = format!("bench/incremental/{run_id}");
    let base_state = files_state(100, "base");
    let started = Instant::now();
    let base = client
        .create(NewCheckpoint::full(&session, base_state.clone()))
        .await?;
    // The full create's cost, averaged over `runs` creates of the same size on fresh sessions.
    let mut full = started.elapsed();
    for run in 1..runs {
        let other = format!("bench/incremental/{run_id}/full-{run}");
        let state = files_state(100, &format!("full {run}"));
        let started = Instant::now();
        client.create(NewCheckpoint::full(&other, state)).await?;
        full += started.elapsed();
        client.delete_session(&other).await?;
    }
    let full = full.as_secs_f64() / f64::from(runs);

    let mut parent = base.id;
    for pct in [1usize, 5, 10, 25, 50] {
        let mut total = Duration::ZERO;
        for run in 0..runs {
            let ops = (0..pct)
                .map(|j| {
                    Op::Put(
                        format!("files/file_{j}/content"),
                        Bytes::from(format!("Modified content {run}-{j}")),
                    )
                })
                .collect();
            let started = Instant::now();
            let cp = client
                .create(NewCheckpoint::incremental(&session, &parent, ops))
                .await?;
            total += started.elapsed();
            parent = cp.id;
        }
        let mean = total.as_secs_f64() / f64::from(runs);
        let name = format!("incremental {pct}% vs full create");
        match pct {
            1 => row(&name, full / mean, "x", 10.0, true),
            10 => row(&name, full / mean, "x", 2.0, true),
            _ => println!("{name:<34} {:>9.1} x    (no bar)", full / mean),
        }
    }
    client.delete_session(&session).await?;
    Ok(())
}

/// Loads of 10 KB to 5 MB checkpoints, `2 * runs` each.
pub(super) async fn loading(client: &Client, run_id: &str, runs: u32) -> anyhow::Result<()> {
    for kb in [10usize, 100, 1000, 5000] {
        let session = format!("bench/load/{run_id}/{kb}");
        let state = large_state(kb * 1024, kb as u64);
        let cp = client.create(NewCheckpoint::full(&session, state)).await?;
        let loads = 2 * runs;
        let started = Instant::now();
        for _ in 0..loads {
            let (_, loaded) = client
                .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
                .await?;
            anyhow::ensure!(
                loaded.len() == kb,
                "load returned {} keys, not {kb}",
                loaded.len()
            );
        }
        let mean = started.elapsed().as_secs_f64() / f64::from(loads);
        let label = if kb >= 1000 {
            format!("load {} MB", kb / 1000)
        } else {
            format!("load {kb} KB")
        };
        match kb {
            10 => row(&label, 1.0 / mean, "/s", 100.0, true),
            1000 => row(&label, kb as f64 / 1024.0 / mean, "MB/s", 50.0, true),
            _ => println!(
                "{label:<34} {:>9.1} MB/s (no bar)",
                kb as f64 / 1024.0 / mean
            ),
        }
        client.delete_session(&session).await?;
    }
    Ok(())
}

/// Listing and search among 1,000 checkpoints of 50 sessions.
pub(super) async fn querying(client: &Client, run_id: &str, runs: u32) -> anyhow::Result<()> {
    let sessions: Vec<String> = (0..50)
        .map(|s| format!("bench/query/{run_id}/session-{s}"))
        .collect();
    let mut heads: Vec<Option<String>> = vec![None; sessions.len()];
    for i in 0..1000usize {
        let s = i % sessions.len();
        let state: State = [("index".to_string(), Bytes::from(format!("test-{i}")))].into();
        let mut new = NewCheckpoint::full(&sessions[s], state)
            .metadata(serde_json::json!({"tag": format!("tag-{}", i % 10), "branch": format!("branch-{}", i % 5)}));
        new.message = format!("test-{i}");
        new.parent_id = heads[s].clone();
        heads[s] = Some(client.create(new).await?.id);
    }
    let target = &sessions[25];
    let by_tag = ListFilter {
        metadata_contains: Some(serde_json::json!({"tag": "tag-5"})),
        ..ListFilter::default()
    };
    let queries = 2 * runs;
    let time = |total: Duration| total.as_secs_f64() * 1000.0 / f64::from(queries);

    let mut totals = [Duration::ZERO; 4];
    for _ in 0..queries {
        let started = Instant::now();
        client.list_checkpoints(target, None, 20, "").await?;
        totals[0] += started.elapsed();
        let started = Instant::now();
        client
            .list_checkpoints_where(target, &by_tag, 100, "")
            .await?;
        totals[1] += started.elapsed();
        let started = Instant::now();
        client.list_sessions(100, "").await?;
        totals[2] += started.elapsed();
        let started = Instant::now();
        client.search(None, "test-5", 100, "").await?;
        totals[3] += started.elapsed();
    }
    row(
        "list by session (1,000 in 50)",
        time(totals[0]),
        "ms",
        10.0,
        false,
    );
    println!(
        "{:<34} {:>9.2} ms   (no bar)",
        "list by tag (metadata)",
        time(totals[1])
    );
    println!(
        "{:<34} {:>9.2} ms   (no bar)",
        "list sessions",
        time(totals[2])
    );
    row("search (1,000 in 50)", time(totals[3]), "ms", 50.0, false);
    for session in &sessions {
        client.delete_session(session).await?;
    }
    Ok(())
}
