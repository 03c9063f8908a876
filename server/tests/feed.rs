//! The change feed, leases and idempotent creates, through the real server over real sockets:
//! a watch that reconnects at random across instances misses nothing and sees nothing twice;
//! a create whose reply is lost is retried into the same checkpoint; a lease fences a branch.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ckpt_client::{
    Client, CollectOptions, Error, Event, EventKind, NewCheckpoint, ReadFilter, State, Target,
};
use common::{Db, Setup, TestEnv, free_port, fresh_database, spawn_server};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Checkpoints host 1 writes while host 2 watches.
const WRITES: usize = 1000;
/// Sessions the writes are spread over, one writer task each.
const WRITERS: usize = 4;
/// The longest the watcher waits for the next event before the test fails.
const EVENT_LIMIT: Duration = Duration::from_secs(20);

fn state(n: usize) -> State {
    State::from([("turn".to_owned(), Bytes::from(format!("turn {n}")))])
}

/// A small deterministic generator, so a failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

/// Reads the next event that is not a heartbeat, failing the test if none comes in time.
async fn next_event<S>(events: &mut S) -> Event
where
    S: futures::Stream<Item = Result<Event, Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + EVENT_LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("an event within the limit")
            .expect("the feed stays open")
            .expect("the feed does not fail");
        if event.kind != EventKind::Heartbeat {
            return event;
        }
    }
}

/// Where the feed stands now: the cursor of the heartbeat a watch starts with.
async fn feed_start(client: &Client, session: &str) -> String {
    let mut events = Box::pin(client.watch(session, "", "").await.expect("watch opens"));
    let first = events.next().await.expect("a first event").expect("ok");
    assert_eq!(first.kind, EventKind::Heartbeat);
    first.cursor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_reconnecting_at_random_across_instances_sees_each_commit_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = fresh_database().await;
    let store = dir.path().join("chunks").to_string_lossy().into_owned();
    let instances = [
        spawn_server(&db, &store, free_port()).await,
        spawn_server(&db, &store, free_port()).await,
    ];
    let writer = Client::connect(instances[0].url.clone()).await.unwrap();
    let watchers = [
        Client::connect(instances[1].url.clone()).await.unwrap(),
        Client::connect(instances[0].url.clone()).await.unwrap(),
    ];
    let start = feed_start(&watchers[0], "").await;

    // Host 1: one writer per session, each creating its checkpoints one after another.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = writer.clone();
        writers.push(tokio::spawn(async move {
            let session = format!("s{w}");
            let mut ids: Vec<String> = Vec::new();
            for n in 0..WRITES / WRITERS {
                let mut new = NewCheckpoint::full(session.clone(), state(n));
                if let Some(parent) = ids.last() {
                    new = new.parent(parent.clone());
                }
                ids.push(client.create(new).await.expect("create").id);
            }
            (session, ids)
        }));
    }

    // Host 2: watches the whole feed, dropping the stream after a random number of events and
    // resuming from its last cursor on the other instance.
    let mut dice = Dice(0x5eed_cafe);
    let mut cursor = start;
    let mut seen: Vec<Event> = Vec::new();
    let mut reconnects = 0;
    while seen.len() < WRITES {
        let client = &watchers[reconnects % watchers.len()];
        let mut events = Box::pin(client.watch("", "", &cursor).await.expect("watch opens"));
        let batch = 1 + dice.roll(60) as usize;
        for _ in 0..batch {
            let event = next_event(&mut events).await;
            assert!(
                event.cursor.parse::<i64>().unwrap() > cursor.parse::<i64>().unwrap(),
                "cursor {} after {cursor}",
                event.cursor
            );
            cursor = event.cursor.clone();
            seen.push(event);
            if seen.len() == WRITES {
                break;
            }
        }
        reconnects += 1;
    }

    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for task in writers {
        let (session, ids) = task.await.expect("writer");
        written.insert(session, ids);
    }
    assert!(reconnects > 10, "only {reconnects} reconnects");

    // Every event is a commit onto main, each checkpoint once, each session's in its order.
    let mut by_session: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in &seen {
        assert_eq!(event.kind, EventKind::CheckpointCreated, "{event:?}");
        assert_eq!(event.ref_name, "main");
        assert!(event.time.is_some());
        by_session
            .entry(event.session_id.clone())
            .or_default()
            .push(event.new_checkpoint_id.clone());
    }
    assert_eq!(by_session.len(), WRITERS);
    for (session, ids) in &by_session {
        assert_eq!(ids, &written[session], "session {session}");
    }
    let unique: HashSet<_> = seen.iter().map(|e| &e.new_checkpoint_id).collect();
    assert_eq!(unique.len(), WRITES);

    // Nothing more is pending after the last cursor.
    let mut events = Box::pin(watchers[0].watch("", "", &cursor).await.unwrap());
    let quiet = tokio::time::timeout(Duration::from_millis(600), next_event(&mut events)).await;
    assert!(quiet.is_err(), "an event after the last: {quiet:?}");
}

