//! The server under pressure: bursts past the concurrency limit, calls past their deadline,
//! slow readers, compressed requests and decompression bombs. Each gets a prompt, precise
//! status, commits nothing partial, and leaves the server serving.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt_client::{Client, NewCheckpoint, ReadFilter, State, Target};
use ckpt_proto::v1::checkpoint_service_client::CheckpointServiceClient;
use ckpt_proto::v1::{self, upload_checkpoint_request::Part};
use common::{Setup, TestEnv, noise, transcript};
use futures::{Stream, StreamExt};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a trickled upload takes when nothing cuts it short.
const TRICKLE: Duration = Duration::from_secs(2);

async fn raw(url: &str) -> CheckpointServiceClient<Channel> {
    CheckpointServiceClient::connect(url.to_owned())
        .await
        .unwrap()
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn part(part: Part) -> v1::UploadCheckpointRequest {
    v1::UploadCheckpointRequest { part: Some(part) }
}

/// A streamed upload of one 1,000-byte value sent in ten pieces spread over `over`: a real
/// client on a slow link, which keeps its call open that long.
fn trickled_upload(
    session: &str,
    over: Duration,
) -> impl Stream<Item = v1::UploadCheckpointRequest> + Send + 'static {
    let head = vec![
        part(Part::Header(v1::UploadHeader {
            session_id: session.into(),
            mode: v1::CreateMode::Full as i32,
            ..Default::default()
        })),
        part(Part::Put(v1::EntryHeader {
            key: "k".into(),
            size: 1_000,
        })),
    ];
    let pause = over / 10;
    let pieces = futures::stream::iter(0..10u8).then(move |i| async move {
        tokio::time::sleep(pause).await;
        part(Part::Data(Bytes::from(vec![i; 100])))
    });
    let commit = part(Part::Commit(v1::UploadCommit { change_count: 1 }));
    futures::stream::iter(head)
        .chain(pieces)
        .chain(futures::stream::iter([commit]))
}

async fn health_of(url: &str, service: &str) -> ServingStatus {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let response = HealthClient::new(channel).check(request).await.unwrap();
    response.into_inner().status()
}

