//! Three checkpointd processes on one PostgreSQL database and one S3 bucket, with clients
//! spread across them and one instance killed with SIGKILL half-way. Whatever a client was told
//! succeeded is there, byte for byte, on every surviving instance.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt_client::{
    Checkpoint, Client, CollectOptions, Error, MergeOptions, NewCheckpoint, Op, ReadFilter, State,
    Target,
};
use common::{Setup, free_port, fresh_database, fresh_store, noise, spawn_server_with};

/// Operations each client runs.
const OPS: usize = 40;
/// Clients, one per instance to start with.
const CLIENTS: usize = 3;
/// Longest any one call may take before the client counts it as failed.
const CALL_LIMIT: Duration = Duration::from_secs(10);

/// What the clients were told, shared for the final check.
#[derive(Default)]
struct Ledger {
    /// Checkpoints acknowledged as created and not deleted since, with their states.
    live: HashMap<String, State>,
    /// Checkpoints acknowledged as deleted.
    deleted: BTreeSet<String>,
    /// Calls that failed on one instance (and were retried on the next one).
    failures: usize,
}

type Shared = Arc<Mutex<Ledger>>;

/// A client's view of the fleet: one connection per instance, tried in turn from its own.
struct Fleet {
    clients: Vec<Client>,
    first: usize,
    ledger: Shared,
}

/// Failures that say nothing about the call's outcome: the instance died or never answered.
fn is_ambiguous(err: &Error) -> bool {
    use tonic::Code;
    matches!(
        err.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::DeadlineExceeded
    )
}

impl Fleet {
    /// Runs `call` on the first instance that answers; an ambiguous failure counts and moves
    /// on to the next instance, any other error is the call's answer.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut last = None;
        for k in 0..self.clients.len() {
            let client = self.clients[(self.first + k) % self.clients.len()].clone();
            let err = match tokio::time::timeout(CALL_LIMIT, call(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) if is_ambiguous(&err) => err,
                Ok(Err(err)) => return Err(err),
                Err(_) => Error::Unavailable("the call outlived the test's limit".into()),
            };
            self.ledger.lock().unwrap().failures += 1;
            last = Some(err);
        }
        Err(last.expect("at least one instance"))
    }
}

/// One client's session: the head of `main` as the client knows it, and that head's state.
struct Worker {
    fleet: Fleet,
    session: String,
    head: Option<(String, State)>,
    /// Older checkpoints of the session, candidates for deletion.
    older: Vec<String>,
    seed: u64,
}

impl Worker {
    /// A value: small ones live in the catalog row, larger ones in the bucket.
    fn value(&mut self) -> Bytes {
        self.seed += 1;
        let len = if self.seed.is_multiple_of(2) {
            300
        } else {
            40_000
        };
        Bytes::from(noise(len, self.seed))
    }

    fn acknowledge(&mut self, id: String, state: State) {
        self.fleet
            .ledger
            .lock()
            .unwrap()
            .live
            .insert(id.clone(), state.clone());
        if let Some((old, _)) = self.head.replace((id, state)) {
            self.older.push(old);
        }
    }

    /// After an ambiguous failure or a lost race: learns the branch head from the server. A
    /// write that committed without its answer reaching us becomes the new head, unacknowledged.
    async fn resync(&mut self) {
        let session = self.session.clone();
        let branch = self
            .fleet
            .call(|c| {
                let session = session.clone();
                async move { c.get_branch(&session, "main").await }
            })
            .await;
        let head = match branch {
            Ok(branch) => branch.head,
            Err(Error::NotFound(_)) => {
                self.head = None;
                return;
            }
            Err(err) => panic!("{}: reading the head: {err}", self.session),
        };
        if self.head.as_ref().is_some_and(|(id, _)| *id == head) {
            return;
        }
        let (_, state) = self
            .fleet
            .call(|c| {
                let head = head.clone();
                async move {
                    c.read_state(Target::checkpoint(&head), ReadFilter::default())
                        .await
                }
            })
            .await
            .unwrap_or_else(|err| panic!("{}: reading the head's state: {err}", self.session));
        if let Some((old, _)) = self.head.replace((head, state)) {
            self.older.push(old);
        }
    }

