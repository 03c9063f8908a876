//! SIGTERM on the real binary: health turns NOT_SERVING while calls are still accepted, calls
//! in flight finish, the process exits 0 within its grace period, and every write it
//! acknowledged is there after a restart. A second signal exits at once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt_client::{Client, NewCheckpoint, ReadFilter, State, Target};
use ckpt_proto::v1::checkpoint_service_client::CheckpointServiceClient;
use ckpt_proto::v1::{self, upload_checkpoint_request::Part};
use common::{Process, free_port, fresh_database, noise, spawn_server, spawn_server_with};
use futures::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Checkpoints the server acknowledged, with the state each must load as, and when.
type Acked = Arc<Mutex<Vec<(String, State, Instant)>>>;

fn sigterm(process: &Process) {
    let pid = process.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits up to `limit` for the process to exit and returns its status.
async fn exit_within(process: &mut Process, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates checkpoints on its own session until a call fails (the listener closed).
async fn creator(url: String, n: u64, acked: Acked) {
    let Ok(client) = Client::connect(url).await else {
        return;
    };
    let mut head: Option<String> = None;
    for step in 0.. {
        let state = State::from([(
            format!("k{n}"),
            Bytes::from(noise(200_000, n * 1_000 + step)),
        )]);
        let mut new = NewCheckpoint::full(format!("term-{n}"), state.clone());
        new.parent_id = head.clone();
        match tokio::time::timeout(Duration::from_secs(10), client.create(new)).await {
            Ok(Ok(cp)) => {
                head = Some(cp.id.clone());
                acked.lock().unwrap().push((cp.id, state, Instant::now()));
            }
            // The listener closed: the call was refused or cut off, and this creator is done.
            Ok(Err(_)) => return,
            Err(_) => panic!("creator {n}: a create hung"),
        }
    }
}

/// One value of 1,000 bytes sent in ten pieces over `over`.
fn trickled_upload(over: Duration) -> impl futures::Stream<Item = v1::UploadCheckpointRequest> {
    let part = |part| v1::UploadCheckpointRequest { part: Some(part) };
    let head = vec![
        part(Part::Header(v1::UploadHeader {
            session_id: "in-flight".into(),
            mode: v1::CreateMode::Full as i32,
            ..Default::default()
        })),
        part(Part::Put(v1::EntryHeader {
            key: "k".into(),
            size: 1_000,
        })),
    ];
    let pieces = futures::stream::iter(0..10u8).then(move |i| async move {
        tokio::time::sleep(over / 10).await;
        part(Part::Data(Bytes::from(vec![i; 100])))
    });
    let commit = part(Part::Commit(v1::UploadCommit { change_count: 1 }));
    futures::stream::iter(head)
        .chain(pieces)
        .chain(futures::stream::iter([commit]))
}

async fn health(client: &mut HealthClient<Channel>, service: &str) -> Option<ServingStatus> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let response = client.check(request).await.ok()?;
    Some(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_calls_and_loses_no_acknowledged_write() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("chunks").to_string_lossy().into_owned();
    let grace = Duration::from_secs(10);
    let flags = ["--shutdown-drain-delay", "1s", "--shutdown-grace", "10s"];
    let mut server = spawn_server_with(&db, &store, free_port(), &flags).await;
    let channel = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut probe = HealthClient::new(channel);
    let service = "ckpt.v1.CheckpointService";
    assert_eq!(
        health(&mut probe, service).await,
        Some(ServingStatus::Serving)
    );

    // Writers, and one slow upload that is still running when the signal comes.
    let acked: Acked = Arc::default();
    let creators: Vec<_> = (0..4)
        .map(|n| tokio::spawn(creator(server.url.clone(), n, Arc::clone(&acked))))
        .collect();
    let mut raw = CheckpointServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let in_flight = tokio::spawn(async move {
        raw.upload_checkpoint(trickled_upload(Duration::from_secs(3)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&server);
    let signalled = Instant::now();

    // Health turns NOT_SERVING, for the service and for the server as a whole, while the
    // listener still takes calls.
    let mut seen = false;
    while signalled.elapsed() < Duration::from_millis(900) {
        let named = health(&mut probe, service).await;
        let whole = health(&mut probe, "").await;
        if named == Some(ServingStatus::NotServing) && whole == Some(ServingStatus::NotServing) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen,
        "health never reported NOT_SERVING during the drain delay"
    );
    // Liveness stays SERVING, so an orchestrator does not restart a draining instance.
    assert_eq!(
        health(&mut probe, "liveness").await,
        Some(ServingStatus::Serving)
    );

    // The call in flight finishes; the process exits 0 within the grace period.
    let uploaded = in_flight
        .await
        .unwrap()
        .expect("the in-flight upload succeeds");
    let status = exit_within(&mut server, grace).await;
    assert!(status.success(), "{status:?}");
    for creator in creators {
        creator.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().any(|(_, _, at)| *at > signalled),
        "no call was accepted during the drain delay"
    );

    // Everything acknowledged is there after a restart, byte for byte.
    let server = spawn_server(&db, &store, free_port()).await;
    let client = Client::connect(server.url.clone()).await.unwrap();
    let id = uploaded.into_inner().checkpoint.unwrap().id;
    let (_, state) = client
        .read_state(Target::checkpoint(&id), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(state["k"].len(), 1_000);
    for (id, expected, _) in &acked {
        let (_, state) = client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
            .unwrap();
        assert_eq!(&state, expected, "checkpoint {id}");
    }
    assert!(
        acked.len() >= 4,
        "only {} creates were acknowledged",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_exits_at_once() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("chunks").to_string_lossy().into_owned();
    let flags = ["--shutdown-drain-delay", "30s"];
    let mut server = spawn_server_with(&db, &store, free_port(), &flags).await;

    sigterm(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited on the first signal"
    );
    sigterm(&server);
    let status = exit_within(&mut server, Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(130));
}
