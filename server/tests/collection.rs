//! Retention, collection and verify: through the real server where a user would go, and
//! step by step in process where a writer and a collector must be interleaved exactly.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ckpt_client::{Client, CollectOptions, Error, NewCheckpoint, Op, ReadFilter, State, Target};
use ckpt_server::blobs::{BlobStore, object_key};
use ckpt_server::core::hash::Hash;
use ckpt_server::core::{CheckpointWriter, Collection, CreateHeader, Engine, EngineError, Mode};
use common::{Setup, TestEnv, noise, transcript};

async fn load(client: &Client, id: &str) -> State {
    client
        .read_state(Target::checkpoint(id), ReadFilter::default())
        .await
        .unwrap_or_else(|e| panic!("checkpoint {id} loads: {e}"))
        .1
}

fn state(entries: &[(&str, Vec<u8>)]) -> State {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), Bytes::from(v.clone())))
        .collect()
}

/// An engine of its own on the test's catalog and store, for driving phases one at a time.
async fn engine_for(env: &TestEnv) -> Arc<Engine> {
    let catalog = ckpt_server::catalog::open(&env.db_url, 4, Duration::from_secs(10))
        .await
        .expect("catalog opens");
    let blobs = BlobStore::open(&env.config.store()).expect("store opens");
    Arc::new(Engine::new(catalog, blobs, env.config.engine()))
}

async fn collect(client: &Client) -> ckpt_client::CollectReport {
    client
        .collect(&CollectOptions::default())
        .await
        .expect("collection runs")
        .report
}

