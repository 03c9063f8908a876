//! `ckpt`: the command line for checkpointd. Saves files, directories and JSON documents as
//! checkpoints, restores them, and browses sessions. All logic lives in `cli`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => cli::report(&err),
    }
}
