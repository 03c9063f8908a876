//! The `checkpointd` binary: parse the command line, start telemetry, run the subcommand,
//! flush telemetry.

use ckpt_server::cli::{Command, Loaded};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = Loaded::from_env()?;
    if loaded.cli.print_config {
        print!("{}", loaded.describe());
        return Ok(());
    }
    let config = loaded.cli.settings.clone();
    let telemetry = ckpt_server::telemetry::init(&config)?;
    tracing::info!(settings = %loaded.summary(), "effective configuration");
    let outcome = match loaded.cli.command.clone().unwrap_or(Command::Serve) {
        Command::Serve => ckpt_server::run(config).await,
        Command::Migrate => ckpt_server::migrate(&config).await,
        Command::Keys(command) => ckpt_server::admin::keys(&config, command).await,
    };
    telemetry.shutdown().await;
    outcome
}
