//! End to end: the real server on a real socket, the real client, real Postgres, and both a
//! local directory and an S3-compatible server.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use ckpt_client::{Client, Error, NewCheckpoint, Op, ReadFilter, State, Target};
use common::{Setup, TestEnv, noise, transcript};
use tonic::Code;

fn state_of(pairs: &[(&str, &[u8])]) -> State {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v)))
        .collect()
}

async fn load(client: &Client, id: &str) -> State {
    client
        .read_state(Target::checkpoint(id), ReadFilter::default())
        .await
        .expect("state loads")
        .1
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

async fn full_and_incremental_states_load_byte_for_byte(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let big = noise(3 * 1024 * 1024 + 11, 1);
    let text = transcript(200_000, 2);
    let base = state_of(&[
        ("transcript", &text),
        ("files/blob.bin", &big),
        ("empty", b""),
        ("ünï/κλειδί", b"x"),
    ]);

    let first = client
        .create(
            NewCheckpoint::full("s-1", base.clone())
                .message("first")
                .metadata(serde_json::json!({"step": 1})),
        )
        .await
        .unwrap();
    assert_eq!(first.summary.entry_count, 4);
    assert_eq!(
        first.summary.logical_bytes,
        (big.len() + text.len() + 1) as u64
    );
    assert!(
        first.summary.stored_bytes > big.len() as u64,
        "new noise must be stored"
    );
    assert!(first.parent_ids.is_empty());
    assert_eq!(first.sequence, 1);
    assert_eq!(first.metadata, serde_json::json!({"step": 1}));
    assert_eq!(load(client, &first.id).await, base);

    // Incremental: append to the transcript, delete a key, add one.
    let mut longer = text.clone();
    longer.extend_from_slice(b" and then the agent committed");
    let ops = vec![
        Op::Put("transcript".into(), Bytes::from(longer.clone())),
        Op::Delete("empty".into()),
        Op::Put("files/new.txt".into(), Bytes::from_static(b"new file")),
    ];
    let second = client
        .create(NewCheckpoint::incremental("s-1", &first.id, ops))
        .await
        .unwrap();
    let mut expected = base.clone();
    expected.insert("transcript".into(), Bytes::from(longer));
    expected.remove("empty");
    expected.insert("files/new.txt".into(), Bytes::from_static(b"new file"));
    assert_eq!(load(client, &second.id).await, expected);
    assert_eq!(second.parent_ids, vec![first.id.clone()]);
    assert_eq!(second.sequence, 2);
    // The 3 MiB blob was not stored again; the appended transcript mostly deduplicated.
    assert!(
        second.summary.stored_bytes < 100_000,
        "stored {} bytes",
        second.summary.stored_bytes
    );
    // The first checkpoint is untouched.
    assert_eq!(load(client, &first.id).await, base);

    // Reads by head, by prefix and by key list.
    let (head, state) = client
        .read_state(Target::head("s-1"), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(head.id, second.id);
    assert_eq!(state, expected);
    let filter = ReadFilter {
        prefix: Some("files/".into()),
        keys: vec![],
    };
    let (_, files) = client
        .read_state(Target::checkpoint(&second.id), filter)
        .await
        .unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec!["files/blob.bin", "files/new.txt"]
    );
    let filter = ReadFilter {
        prefix: None,
        keys: vec!["transcript".into(), "absent".into()],
    };
    let (_, picked) = client
        .read_state(Target::checkpoint(&second.id), filter)
        .await
        .unwrap();
    assert_eq!(picked.keys().collect::<Vec<_>>(), vec!["transcript"]);
}

async fn identical_content_is_stored_once_across_sessions(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let value = noise(2 * 1024 * 1024, 9);
    let a = env
        .client
        .create(NewCheckpoint::full("a", state_of(&[("v", &value)])))
        .await
        .unwrap();
    let b = env
        .client
        .create(NewCheckpoint::full("b", state_of(&[("other-key", &value)])))
        .await
        .unwrap();
    assert!(a.summary.stored_bytes >= value.len() as u64);
    assert!(
        b.summary.stored_bytes < 8 * 1024,
        "second copy stored {} bytes",
        b.summary.stored_bytes
    );
    let objects_before = env.object_keys().await.len();
    env.client
        .create(NewCheckpoint::full("c", state_of(&[("v", &value)])))
        .await
        .unwrap();
    assert_eq!(env.object_keys().await.len(), objects_before);
}

async fn a_state_of_many_keys_changes_cheaply(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let base: State = (0..20_000)
        .map(|i| (format!("k/{i:06}"), Bytes::from(format!("value {i}"))))
        .collect();
    let first = env
        .client
        .create(NewCheckpoint::full("many", base.clone()))
        .await
        .unwrap();
    let ops = vec![Op::Put("k/010000".into(), Bytes::from_static(b"changed"))];
    let second = env
        .client
        .create(NewCheckpoint::incremental("many", &first.id, ops))
        .await
        .unwrap();
    assert_eq!(second.summary.entry_count, 20_000);
    // One leaf page plus its ancestors, not the 20,000-entry manifest.
    assert!(
        second.summary.stored_bytes < 16 * 1024,
        "stored {} bytes",
        second.summary.stored_bytes
    );
    let mut expected = base;
    expected.insert("k/010000".into(), Bytes::from_static(b"changed"));
    assert_eq!(load(&env.client, &second.id).await, expected);
}

// ---------------------------------------------------------------------------------------------
// Heads, listing, sessions
// ---------------------------------------------------------------------------------------------

async fn a_create_on_a_moved_branch_is_aborted_with_the_current_head(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = c
        .create(NewCheckpoint::full("race", state_of(&[("k", b"1")])))
        .await
        .unwrap();
    let second = c
        .create(NewCheckpoint::full("race", state_of(&[("k", b"2")])).parent(&first.id))
        .await
        .unwrap();

    // A second host still believes the head is `first`.
    let stale = c
        .create(NewCheckpoint::incremental(
            "race",
            &first.id,
            vec![Op::Delete("k".into())],
        ))
        .await;
    match stale {
        Err(Error::Aborted { current_head, .. }) => {
            assert_eq!(current_head, Some(second.id.clone()))
        }
        other => panic!("expected ABORTED, got {other:?}"),
    }
    // A full create without a parent on a branch that has one is a conflict too.
    let err = c
        .create(NewCheckpoint::full("race", state_of(&[("k", b"3")])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    // Nothing was lost or added.
    assert_eq!(c.list_all_checkpoints("race", None).await.unwrap().len(), 2);
    assert_eq!(load(c, &second.id).await, state_of(&[("k", b"2")]));
}

async fn listing_pages_stay_correct_while_checkpoints_arrive(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut new = NewCheckpoint::full("paged", state_of(&[("i", i.to_string().as_bytes())]));
        if let Some(p) = &parent {
            new = new.parent(p);
        }
        let cp = c.create(new).await.unwrap();
        parent = Some(cp.id.clone());
        ids.push(cp.id);
    }
    let first = c.list_checkpoints("paged", None, 10, "").await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert!(!first.next_page_token.is_empty());

    // New checkpoints arrive between pages: they must not shift what the next pages return.
    for i in 0..5 {
        let cp = c
            .create(
                NewCheckpoint::full("paged", state_of(&[("late", &[i])]))
                    .parent(parent.as_deref().unwrap()),
            )
            .await
            .unwrap();
        parent = Some(cp.id);
    }
    let mut seen: Vec<String> = first.items.iter().map(|cp| cp.id.clone()).collect();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = c.list_checkpoints("paged", None, 10, &token).await.unwrap();
        seen.extend(page.items.iter().map(|cp| cp.id.clone()));
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each exactly once");

    let err = c
        .list_checkpoints("paged", None, 10, "garbage")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        c.list_checkpoints("nope", None, 10, "")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

async fn sessions_list_in_pages_and_count_their_checkpoints(setup: Setup) {
    let env = TestEnv::start(setup).await;
    for i in 0..7 {
        env.client
            .create(NewCheckpoint::full(
                format!("sess-{i}"),
                state_of(&[("k", b"v")]),
            ))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = env.client.list_sessions(3, &token).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|s| s.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        (0..7).map(|i| format!("sess-{i}")).collect::<Vec<_>>()
    );
    let session = env.client.get_session("sess-3").await.unwrap();
    assert_eq!(session.checkpoint_count, 1);
}

async fn a_deleted_session_cannot_be_written_through_and_its_id_starts_fresh(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = c
        .create(NewCheckpoint::full("gone", state_of(&[("k", b"v")])))
        .await
        .unwrap();
    assert_eq!(c.delete_session("gone").await.unwrap(), 1);

    let err = c
        .create(NewCheckpoint::incremental(
            "gone",
            &first.id,
            vec![Op::Delete("k".into())],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(c.get(&first.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        c.get_session("gone").await.unwrap_err().code(),
        Code::NotFound
    );

    let fresh = c
        .create(NewCheckpoint::full("gone", state_of(&[("new", b"life")])))
        .await
        .unwrap();
    assert_eq!(fresh.sequence, 1);
    assert!(fresh.parent_ids.is_empty());
    assert_eq!(c.list_all_checkpoints("gone", None).await.unwrap().len(), 1);
    assert_eq!(
        c.delete_session("never-was").await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn deleting_a_checkpoint_keeps_its_children_loadable_but_never_a_head(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = c
        .create(NewCheckpoint::full(
            "del",
            state_of(&[("a", b"1"), ("b", b"2")]),
        ))
        .await
        .unwrap();
    let second = c
        .create(NewCheckpoint::incremental(
            "del",
            &first.id,
            vec![Op::Put("c".into(), Bytes::from_static(b"3"))],
        ))
        .await
        .unwrap();
    let err = c.delete_checkpoint(&second.id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    c.delete_checkpoint(&first.id).await.unwrap();
    assert_eq!(c.get(&first.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        load(c, &second.id).await,
        state_of(&[("a", b"1"), ("b", b"2"), ("c", b"3")])
    );
    assert_eq!(
        c.delete_checkpoint(&first.id).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(c.get_session("del").await.unwrap().checkpoint_count, 1);
}

async fn names_that_would_collide_when_joined_stay_apart(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let x = c
        .create(NewCheckpoint::full("a/b", state_of(&[("k", b"x")])).branch("c"))
        .await
        .unwrap();
    let y = c
        .create(NewCheckpoint::full("a", state_of(&[("k", b"y")])).branch("b/c"))
        .await
        .unwrap();
    assert_eq!(load(c, &x.id).await, state_of(&[("k", b"x")]));
    assert_eq!(load(c, &y.id).await, state_of(&[("k", b"y")]));
    let head = |s: &str, b: &str| Target::Head {
        session_id: s.into(),
        branch: b.into(),
    };
    assert_eq!(
        c.read_state(head("a/b", "c"), ReadFilter::default())
            .await
            .unwrap()
            .0
            .id,
        x.id
    );
    assert_eq!(
        c.read_state(head("a", "b/c"), ReadFilter::default())
            .await
            .unwrap()
            .0
            .id,
        y.id
    );
    assert_eq!(
        c.read_state(head("a", "c"), ReadFilter::default())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(c.list_all_checkpoints("a", None).await.unwrap().len(), 1);
}

async fn health_and_reflection_answer(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let channel = tonic::transport::Channel::from_shared(env.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: "ckpt.v1.CheckpointService".into(),
    };
    let status = health.check(request).await.unwrap().into_inner().status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

async fn a_large_full_state_round_trips_through_the_streamed_upload(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut state = State::new();
    for i in 0..40 {
        state.insert(
            format!("files/{i:03}"),
            Bytes::from(noise(150_000 + i * 7, i as u64)),
        );
    }
    let cp = env
        .client
        .upload(NewCheckpoint::full("streamed", state.clone()))
        .await
        .unwrap();
    assert_eq!(cp.summary.entry_count, 40);
    assert_eq!(load(&env.client, &cp.id).await, state);
    let expected: BTreeMap<_, _> = state.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let got: BTreeMap<_, _> = load(&env.client, &cp.id)
        .await
        .iter()
        .map(|(k, v)| (k.clone(), v.len()))
        .collect();
    assert_eq!(got, expected);
}

/// Reads a whole state over the raw wire, returning its entries in order and how many
/// messages carried them.
async fn read_raw(env: &TestEnv, id: &str, batch_entries: bool) -> (Vec<(String, Vec<u8>)>, usize) {
    use ckpt_proto::v1::{
        ReadStateRequest, checkpoint_service_client::CheckpointServiceClient, read_state_request,
        read_state_response::Part,
    };
    let mut raw = CheckpointServiceClient::connect(env.url())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let request = ReadStateRequest {
        target: Some(read_state_request::Target::CheckpointId(id.into())),
        batch_entries,
        ..Default::default()
    };
    let mut stream = raw.read_state(request).await.unwrap().into_inner();
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut messages = 0;
    while let Some(message) = stream.message().await.unwrap() {
        messages += 1;
        match message.part.unwrap() {
            Part::Checkpoint(_) => {}
            Part::Entry(header) => entries.push((header.key, Vec::new())),
            Part::Data(bytes) => entries.last_mut().unwrap().1.extend_from_slice(&bytes),
            Part::Entries(batch) => {
                assert!(batch_entries, "a batch sent to a caller that did not ask");
                entries.extend(batch.entries.into_iter().map(|e| (e.key, e.value.to_vec())));
            }
        }
    }
    (entries, messages)
}

async fn small_values_are_batched_only_for_callers_that_ask(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let mut state = State::new();
    for i in 0..600 {
        state.insert(format!("k/{i:04}"), Bytes::from(noise(700 + i, i as u64)));
    }
    state.insert("k/empty".into(), Bytes::new());
    state.insert("k/large".into(), Bytes::from(noise(300_000, 9)));
    let cp = env
        .client
        .create(NewCheckpoint::full("batched", state.clone()))
        .await
        .unwrap();
    let expected: Vec<(String, Vec<u8>)> =
        state.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();

    let (plain, plain_messages) = read_raw(&env, &cp.id, false).await;
    assert_eq!(plain, expected);
    // The checkpoint, then a header and one data message per non-empty small value.
    assert!(plain_messages > 2 * 600, "{plain_messages} messages");

    let (batched, batched_messages) = read_raw(&env, &cp.id, true).await;
    assert_eq!(batched, expected);
    assert!(
        batched_messages < plain_messages / 4,
        "{batched_messages} batched messages against {plain_messages}"
    );
    // The client library asks for batches and reads them back exactly.
    assert_eq!(load(&env.client, &cp.id).await, state);
}

async fn a_client_that_asks_for_compression_round_trips(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = Client::connect(env.url()).await.unwrap().with_compression();
    let value = transcript(3 * 1024 * 1024, 7);
    let state = state_of(&[("t", &value)]);
    let cp = client
        .create(NewCheckpoint::full("zstd", state.clone()))
        .await
        .unwrap();
    let cp2 = client
        .upload(NewCheckpoint::full("zstd", state.clone()).parent(&cp.id))
        .await
        .unwrap();
    assert_eq!(load(&client, &cp2.id).await, state);
}

on_every_setup!(
    small_values_are_batched_only_for_callers_that_ask,
    a_client_that_asks_for_compression_round_trips,
    full_and_incremental_states_load_byte_for_byte,
    identical_content_is_stored_once_across_sessions,
    a_state_of_many_keys_changes_cheaply,
    a_create_on_a_moved_branch_is_aborted_with_the_current_head,
    listing_pages_stay_correct_while_checkpoints_arrive,
    sessions_list_in_pages_and_count_their_checkpoints,
    a_deleted_session_cannot_be_written_through_and_its_id_starts_fresh,
    deleting_a_checkpoint_keeps_its_children_loadable_but_never_a_head,
    names_that_would_collide_when_joined_stay_apart,
    health_and_reflection_answer,
    a_large_full_state_round_trips_through_the_streamed_upload,
);
