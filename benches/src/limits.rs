//! `ckpt-bench limits`: what this machine can do at best, measured in the same run as the
//! figures it bounds, so each figure can be read as a fraction of its ceiling. Single-row
//! inserts into the same PostgreSQL at the same concurrency (a create is at least one
//! commit), zstd and BLAKE3 on one core (a create hashes and compresses every byte, a load
//! decompresses and hashes it again), and a gRPC call that does nothing, over loopback to a
//! separate process (every call pays at least this).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use tonic::{Request, Response, Status};

use crate::payload::json::transcript;
use crate::payload::rng::SplitMix64;

#[allow(unreachable_pub, missing_debug_implementations)]
mod echo {
    tonic::include_proto!("ckptbench.echo.v1");
}

use echo::echo_client::EchoClient;
use echo::echo_server::{Echo, EchoServer};
use echo::{EchoReply, EchoRequest};

#[derive(Debug, Args)]
pub(crate) struct LimitsArgs {
    /// PostgreSQL to measure raw inserts against (a scratch table is created and dropped);
    /// skipped when absent.
    #[arg(long, env = "CKPT_BENCH_DATABASE")]
    database: Option<String>,
    /// Concurrencies to measure inserts and gRPC calls at.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Measuring time of each line.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Serve the echo service on this address and nothing else (used by the run itself).
    #[arg(long, hide = true)]
    serve_echo: Option<SocketAddr>,
}

