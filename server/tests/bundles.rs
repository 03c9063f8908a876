//! Portable session bundles: export from one deployment, import into another.

mod common;

use bytes::Bytes;
use ckpt_client::{Client, NewCheckpoint, Op, ReadFilter, State, Target};
use common::{Setup, TestEnv, noise, transcript};
use tonic::Code;

async fn export(client: &Client, session: &str) -> Vec<u8> {
    let mut bundle = Vec::new();
    client
        .export_session(session, &mut bundle)
        .await
        .expect("export");
    bundle
}

async fn import(
    client: &Client,
    bundle: Vec<u8>,
) -> Result<ckpt_client::ImportReport, ckpt_client::Error> {
    client.import_session(std::io::Cursor::new(bundle)).await
}

/// A session with two branches, a deleted checkpoint and values in and out of line.
async fn build_session(client: &Client, session: &str) -> Vec<String> {
    let base = State::from([
        ("transcript".to_owned(), Bytes::from(transcript(300_000, 1))),
        ("files/blob".to_owned(), Bytes::from(noise(700_000, 2))),
        ("small".to_owned(), Bytes::from_static(b"small")),
    ]);
    let first = client
        .create(
            NewCheckpoint::full(session, base)
                .message("start")
                .metadata(serde_json::json!({"step": 0})),
        )
        .await
        .unwrap();
    let mut ids = vec![first.id.clone()];
    let mut head = first.id.clone();
    for i in 1..6u64 {
        let ops = vec![Op::Put(
            format!("step/{i}"),
            Bytes::from(noise(20_000, 10 + i)),
        )];
        let cp = client
            .create(NewCheckpoint::incremental(session, &head, ops).message(format!("step {i}")))
            .await
            .unwrap();
        head = cp.id.clone();
        ids.push(cp.id);
    }
    let side = client
        .create(
            NewCheckpoint::incremental(session, &ids[2], vec![Op::Delete("small".into())])
                .branch("side"),
        )
        .await
        .unwrap();
    ids.push(side.id);
    client.delete_checkpoint(&ids[1]).await.unwrap();
    ids.remove(1);
    client.set_tag(session, "v1", &ids[1], None).await.unwrap();
    ids
}