async fn every_kind_of_change_reaches_a_session_watcher(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let first = client
        .create(NewCheckpoint::full("s", state(0)))
        .await
        .unwrap();
    let start = feed_start(client, "s").await;
    let mut all = Box::pin(client.watch("s", "", &start).await.unwrap());
    let mut main_only = Box::pin(client.watch("s", "main", &start).await.unwrap());

    // Writes to another session are not this watcher's business.
    client
        .create(NewCheckpoint::full("other", state(0)))
        .await
        .unwrap();
    let second = client
        .create(NewCheckpoint::full("s", state(1)).parent(first.id.clone()))
        .await
        .unwrap();
    client.create_branch("s", "dev", &first.id).await.unwrap();
    client.set_tag("s", "v1", &second.id, None).await.unwrap();
    client.delete_tag("s", "v1").await.unwrap();
    client
        .reset_branch("s", "main", &first.id, &second.id)
        .await
        .unwrap();
    client.delete_session("s").await.unwrap();

    let expected = [
        (
            EventKind::CheckpointCreated,
            "main",
            first.id.as_str(),
            second.id.as_str(),
        ),
        (EventKind::BranchCreated, "dev", "", first.id.as_str()),
        (EventKind::TagSet, "v1", "", second.id.as_str()),
        (EventKind::TagRemoved, "v1", second.id.as_str(), ""),
        (
            EventKind::BranchMoved,
            "main",
            second.id.as_str(),
            first.id.as_str(),
        ),
        (EventKind::SessionDeleted, "", "", ""),
    ];
    for (kind, name, old, new) in expected {
        let event = next_event(&mut all).await;
        assert_eq!(event.session_id, "s");
        assert_eq!(
            (event.kind, event.ref_name.as_str()),
            (kind, name),
            "{event:?}"
        );
        assert_eq!(event.old_checkpoint_id, old, "{event:?}");
        assert_eq!(event.new_checkpoint_id, new, "{event:?}");
    }
    // The branch watcher sees main's moves and the deletion, not dev or the tag.
    let kinds = [
        EventKind::CheckpointCreated,
        EventKind::BranchMoved,
        EventKind::SessionDeleted,
    ];
    for kind in kinds {
        assert_eq!(next_event(&mut main_only).await.kind, kind);
    }

    let err = client.watch("s", "", "not-a-cursor").await.err().unwrap();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("cursor")),
        "{err:?}"
    );
    // A cursor this feed never reached (another deployment's) is refused, not waited on.
    let err = client.watch("s", "", "99999999").await.err().unwrap();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("ahead of this feed")),
        "{err:?}"
    );
    let err = client.watch("", "main", "").await.err().unwrap();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("branch")),
        "{err:?}"
    );
}

