//! The calls `ckpt-bench run` can measure, one module each. [`prepare`] does a call's setup
//! before timing starts (pre-creating what it reads, base states for incremental writes) and
//! hands back one [`Worker`] per concurrent caller; a worker makes one call per ticket.
//!
//! Adding a call: a [`Call`] variant, a module with its setup and `Worker`, a [`Worker`]
//! variant, and one arm in [`prepare`] and in [`Worker::call`].

mod branch;
mod create;
mod diff;
mod get;
mod heads;
mod incremental;
mod list;
mod load;
mod merge;
mod search;
mod seed;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;

use ckpt_client::Client;

use crate::payload::Payload;
use crate::stats::Span;

/// Payload stamps of setup calls start here, far above any run's call numbers, so that setup
/// and measured calls never send the same bytes.
const SETUP_STAMPS: u64 = 1 << 48;

/// A call to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Call {
    /// CreateCheckpoint with a full state, each the child of its session's previous one.
    Create,
    /// CreateCheckpoint changing `--change-keys` of `--keys` keys of the previous checkpoint.
    CreateIncremental,
    /// ReadState of a pre-created checkpoint, collecting the whole state.
    Load,
    /// GetCheckpoint of a pre-created checkpoint.
    Get,
    /// ListCheckpoints: one page of `--page-size` of a pre-populated session.
    List,
    /// Search: one page of `--page-size` results for `--query`.
    Search,
    /// Diff of two consecutive pre-created checkpoints: first page of `--page-size` changes.
    Diff,
    /// Merge of one branch into another as a dry run (computed and reported, not written).
    Merge,
    /// CreateBranch at a pre-created checkpoint, a new name every call.
    Branch,
}

impl Call {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Call::Create => "create",
            Call::CreateIncremental => "create-incremental",
            Call::Load => "load",
            Call::Get => "get",
            Call::List => "list",
            Call::Search => "search",
            Call::Diff => "diff",
            Call::Merge => "merge",
            Call::Branch => "branch",
        }
    }

    /// Whether the call writes: writers move session heads, so each needs its own sessions.
    pub(crate) fn writes(self) -> bool {
        matches!(
            self,
            Call::Create | Call::CreateIncremental | Call::Merge | Call::Branch
        )
    }
}

/// What setup and the workers share.
#[derive(Debug)]
pub(crate) struct Context {
    /// One client per connection.
    pub(crate) clients: Vec<Client>,
    /// The payload of writes (and of setup's checkpoints).
    pub(crate) payload: Arc<Payload>,
    /// The run's session ids, fresh for every run.
    pub(crate) sessions: Vec<String>,
    /// Concurrent callers, i.e. workers.
    pub(crate) concurrency: usize,
    /// load, get: checkpoints to pre-create; list: checkpoints per session.
    pub(crate) checkpoints: u32,
    /// create-incremental: keys changed per call.
    pub(crate) change_keys: usize,
    /// list: page size.
    pub(crate) page_size: u32,
    /// Longest any call may take, setup included.
    pub(crate) timeout: Duration,
    /// search: the query.
    pub(crate) query: String,
    /// list, search: an existing session to read instead of filling new ones.
    pub(crate) target_session: Option<String>,
    /// list: a metadata containment filter.
    pub(crate) meta: Option<serde_json::Value>,
}

impl Context {
    /// The client of worker (or setup task) `i`: workers are spread evenly over connections.
    pub(crate) fn client(&self, i: usize) -> Client {
        self.clients[i % self.clients.len()].clone()
    }

    /// The sessions worker `worker` owns: every `concurrency`-th, starting at its index.
    pub(crate) fn owned_sessions(&self, worker: usize) -> Vec<String> {
        self.sessions
            .iter()
            .skip(worker)
            .step_by(self.concurrency)
            .cloned()
            .collect()
    }
}

/// One concurrent caller of the measured call.
#[derive(Debug)]
pub(crate) enum Worker {
    /// See [`Call::Create`].
    Create(create::Worker),
    /// See [`Call::CreateIncremental`].
    Incremental(incremental::Worker),
    /// See [`Call::Load`].
    Load(load::Worker),
    /// See [`Call::Get`].
    Get(get::Worker),
    /// See [`Call::List`].
    List(list::Worker),
    /// See [`Call::Search`].
    Search(search::Worker),
    /// See [`Call::Diff`].
    Diff(diff::Worker),
    /// See [`Call::Merge`].
    Merge(merge::Worker),
    /// See [`Call::Branch`].
    Branch(branch::Worker),
}

