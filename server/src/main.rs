//! The `checkpointd` binary: parse configuration, start logging, serve until signalled.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ckpt_server::Config::parse();
    ckpt_server::telemetry::init(&config)?;
    ckpt_server::run(config).await
}