/// A TCP proxy that, once armed, cuts the connection at the first reply the server sends: it
/// reads the server's HTTP/2 frames and closes both sides instead of passing on a HEADERS
/// frame. A server sends a call's reply headers only after its handler returned, so a create
/// cut this way has committed and its reply is lost.
struct ReplyCutter {
    url: String,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl ReplyCutter {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let this = Self {
            url,
            armed: Arc::default(),
            cuts: Arc::default(),
            connections: Arc::default(),
        };
        let (armed, cuts, connections) = (
            Arc::clone(&this.armed),
            Arc::clone(&this.cuts),
            Arc::clone(&this.connections),
        );
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let outbound = TcpStream::connect(&upstream).await.unwrap();
                let (armed, cuts) = (Arc::clone(&armed), Arc::clone(&cuts));
                tokio::spawn(relay(inbound, outbound, armed, cuts));
            }
        });
        this
    }
}

/// HTTP/2's frame type of HEADERS.
const HEADERS: u8 = 0x1;

async fn relay(
    inbound: TcpStream,
    outbound: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_rx, mut client_tx) = inbound.into_split();
    let (mut server_rx, mut server_tx) = outbound.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
    };
    let down = async {
        let mut pending = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
            pending.extend_from_slice(&buf[..n]);
            // Pass on whole frames: a 9-byte header (24-bit length, type, flags, stream id)
            // and the payload.
            while pending.len() >= 9 {
                let len = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
                if pending.len() < 9 + len {
                    break;
                }
                if pending[3] == HEADERS && armed.swap(false, Ordering::SeqCst) {
                    cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let frame: Vec<u8> = pending.drain(..9 + len).collect();
                if client_tx.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }
    };
    // Either side ending ends both: dropping the halves closes the sockets.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn a_create_whose_reply_is_lost_is_retried_into_the_same_checkpoint(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let upstream = env.url().trim_start_matches("http://").to_owned();
    let proxy = ReplyCutter::start(upstream).await;
    let host = Client::connect(proxy.url.clone()).await.unwrap();
    let first = host
        .create(NewCheckpoint::full("s", state(0)))
        .await
        .unwrap();
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);

    // The connection is cut as the reply to this create leaves the server; the client sees a
    // transport failure and retries with the same request id on a new connection.
    proxy.armed.store(true, Ordering::SeqCst);
    let request_id = "host-1:turn-2";
    let new = NewCheckpoint::full("s", state(1))
        .parent(first.id.clone())
        .request_id(request_id);
    let created = host.create(new.clone()).await.expect("the retried create");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "a reply was cut");
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        2,
        "the retry reconnected"
    );

    let listed = env
        .client
        .list_checkpoints("s", None, 10, "")
        .await
        .unwrap()
        .items;
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [created.id.as_str(), first.id.as_str()],
        "one checkpoint for the request"
    );
    let (_, stored) = env
        .client
        .read_state(Target::checkpoint(&created.id), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(stored, state(1));

    // A retry much later still lands on it, and writes nothing.
    // Through the streamed upload too, answered before the data is sent again.
    let streamed = host.upload(new.clone()).await.expect("a streamed retry");
    assert_eq!(streamed.id, created.id);
    let again = host.create(new).await.expect("a further retry");
    assert_eq!(again.id, created.id);
    let listed = env
        .client
        .list_checkpoints("s", None, 10, "")
        .await
        .unwrap()
        .items;
    assert_eq!(listed.len(), 2);

    // The same request id for another parent is a different request: refused, not replayed.
    let err = host
        .create(NewCheckpoint::full("s", state(9)).request_id(request_id))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists(m) if m.contains(request_id)),
        "{err:?}"
    );
}

