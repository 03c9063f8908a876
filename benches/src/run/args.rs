//! The options of `ckpt-bench run`, their defaults and the checks that need more than one of
//! them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use bytesize::ByteSize;
use clap::{Args, ValueEnum};
use serde_json::json;

use super::plan::{Limits, Warmup};
use crate::calls::Call;
use crate::payload::{PayloadSpec, Shape};

/// Calls made when neither `-n` nor `-z` is given.
const DEFAULT_REQUESTS: u64 = 200;

/// How the report is printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A ghz-like summary for people.
    Text,
    /// The JSON report (schema `ckpt-bench/run/v1`).
    Json,
}

/// Load one call of a checkpointd server and report its latency and throughput.
#[derive(Clone, Debug, Args)]
pub(crate) struct RunArgs {
    /// Server to load.
    #[arg(long, env = "CKPT_SERVER", default_value = "http://127.0.0.1:7777")]
    pub(crate) server: String,

    /// API key for a server that requires one (sent with every call).
    #[arg(long, env = "CKPT_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,

    /// The call to measure.
    #[arg(long, value_enum, default_value_t = Call::Create)]
    pub(crate) call: Call,

    /// Total bytes of a state (units: 10KB = 10,000 B, 1MiB = 1,048,576 B).
    #[arg(long, default_value = "10KB")]
    pub(crate) size: ByteSize,

    /// Number of keys a state is split into.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) keys: u32,

    /// What the values look like: transcript-like JSON lines or incompressible bytes.
    #[arg(long, value_enum, default_value_t = Shape::Json)]
    pub(crate) shape: Shape,

    /// Send identical bytes in every request (they then deduplicate on the server).
    #[arg(long)]
    pub(crate) same_payload: bool,

    /// create-incremental: keys changed per request (each the size of one key).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) change_keys: u32,

    /// list, search: checkpoints per page.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) page_size: u32,

    /// search: the words to search for.
    #[arg(long, default_value = "tokenizer")]
    pub(crate) query: String,

    /// list, search: use this existing session instead of filling new ones (search: the
    /// session to search in; without it, search covers every session).
    #[arg(long)]
    pub(crate) target_session: Option<String>,

    /// list: only checkpoints whose metadata contains this JSON object.
    #[arg(long, value_name = "JSON")]
    pub(crate) meta: Option<String>,

    /// Sessions the requests spread over. Writes give each worker sessions of its own, so they
    /// need at least one per worker (default: one per worker); reads default to 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) sessions: Option<u32>,

    /// load, get: checkpoints created before timing starts, spread over the sessions.
    /// list: checkpoints per session (at least --page-size + 1, so that pages are full).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) checkpoints: u32,

    /// Concurrent callers.
    #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,

    /// HTTP/2 connections; the callers are spread over them (at most one per caller is used).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) connections: u32,

    /// Measured calls to make (default 200 when -z is not given either).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) requests: Option<u64>,

    /// How long to make calls, e.g. 30s or 2m. With -n too, whichever ends first.
    #[arg(short = 'z', long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,

    /// Calls per second over all callers; unlimited when absent.
    #[arg(long, value_parser = parse_rate)]
    pub(crate) rate: Option<f64>,

    /// Calls made first and left out of the report: a count (100) or a duration (2s).
    #[arg(long, value_parser = parse_warmup)]
    pub(crate) warmup: Option<Warmup>,

    /// Longest a call may take; a slower one is cancelled and counted as DeadlineExceeded.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,

    /// Also write the JSON report to this file.
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,

    /// Delete the sessions the run created once it is over.
    #[arg(long)]
    pub(crate) cleanup: bool,
}

