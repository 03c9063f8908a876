//! Collection under load and under kill -9: writers, merges, deletes and passes running
//! together, and a collector process killed at random points.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt_client::{
    Client, CollectOptions, Error, MergeOptions, NewCheckpoint, ReadFilter, State, Target,
};
use common::{Process, Setup, TestEnv, free_port, noise, spawn_server_with, transcript};

/// How long the soak runs on each set-up.
const SOAK: Duration = Duration::from_secs(8);

/// Values drawn from a small pool, so writes keep deduplicating against chunks that passes
/// are about to free.
fn pooled(seed: u64) -> Bytes {
    match seed % 3 {
        0 => transcript(2_000, seed).into(),
        _ => noise(20_000, seed % 10).into(),
    }
}

fn state_of(step: u64, writer: u64) -> State {
    (0..3)
        .map(|k| (format!("k{k}"), pooled(step * 7 + k * 13 + writer)))
        .collect()
}

/// Checkpoints a client was told were committed, with the state each must load as.
type Acked = Arc<Mutex<HashMap<String, State>>>;

async fn writer(client: Client, session: String, n: u64, acked: Acked, until: Instant) {
    let mut head: Option<String> = None;
    let mut step = 0;
    while Instant::now() < until {
        step += 1;
        let state = state_of(step, n);
        let mut new = NewCheckpoint::full(session.clone(), state.clone());
        new.parent_id = head.clone();
        match client.create(new).await {
            Ok(cp) => {
                acked.lock().unwrap().insert(cp.id.clone(), state);
                head = Some(cp.id);
            }
            // A pass took a reused chunk away mid-write: retrying is the documented answer.
            Err(Error::Aborted { .. }) => {}
            Err(e) => panic!("writer {n}: {e}"),
        }
        if step % 4 == 0
            && let Some(h) = &head
        {
            merge_side(&client, &session, h, step, &acked).await;
            head = client
                .get_branch(&session, "main")
                .await
                .ok()
                .map(|b| b.head);
        }
    }
}

/// Forks a side branch off `head`, writes one checkpoint there and merges it back.
async fn merge_side(client: &Client, session: &str, head: &str, step: u64, acked: &Acked) {
    let side = format!("side-{step}");
    client.create_branch(session, &side, head).await.unwrap();
    let mut state = client
        .read_state(Target::checkpoint(head), ReadFilter::default())
        .await
        .unwrap()
        .1;
    state.insert("side".into(), pooled(step + 1_000));
    let mut new = NewCheckpoint::full(session.to_owned(), state.clone()).branch(&side);
    new.parent_id = Some(head.to_owned());
    let side_cp = client.create(new).await;
    let Ok(side_cp) = side_cp else { return };
    acked
        .lock()
        .unwrap()
        .insert(side_cp.id.clone(), state.clone());
    match client
        .merge(session, "main", &side, true, MergeOptions::default())
        .await
    {
        Ok(result) => {
            if let Some(cp) = result.checkpoint {
                acked.lock().unwrap().insert(cp.id, state);
            }
        }
        Err(Error::Aborted { .. }) => {}
        Err(e) => panic!("merge: {e}"),
    }
}