async fn only_the_lease_holder_writes_until_its_lease_expires(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let host1 = env.client.clone();
    let host2 = Client::connect(env.url()).await.unwrap();
    let base = host1
        .create(NewCheckpoint::full("s", state(0)))
        .await
        .unwrap();

    let ttl = Duration::from_millis(1500);
    let lease = host1
        .acquire_lease("s", "main", "host-1", ttl)
        .await
        .unwrap();
    assert_eq!(
        (lease.holder.as_str(), lease.branch.as_str()),
        ("host-1", "main")
    );
    let err = host2
        .acquire_lease("s", "main", "host-2", ttl)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("host-1")),
        "{err:?}"
    );

    // Host 2 writes without the token, or with a made-up one: refused, nothing lands.
    let write =
        |n: usize, parent: &str| NewCheckpoint::full("s", state(n)).parent(parent.to_owned());
    let err = host2.create(write(1, &base.id)).await.unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("leased")),
        "{err:?}"
    );
    let err = host2
        .create(write(1, &base.id).lease(lease.token + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("not current")),
        "{err:?}"
    );
    let err = host2
        .reset_branch("s", "main", &base.id, &base.id)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    // Nor can it delete the branch, or the session, from under the holder.
    let err = host2.delete_branch("s", "main", None).await.unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("release")),
        "{err:?}"
    );
    let err = host2.delete_session("s").await.unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("host-1")),
        "{err:?}"
    );

    // The holder writes, renews, and writes again.
    let one = host1
        .create(write(1, &base.id).lease(lease.token))
        .await
        .unwrap();
    let lease = host1.renew_lease(&lease, ttl).await.unwrap();
    let two = host1
        .create(write(2, &one.id).lease(lease.token))
        .await
        .unwrap();
    // Other branches keep the compare-and-swap rules alone.
    host2.create_branch("s", "side", &base.id).await.unwrap();
    host2
        .create(write(3, &base.id).branch("side"))
        .await
        .unwrap();

    // Host 1 stops renewing; after the time-to-live host 2 takes over with a newer token.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let taken = host2
        .acquire_lease("s", "main", "host-2", ttl)
        .await
        .unwrap();
    assert!(
        taken.token > lease.token,
        "{} after {}",
        taken.token,
        lease.token
    );
    let err = host1
        .create(write(4, &two.id).lease(lease.token))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let err = host1.renew_lease(&lease, ttl).await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    let three = host2
        .create(write(5, &two.id).lease(taken.token))
        .await
        .unwrap();

    // Only the holders' writes are on main, in order.
    let main: Vec<String> = env
        .client
        .list_checkpoints("s", Some("main"), 10, "")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(main, [three.id, two.id, one.id, base.id]);

    // Released, the branch is open to writes without a token again.
    host2.release_lease(&taken).await.unwrap();
    let head = env.client.get_branch("s", "main").await.unwrap().head;
    host1.create(write(6, &head)).await.unwrap();

    let err = host1
        .acquire_lease("s", "main", "host-1", Duration::from_secs(7200))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("ttl_ms")),
        "{err:?}"
    );
}

async fn collection_drops_old_events_and_refuses_a_cursor_from_before_them(setup: Setup) {
    let env = TestEnv::start_with(setup, |config| {
        config.feed_retention = Duration::from_secs(1);
    })
    .await;
    let client = &env.client;
    let start = feed_start(client, "").await;
    let first = client
        .create(NewCheckpoint::full("s", state(0)).request_id("old-request"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let recent = client
        .create(NewCheckpoint::full("s", state(1)).parent(first.id.clone()))
        .await
        .unwrap();

    client.collect(&CollectOptions::default()).await.unwrap();

    // The old event is gone, and a watcher from before it is told so.
    let err = client.watch("", "", &start).await.err().unwrap();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("older than the feed keeps")),
        "{err:?}"
    );
    // From the horizon on, the recent event is still there.
    let horizon = start.parse::<i64>().unwrap() + 1;
    let mut events = Box::pin(client.watch("", "", &horizon.to_string()).await.unwrap());
    let event = next_event(&mut events).await;
    assert_eq!(event.new_checkpoint_id, recent.id);
    // A watch from now starts after everything, pruned or not.
    let now = feed_start(client, "").await;
    assert_eq!(now, event.cursor);

    // One event is left in the table, the recent one.
    let left: i64 = match env.db().await {
        Db::Postgres(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap(),
        Db::Sqlite(pool) => sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap(),
    };
    assert_eq!(left, 1);
}

on_every_setup!(
    every_kind_of_change_reaches_a_session_watcher,
    a_create_whose_reply_is_lost_is_retried_into_the_same_checkpoint,
    only_the_lease_holder_writes_until_its_lease_expires,
    collection_drops_old_events_and_refuses_a_cursor_from_before_them,
);
