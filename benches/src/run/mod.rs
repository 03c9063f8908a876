//! `ckpt-bench run`: connects, sets up the call's data, drives the workers until the plan is
//! over, then merges their records into the report.

mod args;
mod pacer;
mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::task::JoinSet;

use ckpt_client::Client;

pub(crate) use args::{Format, RunArgs};
use pacer::Pacer;
use plan::Plan;

use crate::calls::{self, Call, Context, Worker};
use crate::payload::Payload;
use crate::report::{self, Report};
use crate::stats::Recorder;

/// Runs the bench described by `args` and prints its report.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Setup: connections, payload templates, the call's data. Not timed.
    args.validate()?;
    let run_id = run_id();
    let ctx = Context {
        clients: connect(&args.server, args.api_key.as_deref(), args.connections()).await?,
        payload: Arc::new(Payload::new(args.payload(), run_id)),
        sessions: session_ids(args.call, run_id, args.sessions()),
        concurrency: args.concurrency as usize,
        checkpoints: args.checkpoints,
        change_keys: args.change_keys as usize,
        page_size: args.page_size,
        timeout: args.timeout,
        query: args.query.clone(),
        target_session: args.target_session.clone(),
        meta: match &args.meta {
            Some(text) => Some(serde_json::from_str(text).context("--meta is not JSON")?),
            None => None,
        },
    };
    let workers = calls::prepare(args.call, &ctx).await?;

    // The measured part.
    eprintln!(
        "running: {} with {} workers",
        args.call.name(),
        workers.len()
    );
    let record = drive(workers, &args).await?;

    // Report, then clean up.
    let report = Report::build(args.call.name(), args.config_json(), &record);
    print(&report, &args)?;
    if args.cleanup {
        cleanup(&ctx).await;
    }
    // The report is out either way; the exit code tells scripts whether every call succeeded.
    let failed = record.count - record.codes.get(crate::stats::OK).copied().unwrap_or(0);
    anyhow::ensure!(record.count > 0, "no call was measured");
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} calls failed (status codes above)",
        record.count
    );
    Ok(())
}

/// Runs the workers until the plan is over and merges their records.
async fn drive(workers: Vec<Worker>, args: &RunArgs) -> anyhow::Result<Recorder> {
    let started = Instant::now();
    let plan = Arc::new(Plan::new(args.limits(), started));
    let pacer = args.rate.map(|rate| Arc::new(Pacer::new(rate, started)));
    let mut tasks = JoinSet::new();
    for worker in workers {
        let (plan, pacer) = (Arc::clone(&plan), pacer.clone());
        tasks.spawn(work(worker, plan, pacer, args.timeout));
    }
    let mut record = Recorder::new();
    while let Some(done) = tasks.join_next().await {
        record.merge(done.context("a worker panicked")?);
    }
    Ok(record)
}

/// One worker's loop: wait for its pace slot, claim a ticket, call, record.
async fn work(
    mut worker: Worker,
    plan: Arc<Plan>,
    pacer: Option<Arc<Pacer>>,
    timeout: Duration,
) -> Recorder {
    let mut record = Recorder::new();
    while !plan.is_finished(Instant::now()) {
        if let Some(pacer) = &pacer
            && !wait_for_slot(pacer, &plan).await
        {
            break;
        }
        let Some(ticket) = plan.claim(Instant::now()) else {
            break;
        };
        let outcome = worker.call(ticket.seq, timeout).await;
        if !ticket.measured {
            continue;
        }
        match outcome.result {
            Ok(bytes) => record.record_ok(outcome.span, bytes),
            Err(failure) => record.record_error(outcome.span, &failure.code(), &failure.message()),
        }
    }
    record
}

/// Waits for the worker's next paced slot, checking as it waits whether the run ended (a slow
/// rate can put the next slot far past `-z`). False when it did.
async fn wait_for_slot(pacer: &Pacer, plan: &Plan) -> bool {
    const CHECK_EVERY: Duration = Duration::from_millis(50);
    let due = pacer.reserve();
    loop {
        let now = Instant::now();
        if plan.is_finished(now) {
            return false;
        }
        if now >= due {
            return true;
        }
        tokio::time::sleep_until(due.min(now + CHECK_EVERY).into()).await;
    }
}

/// Opens `n` connections (each `Client::connect` is its own HTTP/2 connection).
async fn connect(server: &str, api_key: Option<&str>, n: u32) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut builder = Client::builder(server);
        if let Some(key) = api_key.filter(|key| !key.trim().is_empty()) {
            builder = builder.api_key(key);
        }
        let client = builder
            .connect()
            .await
            .with_context(|| format!("failed to connect to {server}"))?;
        clients.push(client);
    }
    Ok(clients)
}

/// A number that differs from run to run: it names the run's sessions and seeds the payload
/// stamps, so runs never share sessions or deduplicate against each other.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// Fresh session ids for this run, e.g. `bench/create/18c2f0a1b2c3d4e5/0003`.
fn session_ids(call: Call, run_id: u64, n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("bench/{}/{run_id:016x}/{i:04}", call.name()))
        .collect()
}

/// Prints the report in the chosen format and writes the JSON file if asked.
fn print(report: &Report, args: &RunArgs) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    match args.format {
        Format::Text => print!("{}", report::render(report)),
        Format::Json => println!("{json}"),
    }
    if let Some(path) = &args.output {
        std::fs::write(path, json + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Deletes the run's sessions; failures are reported, not fatal.
async fn cleanup(ctx: &Context) {
    let client = ctx.client(0);
    let mut deleted = 0;
    for session in &ctx.sessions {
        match client.delete_session(session).await {
            Ok(n) => deleted += n,
            Err(ckpt_client::Error::NotFound(_)) => {}
            Err(err) => eprintln!("cleanup: failed to delete session {session}: {err}"),
        }
    }
    eprintln!(
        "cleanup: deleted {} sessions ({deleted} checkpoints)",
        ctx.sessions.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::plan::Limits;

    /// Regression: with `--rate 0.001 -z 3s` a worker slept toward a slot 1,000 s away and the
    /// run hung long past its duration.
    #[tokio::test]
    async fn a_slow_rate_does_not_outlast_the_duration() {
        let started = Instant::now();
        let limits = Limits {
            requests: None,
            duration: Some(Duration::from_millis(200)),
            warmup: None,
        };
        let plan = Plan::new(limits, started);
        let pacer = Pacer::new(0.001, started);
        assert!(
            wait_for_slot(&pacer, &plan).await,
            "the first slot is due at once"
        );
        assert!(plan.claim(Instant::now()).is_some());
        assert!(
            !wait_for_slot(&pacer, &plan).await,
            "the second slot is after the end"
        );
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        assert!(
            waited >= Duration::from_millis(200),
            "ended early, after {waited:?}"
        );
    }

    #[test]
    fn session_ids_are_valid_server_names_and_unique() {
        let ids = session_ids(Call::CreateIncremental, 0xabc, 3);
        assert_eq!(ids[2], "bench/create-incremental/0000000000000abc/0002");
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:@/".contains(c);
        assert!(
            ids.iter()
                .all(|id| id.chars().all(allowed) && id.len() <= 256)
        );
    }
}
