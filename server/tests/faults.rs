//! Bad input, damaged storage, cut-off uploads, overload, cancellation and kill -9: each gets
//! the right status and never loses or corrupts what was committed.

mod common;

use std::time::Duration;

use bytes::Bytes;
use ckpt_client::{Client, NewCheckpoint, Op, ReadFilter, State, Target};
use ckpt_proto::v1::checkpoint_service_client::CheckpointServiceClient;
use ckpt_proto::v1::{self, upload_checkpoint_request::Part};
use common::{Setup, TestEnv, noise};
use futures::StreamExt;
use tonic::Code;

fn one(key: &str, value: &[u8]) -> State {
    State::from([(key.to_owned(), Bytes::copy_from_slice(value))])
}

async fn raw(env: &TestEnv) -> CheckpointServiceClient<tonic::transport::Channel> {
    CheckpointServiceClient::connect(env.url())
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn put(key: &str, value: &[u8]) -> v1::Change {
    v1::Change {
        op: Some(v1::change::Op::Put(v1::Entry {
            key: key.into(),
            value: Bytes::copy_from_slice(value),
        })),
    }
}

fn create_request(session: &str, changes: Vec<v1::Change>) -> v1::CreateCheckpointRequest {
    v1::CreateCheckpointRequest {
        session_id: session.into(),
        mode: v1::CreateMode::Full as i32,
        changes,
        ..Default::default()
    }
}

/// Asserts the status code and that the message names `field`.
fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, field: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "message {:?} should name {field}",
        status.message()
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

async fn bad_keys_are_invalid_arguments_naming_the_change(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut c = raw(&env).await;
    let cases = [("", "changes[0].put.key"), ("a\0b", "changes[0].put.key")];
    for (key, field) in cases {
        assert_status(
            c.create_checkpoint(create_request("keys", vec![put(key, b"v")]))
                .await,
            Code::InvalidArgument,
            field,
        );
    }
    let long = "k".repeat(4097);
    let req = create_request("keys", vec![put("fine", b"v"), put(&long, b"v")]);
    assert_status(
        c.create_checkpoint(req).await,
        Code::InvalidArgument,
        "changes[1].put.key",
    );
    let dup = create_request("keys", vec![put("same", b"1"), put("same", b"2")]);
    assert_status(
        c.create_checkpoint(dup).await,
        Code::InvalidArgument,
        "appears twice",
    );
    // Nothing was created by any of them.
    assert_eq!(
        env.client.get_session("keys").await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn bad_names_are_invalid_arguments(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut c = raw(&env).await;
    for session in [
        "",
        "has space",
        "semi;colon",
        "drop table x;--",
        "ünï",
        &"s".repeat(257),
    ] {
        assert_status(
            c.create_checkpoint(create_request(session, vec![put("k", b"v")]))
                .await,
            Code::InvalidArgument,
            "session_id",
        );
    }
    let mut req = create_request("ok", vec![put("k", b"v")]);
    req.branch = "bad branch".into();
    assert_status(
        c.create_checkpoint(req).await,
        Code::InvalidArgument,
        "branch",
    );
    let mut req = create_request("ok", vec![put("k", b"v")]);
    req.parent_id = "not-a-uuid".into();
    assert_status(
        c.create_checkpoint(req).await,
        Code::InvalidArgument,
        "parent_id",
    );
    let mut req = create_request("ok", vec![]);
    req.mode = v1::CreateMode::Incremental as i32;
    assert_status(
        c.create_checkpoint(req).await,
        Code::InvalidArgument,
        "parent_id",
    );
    let mut req = create_request("ok", vec![]);
    req.mode = 42;
    assert_status(
        c.create_checkpoint(req).await,
        Code::InvalidArgument,
        "mode",
    );
    let get = v1::GetCheckpointRequest {
        checkpoint_id: "xyz".into(),
    };
    assert_status(
        c.get_checkpoint(get).await,
        Code::InvalidArgument,
        "checkpoint_id",
    );
    let list = v1::ListCheckpointsRequest {
        session_id: "ok".into(),
        page_size: 5000,
        ..Default::default()
    };
    assert_status(
        c.list_checkpoints(list).await,
        Code::InvalidArgument,
        "page_size",
    );
}

async fn metadata_must_be_a_json_object_without_nul(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut c = raw(&env).await;
    for bad in ["[1]", "\"text\"", "{not json", r#"{"a":"x\u0000y"}"#] {
        let mut req = create_request("meta", vec![put("k", b"v")]);
        req.metadata = bad.into();
        assert_status(
            c.create_checkpoint(req).await,
            Code::InvalidArgument,
            "metadata",
        );
    }
    // Quotes, unicode and SQL-looking text are just data.
    let mut req = create_request("meta", vec![put("k", b"v")]);
    req.metadata =
        r#"{"q":"it's \"quoted\"","sql":"'; DROP TABLE checkpoints; --","ü":"κ"}"#.into();
    let cp = c
        .create_checkpoint(req)
        .await
        .unwrap()
        .into_inner()
        .checkpoint
        .unwrap();
    let meta: serde_json::Value = serde_json::from_str(&cp.metadata).unwrap();
    assert_eq!(meta["sql"], "'; DROP TABLE checkpoints; --");
    assert_eq!(meta["ü"], "κ");
}

async fn missing_parents_and_missing_targets_are_not_found(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let ghost = uuid::Uuid::now_v7().to_string();
    let err = c
        .create(NewCheckpoint::incremental(
            "p",
            &ghost,
            vec![Op::Delete("k".into())],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A parent from another session is as good as missing.
    let other = c
        .create(NewCheckpoint::full("other", one("k", b"v")))
        .await
        .unwrap();
    let err = c
        .create(NewCheckpoint::full("p", one("k", b"v")).parent(&other.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        c.delete_checkpoint(&ghost).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(c.get(&ghost).await.unwrap_err().code(), Code::NotFound);
    let err = c
        .read_state(Target::checkpoint(&ghost), ReadFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .read_state(Target::head("nobody"), ReadFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

// ---------------------------------------------------------------------------------------------
// Size limits, on the unary and the streaming path
// ---------------------------------------------------------------------------------------------

async fn states_over_the_limits_are_resource_exhausted_on_both_paths(setup: Setup) {
    let env = TestEnv::start_with(setup, |c| {
        c.max_message_size = bytesize::ByteSize::mib(1);
        c.max_value_size = bytesize::ByteSize::mib(2);
    })
    .await;
    let mut c = raw(&env).await;
    let big = noise(1536 * 1024, 5);
    let status = c
        .create_checkpoint(create_request("lim", vec![put("k", &big)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let too_big = State::from([("k".to_owned(), Bytes::from(noise(3 * 1024 * 1024, 6)))]);
    let err = env
        .client
        .upload(NewCheckpoint::full("lim", too_big))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Under the value limit, the streamed path carries what one message cannot.
    let fits = State::from([("k".to_owned(), Bytes::from(big))]);
    let cp = env
        .client
        .upload(NewCheckpoint::full("lim", fits.clone()))
        .await
        .unwrap();
    let (_, loaded) = env
        .client
        .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(loaded, fits);
}

async fn a_unary_state_over_4_mib_works_when_the_limit_allows(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut c = raw(&env).await;
    let value = noise(6 * 1024 * 1024, 8);
    let cp = c
        .create_checkpoint(create_request("six", vec![put("k", &value)]))
        .await
        .unwrap()
        .into_inner();
    let id = cp.checkpoint.unwrap().id;
    let (_, loaded) = env
        .client
        .read_state(Target::checkpoint(&id), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(loaded["k"].as_ref(), value.as_slice());
}

// ---------------------------------------------------------------------------------------------
// Uploads that do not finish
// ---------------------------------------------------------------------------------------------

fn upload_part(part: Part) -> v1::UploadCheckpointRequest {
    v1::UploadCheckpointRequest { part: Some(part) }
}

fn header(session: &str) -> Part {
    Part::Header(v1::UploadHeader {
        session_id: session.into(),
        mode: v1::CreateMode::Full as i32,
        ..Default::default()
    })
}

async fn an_upload_cut_off_half_way_leaves_nothing_visible(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut c = raw(&env).await;

    // A stream that sends half a value and then hangs; the client gives up.
    let parts = vec![
        upload_part(header("cut")),
        upload_part(Part::Put(v1::EntryHeader {
            key: "k".into(),
            size: 1_000_000,
        })),
        upload_part(Part::Data(Bytes::from(noise(300_000, 1)))),
    ];
    let stream = futures::stream::iter(parts).chain(futures::stream::pending());
    let call = c.upload_checkpoint(stream);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err()
    );

    // A stream that ends cleanly but without its commit message.
    let parts = vec![
        upload_part(header("cut")),
        upload_part(Part::Put(v1::EntryHeader {
            key: "k".into(),
            size: 3,
        })),
        upload_part(Part::Data(Bytes::from_static(b"abc"))),
    ];
    assert_status(
        c.upload_checkpoint(futures::stream::iter(parts)).await,
        Code::InvalidArgument,
        "commit",
    );

    // A commit that claims more changes than arrived.
    let parts = vec![
        upload_part(header("cut")),
        upload_part(Part::Put(v1::EntryHeader {
            key: "k".into(),
            size: 3,
        })),
        upload_part(Part::Data(Bytes::from_static(b"abc"))),
        upload_part(Part::Commit(v1::UploadCommit { change_count: 2 })),
    ];
    assert_status(
        c.upload_checkpoint(futures::stream::iter(parts)).await,
        Code::InvalidArgument,
        "change_count",
    );

    // A value whose bytes stop short of its announced size.
    let parts = vec![
        upload_part(header("cut")),
        upload_part(Part::Put(v1::EntryHeader {
            key: "k".into(),
            size: 10,
        })),
        upload_part(Part::Data(Bytes::from_static(b"abc"))),
        upload_part(Part::Commit(v1::UploadCommit { change_count: 1 })),
    ];
    assert_status(
        c.upload_checkpoint(futures::stream::iter(parts)).await,
        Code::InvalidArgument,
        "incomplete",
    );

    assert_eq!(
        env.client.get_session("cut").await.unwrap_err().code(),
        Code::NotFound
    );
    // The next write on that session succeeds at once.
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        env.client
            .create(NewCheckpoint::full("cut", one("k", b"v"))),
    );
    assert_eq!(next.await.unwrap().unwrap().sequence, 1);
}

// ---------------------------------------------------------------------------------------------
// Damaged storage
// ---------------------------------------------------------------------------------------------

async fn damaged_or_missing_chunks_are_data_loss(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let cp = c
        .create(NewCheckpoint::full(
            "dmg",
            State::from([
                ("big".to_owned(), Bytes::from(noise(200_000, 3))),
                ("small".to_owned(), Bytes::from_static(b"tiny inline value")),
            ]),
        ))
        .await
        .unwrap();
    let keys = env.object_keys().await;
    assert!(
        !keys.is_empty(),
        "the large value must live in the object store"
    );

    // A damaged object.
    env.blobs
        .put(&keys[0], Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    let err = c
        .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.to_string().contains(&cp.id) && err.to_string().contains("big"),
        "{err}"
    );

    // A missing object.
    env.blobs.delete(&keys[0]).await.unwrap();
    let err = c
        .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");

    // The undamaged key still reads on its own.
    let only_small = ReadFilter {
        prefix: None,
        keys: vec!["small".into()],
    };
    let (_, state) = c
        .read_state(Target::checkpoint(&cp.id), only_small)
        .await
        .unwrap();
    assert_eq!(state["small"].as_ref(), b"tiny inline value");

    // An inline chunk damaged in the catalog.
    let damaged = env
        .db()
        .await
        .damage_inline_chunks(b"\x00\x11\x22\x33")
        .await;
    assert!(damaged >= 1, "the small value must be inline");
    let only_small = ReadFilter {
        prefix: None,
        keys: vec!["small".into()],
    };
    let err = c
        .read_state(Target::checkpoint(&cp.id), only_small)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.to_string().contains("small"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Concurrency and cancellation
// ---------------------------------------------------------------------------------------------

async fn concurrent_creates_beyond_the_pool_finish_or_fail_cleanly(setup: Setup) {
    const POOL: u32 = 4;
    let env = TestEnv::start_with(setup, |c| {
        c.db_max_connections = POOL;
        c.db_acquire_timeout = Duration::from_secs(20);
    })
    .await;
    for wave in [POOL as usize, 16 * POOL as usize] {
        let calls = (0..wave).map(|i| {
            let client = env.client.clone();
            let state = State::from([("v".to_owned(), Bytes::from(noise(20_000, i as u64)))]);
            tokio::spawn(async move {
                let create =
                    client.create(NewCheckpoint::full(format!("w{wave}-{i}"), state.clone()));
                let cp = tokio::time::timeout(Duration::from_secs(30), create)
                    .await
                    .expect("finished within its deadline");
                (cp, state, client)
            })
        });
        let mut ok = 0;
        for call in futures::future::join_all(calls).await {
            let (result, state, client) = call.unwrap();
            match result {
                Ok(cp) => {
                    ok += 1;
                    let (_, loaded) = client
                        .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
                        .await
                        .unwrap();
                    assert_eq!(loaded, state);
                }
                Err(e) => assert_eq!(
                    e.code(),
                    Code::Unavailable,
                    "only a clean UNAVAILABLE may fail: {e:?}"
                ),
            }
        }
        assert!(ok >= wave / 2, "only {ok} of {wave} succeeded");
    }
}

async fn a_cancelled_write_is_all_or_nothing_and_the_next_write_succeeds_at_once(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let mut head = c
        .create(NewCheckpoint::full("cancel", one("k", b"0")))
        .await
        .unwrap();
    for (round, wait_ms) in [1u64, 3, 8, 20, 50, 120].into_iter().enumerate() {
        let state = State::from([(
            "k".to_owned(),
            Bytes::from(noise(3 * 1024 * 1024, round as u64)),
        )]);
        let create = c.create(NewCheckpoint::full("cancel", state.clone()).parent(&head.id));
        let _ = tokio::time::timeout(Duration::from_millis(wait_ms), create).await;

        // Either the whole checkpoint is there, or none of it.
        let listed = c.list_all_checkpoints("cancel", None).await.unwrap();
        let newest = &listed[0];
        if newest.id != head.id {
            let (_, loaded) = c
                .read_state(Target::checkpoint(&newest.id), ReadFilter::default())
                .await
                .unwrap();
            assert_eq!(
                loaded, state,
                "round {round}: a committed checkpoint must be complete"
            );
        }
        // The next write succeeds at once. A cancel can cross a commit already under way:
        // then the cancelled checkpoint landed whole, and the write learns the new head from
        // ABORTED and lands on the retry.
        let (current, _) = c
            .read_state(Target::head("cancel"), ReadFilter::default())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let next = NewCheckpoint::full("cancel", one("k", b"after"));
        head = match c.create(next.clone().parent(&current.id)).await {
            Ok(cp) => cp,
            Err(ckpt_client::Error::Aborted {
                current_head: Some(moved),
                ..
            }) => {
                let (_, landed) = c
                    .read_state(Target::checkpoint(&moved), ReadFilter::default())
                    .await
                    .unwrap();
                assert_eq!(
                    landed, state,
                    "round {round}: the cancelled write landed whole"
                );
                c.create(next.parent(&moved)).await.unwrap()
            }
            Err(other) => panic!("round {round}: {other:?}"),
        };
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "round {round}: the next write was blocked"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------------------------

async fn kill_9_during_a_large_upload_loses_nothing_committed(setup: Setup) {
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::fresh_catalog(setup, dir.path()).await;
    let store = common::fresh_store(setup, dir.path());
    let port = common::free_port();
    let mut server = common::spawn_server(&db_url, &store, port).await;
    let client = Client::connect(server.url.clone()).await.unwrap();

    // Some committed history.
    let mut committed = Vec::new();
    let mut parent: Option<String> = None;
    for i in 0..5u64 {
        let state = State::from([(format!("k{i}"), Bytes::from(noise(100_000, i)))]);
        let mut new = NewCheckpoint::full("crash", state.clone());
        if let Some(p) = &parent {
            new = new.parent(p);
        }
        let cp = client.create(new).await.unwrap();
        parent = Some(cp.id.clone());
        committed.push((cp.id, state));
    }

    // A 48 MiB upload, killed part-way.
    let big = State::from([("huge".to_owned(), Bytes::from(noise(48 * 1024 * 1024, 99)))]);
    let upload = {
        let client = client.clone();
        let big = NewCheckpoint::full("crash", big.clone()).parent(parent.as_deref().unwrap());
        tokio::spawn(async move { client.upload(big).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.child.kill().expect("kill -9");
    server.child.wait().unwrap();
    let outcome = upload.await.unwrap();

    // Restart on the same database and store.
    let mut server = common::spawn_server(&db_url, &store, port).await;
    let client = Client::connect(server.url.clone()).await.unwrap();
    for (id, state) in &committed {
        let (_, loaded) = client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
            .unwrap();
        assert_eq!(&loaded, state);
    }
    // Every listed checkpoint loads in full; the big one is complete or absent.
    let listed = client.list_all_checkpoints("crash", None).await.unwrap();
    for cp in &listed {
        let (_, loaded) = client
            .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
            .await
            .unwrap();
        if loaded.contains_key("huge") {
            assert_eq!(loaded, big);
        }
    }
    match outcome {
        Ok(cp) => assert!(
            listed.iter().any(|l| l.id == cp.id),
            "a reported success must survive"
        ),
        Err(_) => assert!(listed.len() == 5 || listed.len() == 6),
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

on_every_setup!(
    damaged_or_missing_chunks_are_data_loss,
    bad_keys_are_invalid_arguments_naming_the_change,
    bad_names_are_invalid_arguments,
    metadata_must_be_a_json_object_without_nul,
    missing_parents_and_missing_targets_are_not_found,
    states_over_the_limits_are_resource_exhausted_on_both_paths,
    a_unary_state_over_4_mib_works_when_the_limit_allows,
    an_upload_cut_off_half_way_leaves_nothing_visible,
    concurrent_creates_beyond_the_pool_finish_or_fail_cleanly,
    a_cancelled_write_is_all_or_nothing_and_the_next_write_succeeds_at_once,
    kill_9_during_a_large_upload_loses_nothing_committed,
);
