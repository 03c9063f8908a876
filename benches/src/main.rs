//! ckpt-bench: a ghz-style load generator for checkpointd. `ckpt-bench run` drives one call at
//! a fixed concurrency (optionally a fixed rate) for a number of calls or a duration, and
//! reports latency percentiles, a histogram, throughput and status codes as text or JSON.
//! `ckpt-bench scenarios` runs the reference benchmark's scenarios; `ckpt-bench limits`
//! measures the machine's ceilings the figures are compared with.

mod calls;
mod limits;
mod payload;
mod report;
mod run;
mod scenarios;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator for checkpointd.
#[derive(Debug, Parser)]
#[command(name = "ckpt-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One subcommand per workload.
#[derive(Debug, Subcommand)]
enum Command {
    /// Load one call and report latency, throughput and status codes (like ghz).
    Run(Box<run::RunArgs>),
    /// Run the reference benchmark's scenarios and print each figure beside its bar.
    Scenarios(scenarios::ScenarioArgs),
    /// Measure the machine's ceilings: PostgreSQL commits, zstd, BLAKE3 and bare gRPC calls.
    Limits(limits::LimitsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run::run(*args).await,
        Command::Scenarios(args) => scenarios::run(args).await,
        Command::Limits(args) => limits::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_subcommand_parses() {
        let cli = Cli::try_parse_from(["ckpt-bench", "run", "--call", "get", "-n", "5"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(args.call, calls::Call::Get);
        assert_eq!(args.requests, Some(5));
    }
}