    /// Records a create's outcome: acknowledged, or unknown (the instance died, or another
    /// write moved the branch), in which case the head is read back; anything else fails.
    async fn settle(&mut self, result: Result<Checkpoint, Error>, state: State, what: &str) {
        match result {
            Ok(cp) => self.acknowledge(cp.id, state),
            Err(err) if is_ambiguous(&err) || matches!(err, Error::Aborted { .. }) => {
                self.resync().await
            }
            Err(err) => panic!("{}: {what}: {err}", self.session),
        }
    }

    async fn create_full(&mut self, step: usize) {
        let mut state = self.head.as_ref().map(|h| h.1.clone()).unwrap_or_default();
        state.insert(format!("k{}", step % 5), self.value());
        let parent = self.head.as_ref().map(|h| h.0.clone());
        let session = self.session.clone();
        let result = self
            .fleet
            .call(|c| {
                let mut new = NewCheckpoint::full(session.clone(), state.clone());
                new.parent_id = parent.clone();
                async move { c.create(new).await }
            })
            .await;
        self.settle(result, state, "create").await;
    }

    async fn create_incremental(&mut self, step: usize) {
        let Some((parent, mut state)) = self.head.clone() else {
            return self.create_full(step).await;
        };
        let mut ops = vec![Op::Put(format!("k{}", step % 5), self.value())];
        if let Some(doomed) = state.keys().find(|k| k.as_str() != "k0").cloned() {
            ops.push(Op::Delete(doomed));
        }
        for op in &ops {
            match op {
                Op::Put(key, value) => state.insert(key.clone(), value.clone()),
                Op::Delete(key) => state.remove(key),
            };
        }
        let session = self.session.clone();
        let result = self
            .fleet
            .call(|c| {
                let new = NewCheckpoint::incremental(session.clone(), &parent, ops.clone());
                async move { c.create(new).await }
            })
            .await;
        self.settle(result, state, "incremental create").await;
    }

    /// Forks a side branch at the head, writes one checkpoint there and merges it back: main
    /// has not moved meanwhile, so main ends with the side's state.
    async fn merge_side(&mut self, step: usize) {
        let Some((base, mut state)) = self.head.clone() else {
            return self.create_full(step).await;
        };
        let session = self.session.clone();
        let side = format!("side-{step}");
        let forked = self
            .fleet
            .call(|c| {
                let (session, side, base) = (session.clone(), side.clone(), base.clone());
                async move { c.create_branch(&session, &side, &base).await }
            })
            .await;
        match forked {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(err) if is_ambiguous(&err) => return,
            Err(err) => panic!("{}: branch: {err}", self.session),
        }
        state.insert("side".into(), self.value());
        let written = self
            .fleet
            .call(|c| {
                let new = NewCheckpoint::full(session.clone(), state.clone())
                    .branch(&side)
                    .parent(&base);
                async move { c.create(new).await }
            })
            .await;
        match written {
            Ok(cp) => {
                let mut ledger = self.fleet.ledger.lock().unwrap();
                ledger.live.insert(cp.id, state.clone());
            }
            Err(err) if is_ambiguous(&err) || matches!(err, Error::Aborted { .. }) => return,
            Err(err) => panic!("{}: side create: {err}", self.session),
        }
        let merged = self
            .fleet
            .call(|c| {
                let (session, side) = (session.clone(), side.clone());
                async move {
                    c.merge(&session, "main", &side, true, MergeOptions::default())
                        .await
                }
            })
            .await;
        match merged {
            Ok(result) => {
                if let Some(cp) = result.checkpoint {
                    self.fleet
                        .ledger
                        .lock()
                        .unwrap()
                        .live
                        .insert(cp.id, state.clone());
                }
                self.resync().await;
            }
            Err(err) if is_ambiguous(&err) || matches!(err, Error::Aborted { .. }) => {
                self.resync().await
            }
            Err(err) => panic!("{}: merge: {err}", self.session),
        }
    }