/// Deletes random checkpoints the writers made (heads and tagged ones are refused).
async fn deleter(client: Client, acked: Acked, until: Instant) {
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let victim = {
            let acked = acked.lock().unwrap();
            let len = acked.len().max(1);
            acked.keys().nth((n as usize * 7919) % len).cloned()
        };
        if let Some(id) = victim {
            match client.delete_checkpoint(&id).await {
                Ok(()) => {
                    acked.lock().unwrap().remove(&id);
                }
                Err(Error::FailedPrecondition(_) | Error::NotFound(_)) => {}
                Err(e) => panic!("delete: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn collector(client: Client, until: Instant) -> u64 {
    let mut passes = 0;
    while Instant::now() < until {
        match client.collect(&CollectOptions::default()).await {
            Ok(_) => passes += 1,
            Err(Error::Aborted { .. }) => {}
            Err(e) => panic!("collect: {e}"),
        }
    }
    passes
}

async fn writers_merges_deletes_and_collections_together_lose_nothing(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = env.client.clone();
    let acked: Acked = Arc::default();
    let until = Instant::now() + SOAK;
    // Retention runs too: each session keeps its last three per branch (plus heads).
    let mut tasks = Vec::new();
    for n in 0..3u64 {
        tasks.push(tokio::spawn(writer(
            client.clone(),
            format!("soak-{n}"),
            n,
            Arc::clone(&acked),
            until,
        )));
    }
    tasks.push(tokio::spawn(deleter(
        client.clone(),
        Arc::clone(&acked),
        until,
    )));
    let passes = tokio::spawn(collector(client.clone(), until));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..3u64 {
        let session = format!("soak-{n}");
        client
            .set_retention_policy(&session, None, "last=3")
            .await
            .unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let passes = passes.await.unwrap();
    assert!(passes >= 2, "only {passes} passes ran");

    // Every acknowledged checkpoint that still exists loads exactly as written.
    let acked = acked.lock().unwrap().clone();
    let mut loaded = 0;
    for (id, expected) in &acked {
        match client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
        {
            Ok((_, state)) => {
                assert_eq!(&state, expected, "checkpoint {id}");
                loaded += 1;
            }
            // Dropped by retention: gone as a whole, never half-readable.
            Err(Error::NotFound(_)) => {}
            Err(e) => panic!("checkpoint {id}: {e}"),
        }
    }
    assert!(loaded >= 3, "{loaded} of {} loaded", acked.len());
    let verify = client.verify_all(None, 100, false).await.unwrap();
    assert!(verify.problems.is_empty(), "{:?}", verify.problems);
    client.collect(&CollectOptions::default()).await.unwrap();
    let verify = client.verify_all(None, 100, false).await.unwrap();
    assert!(verify.problems.is_empty(), "{:?}", verify.problems);
}

async fn a_collector_killed_at_random_points_resumes_and_leaks_nothing(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let store = env.config.store();
    let port = free_port();
    let args = ["--collector-lease", "1s", "--gc-interval", "0s"];
    let mut server: Process = spawn_server_with(&env.db_url, &store, port, &args).await;
    let client = Client::connect(server.url.clone()).await.unwrap();
    let mut kept = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    let mut window_us = 60_000u64;
    for round in 0..20u64 {
        // Garbage for the pass to chew on: checkpoints written, then deleted.
        let session = format!("crash-{round}");
        let mut head: Option<String> = None;
        for i in 0..30u64 {
            let state: State = (0..4)
                .map(|k| {
                    (
                        format!("k{k}"),
                        noise(12_000, round * 100 + i * 4 + k).into(),
                    )
                })
                .collect();
            let mut new = NewCheckpoint::full(session.clone(), state.clone());
            new.parent_id = head.clone();
            let cp = client.create(new).await.unwrap();
            if let Some(old) = head.replace(cp.id.clone()) {
                client.delete_checkpoint(&old).await.unwrap();
            }
            if i == 29 {
                kept.push((cp.id, state));
            }
        }
        // Start a pass and kill the server a random moment into it.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A random moment within `window`, which halves whenever a pass ended before its kill:
        // a pass over this garbage takes tens of milliseconds on PostgreSQL and S3, and only a
        // few on SQLite, so a fixed window either misses SQLite's passes or bunches the kills
        // at the start of the others.
        let delay = Duration::from_micros(rng % window_us);
        let pass_client = client.clone();
        let pass =
            tokio::spawn(async move { pass_client.collect(&CollectOptions::default()).await });
        tokio::time::sleep(delay).await;
        if pass.is_finished() {
            window_us = (window_us / 2).max(1_000);
        } else {
            kills += 1;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let _ = pass.await;
        server = spawn_server_with(&env.db_url, &store, port, &args).await;
    }
    eprintln!("{kills} of 20 kills landed inside a pass");
    assert!(kills >= 5, "only {kills} of 20 kills landed inside a pass");

    // After the restarts, a full pass (once the dead collector's lease lapsed) cleans up.
    let client = Client::connect(server.url.clone()).await.unwrap();
    let report = loop {
        match client.collect(&CollectOptions::default()).await {
            Ok(collection) => break collection.report,
            Err(Error::Aborted { .. }) => tokio::time::sleep(Duration::from_millis(300)).await,
            Err(e) => panic!("collect: {e}"),
        }
    };
    let verify = client.verify_all(None, 100, false).await.unwrap();
    assert!(verify.problems.is_empty(), "{:?}", verify.problems);
    for (id, state) in &kept {
        let (_, loaded) = client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
            .unwrap();
        assert_eq!(&loaded, state);
    }
    // Nothing leaked: the store holds exactly the objects the catalog names.
    let mut stored: Vec<String> = {
        use futures::TryStreamExt;
        env.blobs
            .list("chunks", None)
            .map_ok(|o| o.key)
            .try_collect()
            .await
            .unwrap()
    };
    stored.sort();
    assert_eq!(stored, env.object_keys().await, "after {report:?}");
}

on_every_setup!(
    writers_merges_deletes_and_collections_together_lose_nothing,
    a_collector_killed_at_random_points_resumes_and_leaks_nothing,
);
