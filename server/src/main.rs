//! The `checkpointd` binary: parse the command line, start logging, run the subcommand.

use ckpt_server::cli::{Command, Loaded};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = Loaded::from_env()?;
    if loaded.cli.print_config {
        print!("{}", loaded.describe());
        return Ok(());
    }
    let config = loaded.cli.settings.clone();
    ckpt_server::telemetry::init(&config)?;
    tracing::info!(settings = %loaded.summary(), "effective configuration");
    match loaded.cli.command.unwrap_or(Command::Serve) {
        Command::Serve => ckpt_server::run(config).await,
        Command::Migrate => ckpt_server::migrate(&config).await,
    }
}