// ---------------------------------------------------------------------------------------------
// Concurrency limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_limit_is_refused_at_once_and_the_server_recovers() {
    let env = TestEnv::start_with(Setup::Postgres, |c| c.max_concurrent_calls = 4).await;
    let c = raw(&env.url()).await;
    let deadline = Duration::from_secs(6);

    // Forty slow uploads at once, each with a deadline.
    let mut calls = Vec::new();
    for n in 0..40 {
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            let mut request = Request::new(trickled_upload(&format!("burst-{n}"), TRICKLE));
            request.set_timeout(deadline);
            let started = Instant::now();
            let result = c.upload_checkpoint(request).await;
            (result.map(|r| r.into_inner()), started.elapsed())
        }));
    }
    // The limit leaves health checks alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let service = "ckpt.v1.CheckpointService";
    assert_eq!(health_of(&env.url(), service).await, ServingStatus::Serving);

    let mut served = 0;
    let mut refused = 0;
    for call in calls {
        let (result, took) = call.await.unwrap();
        assert!(
            took < deadline + Duration::from_millis(500),
            "a call took {took:?}"
        );
        match result {
            Ok(created) => {
                served += 1;
                let id = created.checkpoint.unwrap().id;
                let (_, state) = env
                    .client
                    .read_state(Target::checkpoint(&id), ReadFilter::default())
                    .await
                    .unwrap();
                assert_eq!(state["k"].len(), 1_000);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains("limit of 4 concurrent calls"),
                    "{status:?}"
                );
                assert!(took < Duration::from_secs(1), "a refusal took {took:?}");
                refused += 1;
            }
        }
    }
    assert!(
        (1..=4).contains(&served),
        "{served} served, {refused} refused"
    );
    assert_eq!(served + refused, 40);

    // Right after the burst, calls are served again.
    let one = State::from([("k".to_owned(), Bytes::from_static(b"after"))]);
    for n in 0..8 {
        let new = NewCheckpoint::full(format!("after-{n}"), one.clone());
        env.client.create(new).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowly_read_stream_holds_its_permit_until_it_ends() {
    let env = TestEnv::start_with(Setup::Postgres, |c| c.max_concurrent_calls = 1).await;
    let big = State::from([("log".to_owned(), Bytes::from(transcript(16 << 20, 7)))]);
    let cp = env
        .client
        .upload(NewCheckpoint::full("slow-reader", big))
        .await
        .unwrap();

    // Read the first part of a 16 MiB state, then stop reading: flow control holds the rest
    // of the response on the server, which is still answering this call.
    let mut c = raw(&env.url()).await;
    let request = v1::ReadStateRequest {
        target: Some(v1::read_state_request::Target::CheckpointId(cp.id.clone())),
        ..Default::default()
    };
    let mut stream = c.read_state(request).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let err = env.client.get_session("slow-reader").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.to_string().contains("limit of 1 concurrent calls"),
        "{err}"
    );
    assert_eq!(health_of(&env.url(), "").await, ServingStatus::Serving);

    // Giving up on the stream frees the permit.
    drop(stream);
    let freed = Instant::now();
    loop {
        match env.client.get_session("slow-reader").await {
            Ok(_) => break,
            Err(err) if err.code() == Code::ResourceExhausted => {
                assert!(
                    freed.elapsed() < Duration::from_secs(2),
                    "permit never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("{err}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_client_deadline_ends_promptly_and_commits_nothing() {
    let env = TestEnv::start(Setup::Postgres).await;
    let mut c = raw(&env.url()).await;

    let mut request = Request::new(trickled_upload("late", Duration::from_secs(5)));
    request.set_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let status = c.upload_checkpoint(request).await.unwrap_err();
    let took = started.elapsed();
    // The client's channel and the server both enforce the deadline; either may answer first.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(took < Duration::from_millis(1_300), "took {took:?}");

    assert_eq!(
        env.client.get_session("late").await.unwrap_err().code(),
        Code::NotFound
    );
    let next = NewCheckpoint::full("late", State::from([("k".into(), "v".into())]));
    assert_eq!(env.client.create(next).await.unwrap().sequence, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_request_timeout_is_deadline_exceeded_and_commits_nothing() {
    let env = TestEnv::start_with(Setup::Postgres, |c| {
        c.request_timeout = Duration::from_millis(700);
    })
    .await;
    let mut c = raw(&env.url()).await;

    // No client deadline: the server's own cap ends the call.
    let started = Instant::now();
    let status = c
        .upload_checkpoint(trickled_upload("capped", Duration::from_secs(5)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took >= Duration::from_millis(650), "took {took:?}");
    assert!(took < Duration::from_millis(1_300), "took {took:?}");

    assert_eq!(
        env.client.get_session("capped").await.unwrap_err().code(),
        Code::NotFound
    );
    let next = NewCheckpoint::full("capped", State::from([("k".into(), "v".into())]));
    assert_eq!(env.client.create(next).await.unwrap().sequence, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_read_past_its_deadline_ends_with_deadline_exceeded() {
    let env = TestEnv::start_with(Setup::Postgres, |c| {
        c.request_timeout = Duration::from_secs(1);
    })
    .await;
    let big = State::from([("log".to_owned(), Bytes::from(transcript(16 << 20, 9)))]);
    let cp = env
        .client
        .upload(NewCheckpoint::full("slow-read", big))
        .await
        .unwrap();

    let mut c = raw(&env.url()).await;
    let request = v1::ReadStateRequest {
        target: Some(v1::read_state_request::Target::CheckpointId(cp.id)),
        ..Default::default()
    };
    let mut stream = c.read_state(request).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the whole state arrived past the deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // The server keeps serving.
    env.client.get_session("slow-read").await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Compression and size limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn zstd_compressed_calls_round_trip_on_both_write_paths() {
    let env = TestEnv::start(Setup::Postgres).await;
    let client = Client::connect(env.url()).await.unwrap().with_compression();

    // Under UNARY_LIMIT the create is one message; above it, a stream.
    for (session, len) in [("small", 100_000), ("large", 3 << 20)] {
        let state = State::from([
            ("log".to_owned(), Bytes::from(transcript(len, 3))),
            ("blob".to_owned(), Bytes::from(noise(50_000, 4))),
        ]);
        let cp = client
            .create(NewCheckpoint::full(session, state.clone()))
            .await
            .unwrap();
        let (_, loaded) = client
            .read_state(Target::checkpoint(&cp.id), ReadFilter::default())
            .await
            .unwrap();
        assert_eq!(loaded, state, "{session}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_request_that_inflates_past_the_limit_is_resource_exhausted() {
    let env = TestEnv::start_with(Setup::Postgres, |c| {
        c.max_message_size = bytesize::ByteSize::mib(1);
    })
    .await;
    for encoding in [CompressionEncoding::Zstd, CompressionEncoding::Gzip] {
        let mut c = raw(&env.url()).await.send_compressed(encoding);
        // 8 MiB of zeros travel as a few kilobytes.
        let request = v1::CreateCheckpointRequest {
            session_id: "bomb".into(),
            mode: v1::CreateMode::Full as i32,
            changes: vec![v1::Change {
                op: Some(v1::change::Op::Put(v1::Entry {
                    key: "k".into(),
                    value: Bytes::from(vec![0u8; 8 << 20]),
                })),
            }],
            ..Default::default()
        };
        let status = c.create_checkpoint(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{encoding:?}: {status:?}"
        );
    }
    assert_eq!(
        env.client.get_session("bomb").await.unwrap_err().code(),
        Code::NotFound
    );
}