    /// Deletes the oldest checkpoint still around (never the head).
    async fn delete_oldest(&mut self) {
        if self.older.is_empty() {
            return;
        }
        let victim = self.older.remove(0);
        let result = self
            .fleet
            .call(|c| {
                let victim = victim.clone();
                async move { c.delete_checkpoint(&victim).await }
            })
            .await;
        let mut ledger = self.fleet.ledger.lock().unwrap();
        match result {
            Ok(()) => {
                ledger.live.remove(&victim);
                ledger.deleted.insert(victim);
            }
            // Still the head of a side branch that main fast-forwarded to: kept, as it should.
            Err(Error::FailedPrecondition(_)) => {}
            // An earlier attempt may have deleted it before its instance died.
            Err(Error::NotFound(_)) => {
                ledger.live.remove(&victim);
            }
            // Outcome unknown: neither promised present nor promised gone.
            Err(err) if is_ambiguous(&err) => {
                ledger.live.remove(&victim);
            }
            Err(err) => panic!("{}: delete: {err}", self.session),
        }
    }

    async fn collect(&mut self) {
        let result = self
            .fleet
            .call(|c| async move { c.collect(&CollectOptions::default()).await })
            .await;
        match result {
            // Aborted: another instance's pass holds the lease.
            Ok(_) | Err(Error::Aborted { .. }) => {}
            Err(err) if is_ambiguous(&err) => {}
            Err(err) => panic!("collect: {err}"),
        }
    }

    async fn run(mut self, done: Arc<AtomicUsize>) {
        for step in 0..OPS {
            match step % 8 {
                0..=2 => self.create_full(step).await,
                3 | 4 => self.create_incremental(step).await,
                5 => self.merge_side(step).await,
                6 => self.delete_oldest().await,
                _ => self.collect().await,
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_on_one_database_and_bucket_lose_nothing_when_one_is_killed() {
    let started = Instant::now();
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(Setup::PostgresS3, dir.path());
    // No scheduled passes: the clients run theirs, racing the writes on other instances.
    let flags = ["--gc-interval", "0s", "--collector-lease", "2s"];
    let mut instances = Vec::new();
    for _ in 0..CLIENTS {
        instances.push(spawn_server_with(&db, &store, free_port(), &flags).await);
    }
    let mut clients = Vec::new();
    for instance in &instances {
        clients.push(Client::connect(instance.url.clone()).await.unwrap());
    }

    // Clients spread across the instances.
    let ledger: Shared = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let worker = Worker {
                fleet: Fleet {
                    clients: clients.clone(),
                    first: n,
                    ledger: Arc::clone(&ledger),
                },
                session: format!("fleet-{n}"),
                head: None,
                older: Vec::new(),
                seed: n as u64 * 1_000_000,
            };
            tokio::spawn(worker.run(Arc::clone(&done)))
        })
        .collect();

    // Half-way through, SIGKILL the last instance.
    while done.load(Ordering::SeqCst) < CLIENTS * OPS / 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut victim = instances.pop().unwrap();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(ledger.failures > 0, "no call reached the killed instance");
    assert!(
        ledger.live.len() >= 30,
        "only {} checkpoints",
        ledger.live.len()
    );
    assert!(!ledger.deleted.is_empty(), "nothing was deleted");

    // A last pass, then every survivor serves everything acknowledged and nothing deleted.
    let survivors = &clients[..CLIENTS - 1];
    loop {
        match survivors[0].collect(&CollectOptions::default()).await {
            Ok(_) => break,
            Err(Error::Aborted { .. }) => tokio::time::sleep(Duration::from_millis(300)).await,
            Err(err) => panic!("final collect: {err}"),
        }
    }
    for (n, client) in survivors.iter().enumerate() {
        for (id, expected) in &ledger.live {
            let (_, state) = client
                .read_state(Target::checkpoint(id), ReadFilter::default())
                .await
                .unwrap_or_else(|err| panic!("instance {n}, checkpoint {id}: {err}"));
            assert_eq!(&state, expected, "instance {n}, checkpoint {id}");
        }
        for id in &ledger.deleted {
            let err = client.get(id).await.unwrap_err();
            assert!(
                matches!(err, Error::NotFound(_)),
                "instance {n}, {id}: {err}"
            );
        }
    }
    let verify = survivors[1].verify_all(None, 100, false).await.unwrap();
    assert!(verify.problems.is_empty(), "{:?}", verify.problems);
    eprintln!(
        "{} live, {} deleted, {} failed calls, {:?}",
        ledger.live.len(),
        ledger.deleted.len(),
        ledger.failures,
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