/// Every checkpoint of every session loads, and verify finds nothing missing or damaged.
async fn assert_store_intact(client: &Client) {
    for session in client.list_all_sessions().await.expect("sessions") {
        for cp in client
            .list_all_checkpoints(&session.id, None)
            .await
            .expect("checkpoints")
        {
            load(client, &cp.id).await;
        }
    }
    let report = client.verify_all(None, 100, false).await.expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

// ---------------------------------------------------------------------------------------------
// Freeing what nothing references
// ---------------------------------------------------------------------------------------------

async fn collection_frees_what_only_deleted_checkpoints_used(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let shared = noise(50_000, 1);
    let only_first = noise(60_000, 2);
    let first = client
        .create(NewCheckpoint::full(
            "s",
            state(&[("shared", shared.clone()), ("gone", only_first.clone())]),
        ))
        .await
        .unwrap();
    let second = client
        .create(NewCheckpoint::incremental(
            "s",
            &first.id,
            vec![
                Op::Delete("gone".into()),
                Op::Put("small".into(), transcript(2_000, 3).into()),
            ],
        ))
        .await
        .unwrap();
    let objects_before = env.object_keys().await.len();

    // Nothing is garbage yet: a pass frees nothing.
    let idle = collect(client).await;
    assert_eq!((idle.chunks_deleted, idle.bytes_freed), (0, 0));

    client.delete_checkpoint(&first.id).await.unwrap();
    let dry = client
        .collect(&CollectOptions {
            dry_run: true,
            ..CollectOptions::default()
        })
        .await
        .unwrap()
        .report;
    let report = collect(client).await;
    // The dry run predicted exactly what the pass then did.
    let counts = |r: &ckpt_client::CollectReport| {
        (
            r.checkpoints_examined,
            r.chunks_deleted,
            r.pages_deleted,
            r.objects_deleted,
            r.bytes_freed,
        )
    };
    assert_eq!(counts(&dry), counts(&report));
    assert!(report.chunks_deleted >= 1, "{report:?}");
    assert!(report.pages_deleted >= 1, "{report:?}");
    assert!(report.bytes_freed >= 60_000, "{report:?}");
    assert_eq!(report.objects_deleted, 1, "{report:?}");
    assert_eq!(env.object_keys().await.len(), objects_before - 1);
    assert_eq!(
        load(client, &second.id).await,
        state(&[("shared", shared), ("small", transcript(2_000, 3))])
    );
    // The store holds exactly the objects the catalog names, nothing more.
    let mut stored = list_objects(&env.blobs).await;
    stored.sort();
    assert_eq!(stored, env.object_keys().await);
    assert_store_intact(client).await;

    // A second pass finds nothing left to do.
    let again = collect(client).await;
    assert_eq!((again.chunks_deleted, again.pages_deleted), (0, 0));
}

async fn list_objects(blobs: &BlobStore) -> Vec<String> {
    use futures::TryStreamExt;
    blobs
        .list("chunks", None)
        .map_ok(|o| o.key)
        .try_collect()
        .await
        .expect("listing")
}

async fn deleting_a_session_frees_its_chunks_and_keeps_shared_ones(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let shared = noise(40_000, 10);
    let mine = noise(70_000, 11);
    client
        .create(NewCheckpoint::full(
            "doomed",
            state(&[("shared", shared.clone()), ("mine", mine)]),
        ))
        .await
        .unwrap();
    let kept = client
        .create(NewCheckpoint::full(
            "kept",
            state(&[("shared", shared.clone())]),
        ))
        .await
        .unwrap();
    let objects_before = env.object_keys().await.len();

    client.delete_session("doomed").await.unwrap();
    let report = collect(client).await;
    assert!(report.bytes_freed >= 70_000, "{report:?}");
    assert_eq!(env.object_keys().await.len(), objects_before - 1);
    assert_eq!(load(client, &kept.id).await, state(&[("shared", shared)]));
    assert_store_intact(client).await;
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

async fn retention_keeps_heads_tags_and_matches_and_explains_every_decision(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let mut ids = Vec::new();
    let mut parent: Option<String> = None;
    for i in 0..6u64 {
        let ops = vec![Op::Put(format!("step-{i}"), noise(20_000, 100 + i).into())];
        let new = match &parent {
            None => NewCheckpoint::full(
                "r",
                state(&[(&format!("step-{i}"), noise(20_000, 100 + i))]),
            ),
            Some(p) => NewCheckpoint::incremental("r", p, ops),
        };
        let cp = client.create(new).await.unwrap();
        parent = Some(cp.id.clone());
        ids.push(cp.id);
    }
    client.set_tag("r", "first", &ids[0], None).await.unwrap();

    // A bad policy is refused, naming the field.
    let err = client
        .set_retention_policy("r", None, "last=0")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("policy")),
        "{err}"
    );
    let err = client
        .set_retention_policy("no-such-session", None, "last=2")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");

    let err = client
        .set_retention_policy("r", None, "")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("empty")),
        "{err}"
    );
    let err = client
        .set_retention_policy("r", Some("no-such-branch"), "last=2")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("no-such-branch")),
        "{err}"
    );
    let err = client
        .clear_retention_policy("r", Some("no-such-branch"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");

    let before = client.retention_policy("r", None).await.unwrap();
    assert_eq!(
        (before.policy.as_str(), before.source.as_str()),
        ("none", "default")
    );
    let set = client
        .set_retention_policy("r", None, "last=2")
        .await
        .unwrap();
    assert_eq!(
        (set.policy.as_str(), set.source.as_str()),
        ("last=2", "session")
    );
    let on_branch = client.retention_policy("r", Some("main")).await.unwrap();
    assert_eq!(on_branch.source, "session");

    // The dry run explains each decision and deletes nothing.
    let dry = client
        .collect(&CollectOptions {
            dry_run: true,
            explain: true,
            session_id: Some("r".into()),
            ..CollectOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(dry.report.checkpoints_deleted, 3);
    let decision = |id: &str| {
        dry.decisions
            .iter()
            .find(|d| d.checkpoint_id == id)
            .unwrap_or_else(|| panic!("a decision for {id}"))
            .clone()
    };
    assert!(decision(&ids[5]).keep);
    assert!(
        decision(&ids[5])
            .reasons
            .iter()
            .any(|r| r.contains("head of branch main"))
    );
    assert!(
        decision(&ids[4])
            .reasons
            .iter()
            .any(|r| r.contains("last 2"))
    );
    assert!(
        decision(&ids[0])
            .reasons
            .iter()
            .any(|r| r.contains("tag first"))
    );
    for dropped in &ids[1..4] {
        let d = decision(dropped);
        assert!(!d.keep && d.reasons.is_empty(), "{d:?}");
    }
    assert_eq!(
        client.list_all_checkpoints("r", None).await.unwrap().len(),
        6
    );

    // The real pass drops exactly those, and is idempotent.
    let report = collect(client).await;
    assert_eq!(report.checkpoints_deleted, 3);
    let left: Vec<String> = client
        .list_all_checkpoints("r", None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, vec![ids[5].clone(), ids[4].clone(), ids[0].clone()]);
    assert_eq!(collect(client).await.checkpoints_deleted, 0);
    // Kept checkpoints load whole, including values first written by dropped ones.
    let head = load(client, &ids[5]).await;
    assert_eq!(head.len(), 6);
    assert_eq!(head["step-2"], Bytes::from(noise(20_000, 102)));
    assert_store_intact(client).await;

    // A branch override beats the session's; clearing it restores the session's.
    client.create_branch("r", "side", &ids[5]).await.unwrap();
    let side = client
        .set_retention_policy("r", Some("side"), "last=1,daily=3")
        .await
        .unwrap();
    assert_eq!(
        (side.policy.as_str(), side.source.as_str()),
        ("last=1,daily=3", "branch")
    );
    let cleared = client
        .clear_retention_policy("r", Some("side"))
        .await
        .unwrap();
    assert_eq!(
        (cleared.policy.as_str(), cleared.source.as_str()),
        ("last=2", "session")
    );

    // A branch's override goes with the branch: a new branch of that name starts clean.
    client
        .set_retention_policy("r", Some("side"), "last=1")
        .await
        .unwrap();
    client.delete_branch("r", "side", None).await.unwrap();
    let err = client
        .retention_policy("r", Some("side"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    client.create_branch("r", "side", &ids[5]).await.unwrap();
    let fresh = client.retention_policy("r", Some("side")).await.unwrap();
    assert_eq!(
        (fresh.policy.as_str(), fresh.source.as_str()),
        ("last=2", "session")
    );
}

async fn retention_by_age_counts_from_each_groups_newest_and_never_across_groups(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    // Two sessions, each with ten checkpoints one day apart (back-dated behind the server).
    for session in ["old", "young"] {
        let mut parent: Option<String> = None;
        for i in 0..10u64 {
            let new = match &parent {
                None => NewCheckpoint::full(session, state(&[("k", transcript(500, i))])),
                Some(p) => NewCheckpoint::incremental(
                    session,
                    p,
                    vec![Op::Put("k".into(), transcript(500, i).into())],
                ),
            };
            parent = Some(client.create(new).await.unwrap().id);
        }
    }
    let db = env.db().await;
    // "old" ends 100 days ago, "young" ends now; both step one day per checkpoint.
    db.backdate("old", 100).await;
    db.backdate("young", 0).await;
    for session in ["old", "young"] {
        client
            .set_retention_policy(session, None, "within=3days")
            .await
            .unwrap();
    }
    let report = collect(client).await;
    // Within three days of each group's own newest: that one and the three before it.
    assert_eq!(report.checkpoints_deleted, 12, "{report:?}");
    assert_eq!(
        client
            .list_all_checkpoints("old", None)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        client
            .list_all_checkpoints("young", None)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_store_intact(client).await;
}

// ---------------------------------------------------------------------------------------------
// Verify, orphans and the collector lease
// ---------------------------------------------------------------------------------------------

async fn verify_reports_missing_and_damaged_blobs_and_old_orphans(setup: Setup) {
    let env = TestEnv::start_with(setup, |c| c.upload_lease = Duration::from_secs(3)).await;
    let client = &env.client;
    client
        .create(NewCheckpoint::full(
            "v",
            state(&[("big", noise(90_000, 7))]),
        ))
        .await
        .unwrap();
    client
        .create(NewCheckpoint::full(
            "w",
            state(&[("small", transcript(3_000, 8))]),
        ))
        .await
        .unwrap();
    let clean = client.verify_all(None, 1, false).await.unwrap();
    assert!(
        clean.problems.is_empty() && clean.orphans.is_empty(),
        "{clean:?}"
    );
    assert_eq!(clean.checkpoints_checked, 2);

    // A stray object younger than the upload lease may be an upload in progress: not an
    // orphan yet. One older than the lease is.
    let old = object_key(&Hash::of(b"old"), uuid::Uuid::now_v7());
    env.blobs.put(&old, Bytes::from_static(b"x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let young = object_key(&Hash::of(b"young"), uuid::Uuid::now_v7());
    env.blobs
        .put(&young, Bytes::from_static(b"x"))
        .await
        .unwrap();
    // Files something else put in the store, anywhere in it, are named and never deleted.
    let strangers = [
        "README.txt",
        "other/bar.tmp",
        "chunks/loose.txt",
        "chunks/zz/foo",
        "chunks/ab/notes.txt",
    ];
    for key in strangers {
        env.blobs
            .put(key, Bytes::from_static(b"mine"))
            .await
            .unwrap();
    }
    let found = client.verify_all(None, 10, false).await.unwrap();
    assert_eq!(found.orphans, vec![old.clone()]);
    assert_eq!(found.foreign_objects, strangers.len() as u64);
    let mut named = found.foreign.clone();
    named.sort();
    let mut expected: Vec<String> = strangers.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(named, expected);
    assert_eq!(found.orphans_removed, 0);
    assert!(list_objects(&env.blobs).await.contains(&old));
    let removed = client.verify_all(None, 10, true).await.unwrap();
    assert_eq!(removed.orphans_removed, 1);
    assert!(!list_objects(&env.blobs).await.contains(&old));
    assert!(list_objects(&env.blobs).await.contains(&young));
    collect(client).await;
    for key in strangers {
        assert!(env.blobs.get(key).await.is_ok(), "{key} was removed");
    }

    // Damage behind the server's back: a missing object and a corrupted inline chunk.
    let damaged = client
        .create(NewCheckpoint::full(
            "x",
            state(&[("small", transcript(3_000, 10))]),
        ))
        .await
        .unwrap();
    // A second checkpoint sharing the same chunk: verify must name both.
    let sharing = client
        .create(NewCheckpoint::incremental(
            "x",
            &damaged.id,
            vec![Op::Put("more".into(), noise(20_000, 12).into())],
        ))
        .await
        .unwrap();
    for key in env.object_keys().await {
        env.blobs.delete(&key).await.unwrap();
    }
    assert!(env.db().await.damage_inline_chunks(b"garbage").await >= 1);
    let broken = client.verify_all(None, 10, false).await.unwrap();
    assert!(
        broken.problems.iter().any(|p| p.kind == "missing"),
        "{:?}",
        broken.problems
    );
    assert!(
        broken
            .problems
            .iter()
            .any(|p| p.kind == "damaged" && p.checkpoint_id == damaged.id),
        "{:?}",
        broken.problems
    );
    for id in [&damaged.id, &sharing.id] {
        assert!(
            broken
                .problems
                .iter()
                .any(|p| p.kind == "damaged" && &p.checkpoint_id == id),
            "{id} not named: {:?}",
            broken.problems
        );
    }
    // One session's verify looks at that session only.
    let mine = client.verify_all(Some("x"), 10, false).await.unwrap();
    assert!(!mine.problems.is_empty());
    assert!(
        mine.problems
            .iter()
            .all(|p| p.checkpoint_id == damaged.id || p.checkpoint_id == sharing.id)
    );
    // A bad cursor names the field.
    let err = client
        .verify(None, Some("nonsense"), 10, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("cursor")),
        "{err}"
    );
}

async fn abandoned_uploads_are_reclaimed_after_the_lease_and_one_collector_runs(setup: Setup) {
    let env = TestEnv::start_with(setup, |c| c.upload_lease = Duration::from_secs(2)).await;
    let client = &env.client;
    let kept = client
        .create(NewCheckpoint::full("a", state(&[("v", noise(30_000, 5))])))
        .await
        .unwrap();
    // An upload whose commit never came.
    let abandoned = object_key(&Hash::of(b"abandoned"), uuid::Uuid::now_v7());
    env.blobs
        .put(&abandoned, Bytes::from(noise(20_000, 6)))
        .await
        .unwrap();
    let early = collect(client).await;
    assert_eq!(early.orphans_deleted, 0, "young uploads are left alone");
    assert!(list_objects(&env.blobs).await.contains(&abandoned));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let late = collect(client).await;
    assert_eq!((late.orphans_deleted, late.orphan_bytes_freed), (1, 20_000));
    assert!(!list_objects(&env.blobs).await.contains(&abandoned));
    load(client, &kept.id).await;

    // While one pass holds the lease, another is refused; afterwards it runs.
    let engine = engine_for(&env).await;
    let running = Collection::begin(Arc::clone(&engine), Default::default())
        .await
        .unwrap();
    let err = client
        .collect(&CollectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    running.finish().await.unwrap();
    collect(client).await;
}

// ---------------------------------------------------------------------------------------------
// A writer and the collector, interleaved step by step
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Find,
    Upload,
    Commit,
    Begin,
    Retain,
    Mark,
    Sweep,
    Reclaim,
}

/// Every order of the writer's three steps among the collector's five phases.
fn interleavings() -> Vec<Vec<Step>> {
    let writer = [Step::Find, Step::Upload, Step::Commit];
    let collector = [
        Step::Begin,
        Step::Retain,
        Step::Mark,
        Step::Sweep,
        Step::Reclaim,
    ];
    let mut orders = Vec::new();
    for mask in 0u32..(1 << 8) {
        if mask.count_ones() != 3 {
            continue;
        }
        let (mut w, mut c) = (writer.iter(), collector.iter());
        let order = (0..8)
            .map(|i| {
                if mask & (1 << i) != 0 {
                    *w.next().unwrap()
                } else {
                    *c.next().unwrap()
                }
            })
            .collect();
        orders.push(order);
    }
    orders
}

async fn every_interleaving_of_a_write_and_a_collection_keeps_every_checkpoint_whole(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let engine = engine_for(&env).await;
    let orders = interleavings();
    assert_eq!(orders.len(), 56);
    let mut aborted = 0;
    let mut freed_before_write = 0;
    for (n, order) in orders.iter().enumerate() {
        let seed = 1_000 * (n as u64 + 1);
        let session = format!("i-{n}");
        // Garbage the writer will deduplicate against: values of a deleted checkpoint.
        let garbage = noise(40_000, seed);
        let garbage_small = transcript(3_000, seed);
        let first = client
            .create(NewCheckpoint::full(
                &session,
                state(&[("g", garbage.clone()), ("gs", garbage_small.clone())]),
            ))
            .await
            .unwrap();
        let kept_value = noise(20_000, seed + 1);
        let second = client
            .create(NewCheckpoint::incremental(
                &session,
                &first.id,
                vec![
                    Op::Delete("g".into()),
                    Op::Delete("gs".into()),
                    Op::Put("kept".into(), kept_value.clone().into()),
                ],
            ))
            .await
            .unwrap();
        client.delete_checkpoint(&first.id).await.unwrap();

        let header = CreateHeader::new(
            &session,
            "main",
            &second.id,
            "",
            "interleaved",
            Mode::Incremental,
        )
        .unwrap();
        let fresh = noise(30_000, seed + 2);
        let mut writer = Some(
            CheckpointWriter::begin(Arc::clone(&engine), header)
                .await
                .unwrap(),
        );
        for (key, value) in [
            ("again", &garbage),
            ("again-small", &garbage_small),
            ("fresh", &fresh),
        ] {
            let w = writer.as_mut().unwrap();
            w.put("put", key.into(), Bytes::from(value.clone()))
                .await
                .unwrap();
        }
        let mut pass: Option<Collection> = None;
        let mut committed = None;
        let position = |step: Step| order.iter().position(|s| *s == step).unwrap();
        for step in order {
            match step {
                Step::Find => writer.as_mut().unwrap().find_existing().await.unwrap(),
                Step::Upload => writer.as_mut().unwrap().upload().await.unwrap(),
                Step::Commit => committed = Some(writer.take().unwrap().commit(None).await),
                Step::Begin => {
                    pass = Some(
                        Collection::begin(Arc::clone(&engine), Default::default())
                            .await
                            .unwrap(),
                    )
                }
                Step::Retain => pass.as_mut().unwrap().retain().await.unwrap(),
                Step::Mark => pass.as_mut().unwrap().mark().await.unwrap(),
                Step::Sweep => pass.as_mut().unwrap().sweep().await.unwrap(),
                Step::Reclaim => pass.as_mut().unwrap().reclaim().await.unwrap(),
            }
        }
        let report = pass.unwrap().finish().await.unwrap();
        if position(Step::Reclaim) < position(Step::Find) {
            // The whole pass ran before the write looked anything up: the garbage went.
            assert!(report.chunks_deleted >= 2, "order {order:?}: {report:?}");
            freed_before_write += 1;
        }

        let expected = state(&[
            ("kept", kept_value.clone()),
            ("again", garbage.clone()),
            ("again-small", garbage_small.clone()),
            ("fresh", fresh.clone()),
        ]);
        match committed.unwrap() {
            Ok(cp) => assert_eq!(
                load(client, &cp.id.to_string()).await,
                expected,
                "order {order:?}"
            ),
            Err(EngineError::Aborted(why)) => {
                // Only a sweep between the lookup and the commit can take a reused blob away.
                assert!(
                    position(Step::Find) < position(Step::Sweep)
                        && position(Step::Sweep) < position(Step::Commit),
                    "order {order:?} aborted: {why}"
                );
                aborted += 1;
                // The retry the error asks for succeeds.
                let retried = client
                    .create(NewCheckpoint::incremental(
                        &session,
                        &second.id,
                        vec![
                            Op::Put("again".into(), garbage.clone().into()),
                            Op::Put("again-small".into(), garbage_small.clone().into()),
                            Op::Put("fresh".into(), fresh.clone().into()),
                        ],
                    ))
                    .await
                    .unwrap();
                assert_eq!(load(client, &retried.id).await, expected);
            }
            Err(other) => panic!("order {order:?}: {other}"),
        }
        assert_eq!(
            load(client, &second.id).await,
            state(&[("kept", kept_value)])
        );
    }
    assert_eq!(freed_before_write, 1);
    assert!(
        aborted >= 1,
        "some order must take the garbage away mid-write"
    );
    // A full pass afterwards, then everything still loads and verifies.
    collect(client).await;
    assert_store_intact(client).await;
}

async fn a_read_of_a_checkpoint_collected_under_it_ends_in_not_found(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let big: State = (0..40u64)
        .map(|i| (format!("k{i:02}"), Bytes::from(noise(100_000, 500 + i))))
        .collect();
    let doomed = client
        .create(NewCheckpoint::full("read", big))
        .await
        .unwrap();
    client
        .create(NewCheckpoint::incremental(
            "read",
            &doomed.id,
            vec![Op::Put("other".into(), transcript(1_000, 1).into())]
                .into_iter()
                .chain((0..40u64).map(|i| Op::Delete(format!("k{i:02}"))))
                .collect(),
        ))
        .await
        .unwrap();
    let mut reader = client
        .read_state_stream(Target::checkpoint(&doomed.id), ReadFilter::default())
        .await
        .unwrap();
    reader.next_entry().await.unwrap().expect("a first entry");
    reader.read_value().await.unwrap();

    // Deleted and collected while the read is under way: the reader hears NOT_FOUND, which is
    // what happened, rather than DATA_LOSS, which did not.
    client.delete_checkpoint(&doomed.id).await.unwrap();
    assert!(collect(client).await.objects_deleted >= 40);
    let outcome = async {
        while reader.next_entry().await?.is_some() {
            reader.read_value().await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    assert!(
        matches!(&outcome, Err(Error::NotFound(m)) if m.contains("deleted while it was being read")),
        "{outcome:?}"
    );
}

on_every_setup!(
    a_read_of_a_checkpoint_collected_under_it_ends_in_not_found,
    collection_frees_what_only_deleted_checkpoints_used,
    deleting_a_session_frees_its_chunks_and_keeps_shared_ones,
    retention_keeps_heads_tags_and_matches_and_explains_every_decision,
    retention_by_age_counts_from_each_groups_newest_and_never_across_groups,
    verify_reports_missing_and_damaged_blobs_and_old_orphans,
    abandoned_uploads_are_reclaimed_after_the_lease_and_one_collector_runs,
    every_interleaving_of_a_write_and_a_collection_keeps_every_checkpoint_whole,
);

#[test]
fn interleavings_are_all_distinct_and_keep_each_sides_order() {
    let orders = interleavings();
    let distinct: std::collections::HashSet<String> =
        orders.iter().map(|o| format!("{o:?}")).collect();
    assert_eq!(distinct.len(), 56);
    for order in &orders {
        let writer: Vec<_> = order
            .iter()
            .filter(|s| matches!(s, Step::Find | Step::Upload | Step::Commit))
            .collect();
        assert_eq!(writer, [&Step::Find, &Step::Upload, &Step::Commit]);
    }
    let _ = BTreeMap::<u8, u8>::new();
}