/// Does `call`'s setup and returns its workers, one per concurrent caller.
pub(crate) async fn prepare(call: Call, ctx: &Context) -> anyhow::Result<Vec<Worker>> {
    let workers = match call {
        Call::Create => create::prepare(ctx)
            .into_iter()
            .map(Worker::Create)
            .collect(),
        Call::CreateIncremental => incremental::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::Incremental)
            .collect(),
        Call::Load => load::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::Load)
            .collect(),
        Call::Get => get::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::Get)
            .collect(),
        Call::List => list::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::List)
            .collect(),
        Call::Search => search::prepare(ctx)
            .into_iter()
            .map(Worker::Search)
            .collect(),
        Call::Diff => diff::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::Diff)
            .collect(),
        Call::Merge => merge::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::Merge)
            .collect(),
        Call::Branch => branch::prepare(ctx)
            .await?
            .into_iter()
            .map(Worker::Branch)
            .collect(),
    };
    Ok(workers)
}

impl Worker {
    /// Makes call number `seq`: builds its request (untimed), then times the call itself.
    pub(crate) async fn call(&mut self, seq: u64, timeout: Duration) -> Outcome {
        match self {
            Worker::Create(w) => w.call(seq, timeout).await,
            Worker::Incremental(w) => w.call(seq, timeout).await,
            Worker::Load(w) => w.call(seq, timeout).await,
            Worker::Get(w) => w.call(seq, timeout).await,
            Worker::List(w) => w.call(seq, timeout).await,
            Worker::Search(w) => w.call(seq, timeout).await,
            Worker::Diff(w) => w.call(seq, timeout).await,
            Worker::Merge(w) => w.call(seq, timeout).await,
            Worker::Branch(w) => w.call(seq, timeout).await,
        }
    }
}

/// How a call went.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// When it started and ended.
    pub(crate) span: Span,
    /// The payload bytes it moved, or why it failed.
    pub(crate) result: Result<u64, Failure>,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server or the connection returned an error.
    Call(ckpt_client::Error),
    /// The call took longer than `--timeout` and was cancelled.
    Timeout(Duration),
}

impl Failure {
    /// The gRPC status code name, as in tonic's `Code` (`DeadlineExceeded` for timeouts).
    pub(crate) fn code(&self) -> String {
        match self {
            Failure::Call(err) => format!("{:?}", err.code()),
            Failure::Timeout(_) => "DeadlineExceeded".to_owned(),
        }
    }

    /// The error with its causes.
    pub(crate) fn message(&self) -> String {
        match self {
            Failure::Call(err) => {
                let mut message = err.to_string();
                let mut source = std::error::Error::source(err);
                while let Some(cause) = source {
                    message.push_str(": ");
                    message.push_str(&cause.to_string());
                    source = cause.source();
                }
                message
            }
            Failure::Timeout(limit) => {
                format!("timed out after {}", humantime::format_duration(*limit))
            }
        }
    }
}

/// Runs `call` under `timeout` and times it.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, ckpt_client::Error>>,
) -> (Span, Result<T, Failure>) {
    let start = Instant::now();
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(Failure::Call),
        Err(_) => Err(Failure::Timeout(timeout)),
    };
    let span = Span {
        start,
        end: Instant::now(),
    };
    (span, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn timed_turns_a_hung_call_into_deadline_exceeded() {
        let hung = std::future::pending::<Result<(), ckpt_client::Error>>();
        let (span, result) = timed(Duration::from_millis(20), hung).await;
        let failure = result.unwrap_err();
        assert_eq!(failure.code(), "DeadlineExceeded");
        assert_eq!(failure.message(), "timed out after 20ms");
        assert!(span.end - span.start >= Duration::from_millis(20));
    }

    #[test]
    fn failures_report_the_grpc_code_name() {
        let failure = Failure::Call(ckpt_client::Error::NotFound("checkpoint x".into()));
        assert_eq!(failure.code(), "NotFound");
        assert_eq!(failure.message(), "not found: checkpoint x");
    }

    #[test]
    fn call_names_match_the_command_line() {
        for call in Call::value_variants() {
            let value = call.to_possible_value().unwrap();
            assert_eq!(value.get_name(), call.name());
            assert_eq!(serde_json::to_value(call).unwrap(), call.name());
        }
    }
}