impl RunArgs {
    /// Checks the options that depend on each other.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let sessions = self.sessions();
        if self.call.writes() && sessions < self.concurrency {
            bail!(
                "--call {} gives every worker sessions of its own: --sessions ({sessions}) must be \
                 at least -c ({})",
                self.call.name(),
                self.concurrency
            );
        }
        if self.call == Call::CreateIncremental && self.change_keys > self.keys {
            bail!(
                "--change-keys ({}) cannot exceed --keys ({})",
                self.change_keys,
                self.keys
            );
        }
        Ok(())
    }

    /// Sessions to spread the calls over.
    pub(crate) fn sessions(&self) -> u32 {
        match self.sessions {
            Some(n) => n,
            None if self.call.writes() => self.concurrency,
            None => 1,
        }
    }

    /// Connections actually opened: idle ones would only skew the comparison.
    pub(crate) fn connections(&self) -> u32 {
        self.connections.min(self.concurrency)
    }

    /// When the run stops and what it leaves out.
    pub(crate) fn limits(&self) -> Limits {
        let requests = match (self.requests, self.duration) {
            (None, None) => Some(DEFAULT_REQUESTS),
            (requests, _) => requests,
        };
        Limits {
            requests,
            duration: self.duration,
            warmup: self.warmup,
        }
    }

    /// The payload every request carries.
    pub(crate) fn payload(&self) -> PayloadSpec {
        PayloadSpec {
            size: self.size.as_u64(),
            keys: self.keys,
            shape: self.shape,
            same: self.same_payload,
        }
    }

    /// The effective options, as echoed in the report's `config`.
    pub(crate) fn config_json(&self) -> serde_json::Value {
        let limits = self.limits();
        let warmup = match self.warmup {
            None => json!(null),
            Some(Warmup::Requests(n)) => json!({ "requests": n }),
            Some(Warmup::Duration(d)) => json!({ "seconds": d.as_secs_f64() }),
        };
        json!({
            "server": self.server,
            "size_bytes": self.size.as_u64(),
            "keys": self.keys,
            "shape": self.shape,
            "same_payload": self.same_payload,
            "change_keys": self.change_keys,
            "page_size": self.page_size,
            "sessions": self.sessions(),
            "checkpoints": self.checkpoints,
            "concurrency": self.concurrency,
            "connections": self.connections(),
            "requests": limits.requests,
            "duration_seconds": limits.duration.map(|d| d.as_secs_f64()),
            "rate": self.rate,
            "warmup": warmup,
            "timeout_seconds": self.timeout.as_secs_f64(),
        })
    }
}

/// A rate: a positive, finite number of calls per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of calls per second"
        )),
    }
}

/// A warm-up: a plain number counts calls, anything else is a humantime duration.
fn parse_warmup(text: &str) -> Result<Warmup, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Warmup::Requests(n));
    }
    humantime::parse_duration(text)
        .map(Warmup::Duration)
        .map_err(|err| format!("{text:?} is neither a call count nor a duration: {err}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(argv: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = std::iter::once("ckpt-bench").chain(argv.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn defaults_make_two_hundred_small_json_creates() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.call, Call::Create);
        assert_eq!(args.size.as_u64(), 10_000);
        assert_eq!(args.shape, Shape::Json);
        assert_eq!(args.limits().requests, Some(200));
        assert_eq!(args.limits().duration, None);
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert_eq!(args.sessions(), 1);
    }

    #[test]
    fn units_durations_and_warmups_parse() {
        let args = parse(&[
            "--call",
            "load",
            "--size",
            "1MiB",
            "-z",
            "1m30s",
            "--warmup",
            "2s",
            "--rate",
            "12.5",
            "-c",
            "16",
            "--connections",
            "4",
        ])
        .unwrap();
        assert_eq!(args.call, Call::Load);
        assert_eq!(args.size.as_u64(), 1_048_576);
        assert_eq!(args.limits().requests, None);
        assert_eq!(args.limits().duration, Some(Duration::from_secs(90)));
        assert_eq!(args.warmup, Some(Warmup::Duration(Duration::from_secs(2))));
        assert_eq!(args.rate, Some(12.5));
        assert_eq!((args.concurrency, args.connections()), (16, 4));

        let args = parse(&["--warmup", "100", "--call", "create-incremental"]).unwrap();
        assert_eq!(args.warmup, Some(Warmup::Requests(100)));
        assert_eq!(args.call, Call::CreateIncremental);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--rate", "fast"]).is_err());
        assert!(parse(&["-c", "0"]).is_err());
        assert!(parse(&["--size", "10 parsecs"]).is_err());
        assert!(parse(&["--call", "rebase"]).is_err());
        assert!(parse(&["--call", "merge"]).is_ok());
        assert!(parse(&["--page-size", "1001"]).is_err());
    }

    #[test]
    fn writes_default_to_one_session_per_worker_and_refuse_fewer() {
        let args = parse(&["-c", "8"]).unwrap();
        assert_eq!(args.sessions(), 8);
        assert!(args.validate().is_ok());
        assert!(
            parse(&["-c", "8", "--sessions", "4"])
                .unwrap()
                .validate()
                .is_err()
        );
        assert!(
            parse(&["-c", "8", "--sessions", "4", "--call", "get"])
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn incremental_cannot_change_more_keys_than_it_has() {
        let args = parse(&[
            "--call",
            "create-incremental",
            "--keys",
            "4",
            "--change-keys",
            "5",
        ]);
        assert!(args.unwrap().validate().is_err());
    }

    #[test]
    fn connections_are_capped_by_concurrency_and_config_echoes_them() {
        let args = parse(&["--connections", "4"]).unwrap();
        assert_eq!(args.connections(), 1);
        let config = args.config_json();
        assert_eq!(config["connections"], 1);
        assert_eq!(config["requests"], 200);
        assert_eq!(config["shape"], "json");
    }
}