async fn assert_same_session(from: &Client, to: &Client, session: &str) {
    let a = from.list_all_checkpoints(session, None).await.unwrap();
    let b = to.list_all_checkpoints(session, None).await.unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.id, &x.branch, &x.parent_ids, &x.metadata, &x.message),
            (&y.id, &y.branch, &y.parent_ids, &y.metadata, &y.message)
        );
        assert_eq!(
            x.create_time.timestamp_micros(),
            y.create_time.timestamp_micros()
        );
        assert_eq!(x.summary.entry_count, y.summary.entry_count);
        let (_, sx) = from
            .read_state(Target::checkpoint(&x.id), ReadFilter::default())
            .await
            .unwrap();
        let (_, sy) = to
            .read_state(Target::checkpoint(&y.id), ReadFilter::default())
            .await
            .unwrap();
        assert!(sx == sy, "checkpoint {} differs after import", x.id);
    }
    let tags = |tags: Vec<ckpt_client::Tag>| {
        tags.into_iter()
            .map(|t| (t.name, t.checkpoint_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tags(from.list_tags(session).await.unwrap()),
        tags(to.list_tags(session).await.unwrap())
    );
    assert_eq!(to.list_tags(session).await.unwrap().len(), 1);
    for branch in ["main", "side"] {
        let (hx, _) = from
            .read_state(Target::branch_head(session, branch), ReadFilter::default())
            .await
            .unwrap();
        let (hy, _) = to
            .read_state(Target::branch_head(session, branch), ReadFilter::default())
            .await
            .unwrap();
        assert_eq!(hx.id, hy.id, "branch {branch}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_moves_from_the_embedded_default_to_postgres_and_s3() {
    let embedded = TestEnv::start(Setup::Sqlite).await;
    let production = TestEnv::start(Setup::PostgresS3).await;
    let ids = build_session(&embedded.client, "agent/run-1").await;
    let bundle = export(&embedded.client, "agent/run-1").await;

    let report = import(&production.client, bundle.clone()).await.unwrap();
    assert_eq!(report.session_id, "agent/run-1");
    assert_eq!(report.checkpoints_imported, ids.len() as u64);
    assert_eq!(report.checkpoints_present, 0);
    assert_eq!(report.branches_updated, 2);
    assert_eq!(report.tags_created, 1);
    assert!(
        report.stored_bytes > 700_000,
        "the noise blob must be stored: {report:?}"
    );
    assert_same_session(&embedded.client, &production.client, "agent/run-1").await;

    // The imported session keeps working: a write on its head succeeds.
    let (head, _) = production
        .client
        .read_state(Target::head("agent/run-1"), ReadFilter::default())
        .await
        .unwrap();
    let next =
        NewCheckpoint::incremental("agent/run-1", &head.id, vec![Op::Delete("small".into())]);
    production.client.create(next).await.unwrap();
}

async fn importing_the_same_bundle_twice_changes_nothing(setup: Setup) {
    let source = TestEnv::start(Setup::Sqlite).await;
    let target = TestEnv::start(setup).await;
    let ids = build_session(&source.client, "twice").await;
    let bundle = export(&source.client, "twice").await;
    import(&target.client, bundle.clone()).await.unwrap();
    let objects = target.object_keys().await;

    let again = import(&target.client, bundle).await.unwrap();
    assert_eq!(again.checkpoints_imported, 0);
    assert_eq!(again.checkpoints_present, ids.len() as u64);
    assert_eq!(again.branches_updated, 0);
    assert_eq!(again.tags_created, 0);
    assert_eq!(again.stored_bytes, 0);
    assert_eq!(
        target
            .client
            .list_all_checkpoints("twice", None)
            .await
            .unwrap()
            .len(),
        ids.len()
    );
    assert_eq!(
        target
            .client
            .get_session("twice")
            .await
            .unwrap()
            .checkpoint_count,
        ids.len() as u64
    );
    // Blobs already present are not uploaded again.
    assert_eq!(target.object_keys().await, objects);
    assert_same_session(&source.client, &target.client, "twice").await;
}

async fn a_damaged_bundle_is_refused_and_imports_nothing(setup: Setup) {
    let source = TestEnv::start(Setup::Sqlite).await;
    let target = TestEnv::start(setup).await;
    build_session(&source.client, "dmg").await;
    let bundle = export(&source.client, "dmg").await;

    let mut flipped = bundle.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let truncated = bundle[..bundle.len() - 10].to_vec();
    let mut appended = bundle.clone();
    appended.extend_from_slice(b"junk");
    for damaged in [
        flipped,
        truncated,
        appended,
        b"not a bundle at all".to_vec(),
        Vec::new(),
    ] {
        let err = import(&target.client, damaged).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.to_string().contains("bundle"), "{err}");
        assert_eq!(
            target.client.get_session("dmg").await.unwrap_err().code(),
            Code::NotFound
        );
    }
    // The intact bundle still imports afterwards.
    import(&target.client, bundle).await.unwrap();
}

async fn a_diverged_branch_stops_the_import(setup: Setup) {
    let source = TestEnv::start(Setup::Sqlite).await;
    let target = TestEnv::start(setup).await;
    build_session(&source.client, "div").await;
    let bundle = export(&source.client, "div").await;
    import(&target.client, bundle.clone()).await.unwrap();

    // The target moves main on by itself: a later, longer export of the source is still a
    // fast-forward for `side` but not for `main`.
    let (head, _) = target
        .client
        .read_state(Target::head("div"), ReadFilter::default())
        .await
        .unwrap();
    target
        .client
        .create(NewCheckpoint::incremental(
            "div",
            &head.id,
            vec![Op::Delete("small".into())],
        ))
        .await
        .unwrap();
    let (src_head, _) = source
        .client
        .read_state(Target::head("div"), ReadFilter::default())
        .await
        .unwrap();
    source
        .client
        .create(NewCheckpoint::incremental(
            "div",
            &src_head.id,
            vec![Op::Delete("small".into())],
        ))
        .await
        .unwrap();
    let newer = export(&source.client, "div").await;
    let before = target
        .client
        .list_all_checkpoints("div", None)
        .await
        .unwrap()
        .len();
    let err = import(&target.client, newer).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        target
            .client
            .list_all_checkpoints("div", None)
            .await
            .unwrap()
            .len(),
        before
    );
}

/// Regression: re-importing a bundle into a deployment that moved on was refused as a
/// divergence; the deployment is ahead, so nothing needs to change.
async fn an_older_bundle_imports_as_a_no_op_where_the_branch_moved_on(setup: Setup) {
    let source = TestEnv::start(Setup::Sqlite).await;
    let target = TestEnv::start(setup).await;
    build_session(&source.client, "ahead").await;
    let bundle = export(&source.client, "ahead").await;
    import(&target.client, bundle.clone()).await.unwrap();
    let (head, _) = target
        .client
        .read_state(Target::head("ahead"), ReadFilter::default())
        .await
        .unwrap();
    let moved = target
        .client
        .create(NewCheckpoint::incremental(
            "ahead",
            &head.id,
            vec![Op::Delete("small".into())],
        ))
        .await
        .unwrap();
    let again = import(&target.client, bundle).await.unwrap();
    assert_eq!((again.checkpoints_imported, again.branches_updated), (0, 0));
    let (now, _) = target
        .client
        .read_state(Target::head("ahead"), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(
        now.id, moved.id,
        "the branch stays where this deployment moved it"
    );
}

/// Regression: a checkpoint deleted here came back on re-import with a sequence after its
/// children, breaking commit order.
async fn re_importing_does_not_resurrect_checkpoints_deleted_here(setup: Setup) {
    let source = TestEnv::start(Setup::Sqlite).await;
    let target = TestEnv::start(setup).await;
    let ids = build_session(&source.client, "pruned").await;
    let bundle = export(&source.client, "pruned").await;
    import(&target.client, bundle.clone()).await.unwrap();
    let interior = &ids[2];
    target.client.delete_checkpoint(interior).await.unwrap();

    let again = import(&target.client, bundle).await.unwrap();
    assert_eq!(again.checkpoints_imported, 0);
    assert_eq!(again.checkpoints_present, ids.len() as u64);
    assert_eq!(
        target.client.get(interior).await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = target
        .client
        .list_all_checkpoints("pruned", None)
        .await
        .unwrap();
    for pair in listed.windows(2) {
        assert!(pair[0].sequence > pair[1].sequence);
    }
}

async fn exporting_an_unknown_session_is_not_found(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut sink = Vec::new();
    let err = env
        .client
        .export_session("nobody", &mut sink)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

on_every_setup!(
    importing_the_same_bundle_twice_changes_nothing,
    a_damaged_bundle_is_refused_and_imports_nothing,
    a_diverged_branch_stops_the_import,
    an_older_bundle_imports_as_a_no_op_where_the_branch_moved_on,
    re_importing_does_not_resurrect_checkpoints_deleted_here,
    exporting_an_unknown_session_is_not_found,
);