/// One measured ceiling.
#[derive(Debug, Serialize)]
struct Limit {
    what: String,
    concurrency: usize,
    /// Operations per second.
    rate: f64,
    /// Payload megabytes (10^6) per second, when the operation moves bytes.
    mb_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Limit {
    fn print(&self) {
        let mb = self
            .mb_per_s
            .map(|m| format!("{m:>9.1} MB/s"))
            .unwrap_or_default();
        let lat = match (self.p50_ms, self.p99_ms) {
            (Some(p50), Some(p99)) => format!("  p50 {p50:>7.3} ms  p99 {p99:>7.3} ms"),
            _ => String::new(),
        };
        println!(
            "{:<40} c={:<3} {:>10.0} /s{mb:>15}{lat}",
            self.what, self.concurrency, self.rate
        );
    }
}

pub(crate) async fn run(args: LimitsArgs) -> anyhow::Result<()> {
    if let Some(addr) = args.serve_echo {
        return serve_echo(addr).await;
    }
    let mut limits = Vec::new();
    let mut record = |limit: Limit| {
        limit.print();
        limits.push(limit);
    };
    for limit in codec_limits(args.duration) {
        record(limit);
    }
    for limit in grpc_limits(&args.concurrency, args.duration).await? {
        record(limit);
    }
    match &args.database {
        Some(url) => {
            for &c in &args.concurrency {
                record(insert_limit(url, c, args.duration).await?);
            }
        }
        None => eprintln!("(no --database: PostgreSQL inserts not measured)"),
    }
    if let Some(path) = &args.output {
        std::fs::write(path, serde_json::to_vec_pretty(&limits)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Runs `op` on the calling thread for `duration` and returns operations per second.
fn spin(duration: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < duration {
        op();
        count += 1;
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// zstd (level 3, the server's default) both ways and BLAKE3, on 1 MB of transcript-like
/// JSON and of random bytes, one core.
fn codec_limits(duration: Duration) -> Vec<Limit> {
    const SIZE: usize = 1_000_000;
    let (json, _) = transcript(SIZE, 7);
    let mut random = vec![0u8; SIZE];
    SplitMix64::new(7).fill(&mut random);
    let per = duration / 2;
    let mut out = Vec::new();
    for (shape, data) in [("json", &json), ("random", &random)] {
        let compressed = zstd::bulk::compress(data, 3).expect("zstd compresses");
        let rate = spin(per, || {
            std::hint::black_box(zstd::bulk::compress(data, 3).expect("zstd compresses"));
        });
        out.push(bytes_limit(
            format!("zstd-3 compress 1 MB {shape}"),
            1,
            rate,
            SIZE,
        ));
        let rate = spin(per, || {
            std::hint::black_box(
                zstd::bulk::decompress(&compressed, SIZE).expect("zstd decompresses"),
            );
        });
        out.push(bytes_limit(
            format!("zstd decompress 1 MB {shape}"),
            1,
            rate,
            SIZE,
        ));
    }
    let rate = spin(per, || {
        std::hint::black_box(blake3::hash(&json));
    });
    out.push(bytes_limit("blake3 1 MB".into(), 1, rate, SIZE));
    out
}

fn bytes_limit(what: String, concurrency: usize, rate: f64, size: usize) -> Limit {
    Limit {
        what,
        concurrency,
        rate,
        mb_per_s: Some(rate * size as f64 / 1e6),
        p50_ms: None,
        p99_ms: None,
    }
}

/// Single-row autocommitted inserts into a scratch table: one commit each, as a create's
/// transaction is, with nothing else.
async fn insert_limit(url: &str, concurrency: usize, duration: Duration) -> anyhow::Result<Limit> {
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let table = format!("ckpt_bench_limit_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v BYTEA NOT NULL)"
    )))
    .execute(&pool)
    .await?;
    let insert = format!("INSERT INTO {table} (v) VALUES ($1)");
    let deadline = Instant::now() + duration;
    let workers = (0..concurrency).map(|_| {
        let pool = pool.clone();
        let insert = insert.clone();
        tokio::spawn(async move {
            let mut hist = histogram();
            while Instant::now() < deadline {
                let start = Instant::now();
                sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind(&[0u8; 100][..])
                    .execute(&pool)
                    .await?;
                hist.saturating_record(start.elapsed().as_micros() as u64);
            }
            anyhow::Ok(hist)
        })
    });
    let started = Instant::now();
    let mut hist = histogram();
    for worker in futures::future::join_all(workers).await {
        hist.add(worker??)?;
    }
    let elapsed = started.elapsed();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(latency_limit(
        "postgres single-row insert (commit)".into(),
        concurrency,
        &hist,
        elapsed,
        None,
    ))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn latency_limit(
    what: String,
    concurrency: usize,
    hist: &Histogram<u64>,
    elapsed: Duration,
    payload: Option<usize>,
) -> Limit {
    let rate = hist.len() as f64 / elapsed.as_secs_f64();
    Limit {
        what,
        concurrency,
        rate,
        mb_per_s: payload.map(|p| rate * p as f64 / 1e6),
        p50_ms: Some(hist.value_at_quantile(0.5) as f64 / 1000.0),
        p99_ms: Some(hist.value_at_quantile(0.99) as f64 / 1000.0),
    }
}

/// Calls of an echo service in a child process over loopback: 10 KB up, 1 MB up, 1 MB down.
async fn grpc_limits(concurrencies: &[usize], duration: Duration) -> anyhow::Result<Vec<Limit>> {
    let addr: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["limits", "--serve-echo", &addr.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the echo server")?;
    let endpoint = format!("http://{addr}");
    let channel = connect_retrying(&endpoint).await?;
    let mut out = Vec::new();
    let shapes = [
        ("grpc echo 10 KB up", 10_000, 0),
        ("grpc echo 1 MB up", 1_000_000, 0),
        ("grpc echo 1 MB down", 0, 1_000_000),
    ];
    for (what, up, down) in shapes {
        for &c in concurrencies {
            let data = Bytes::from(vec![b'x'; up]);
            let deadline = Instant::now() + duration;
            let workers = (0..c).map(|_| {
                let mut client = EchoClient::new(channel.clone())
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20);
                let data = data.clone();
                tokio::spawn(async move {
                    let mut hist = histogram();
                    while Instant::now() < deadline {
                        let start = Instant::now();
                        let reply = client
                            .echo(EchoRequest {
                                data: data.clone(),
                                reply_bytes: down as u64,
                            })
                            .await?;
                        std::hint::black_box(reply);
                        hist.saturating_record(start.elapsed().as_micros() as u64);
                    }
                    anyhow::Ok(hist)
                })
            });
            let started = Instant::now();
            let mut hist = histogram();
            for worker in futures::future::join_all(workers).await {
                hist.add(worker??)?;
            }
            let payload = (up + down > 0).then_some(up.max(down));
            out.push(latency_limit(
                what.into(),
                c,
                &hist,
                started.elapsed(),
                payload.filter(|p| *p >= 1_000_000),
            ));
        }
    }
    child.kill().await.ok();
    Ok(out)
}

async fn connect_retrying(endpoint: &str) -> anyhow::Result<tonic::transport::Channel> {
    let started = Instant::now();
    loop {
        match tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .connect()
            .await
        {
            Ok(channel) => return Ok(channel),
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => return Err(err).context("echo server did not start"),
        }
    }
}

/// The echo service: replies with a slice of one shared buffer, so it costs nothing but gRPC.
#[derive(Debug)]
struct EchoService {
    reply: Bytes,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let want = request.get_ref().reply_bytes as usize;
        if want > self.reply.len() {
            return Err(Status::invalid_argument("reply_bytes: at most 16 MiB"));
        }
        Ok(Response::new(EchoReply {
            data: self.reply.slice(..want),
        }))
    }
}

async fn serve_echo(addr: SocketAddr) -> anyhow::Result<()> {
    let service = EchoServer::new(EchoService {
        reply: Bytes::from(vec![b'y'; 16 << 20]),
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(addr)
        .await
        .context("echo server failed")
}
