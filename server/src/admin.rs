//! `checkpointd keys`: create, list and revoke API keys in the configured catalog, directly
//! (no server needs to run). A key's text is printed once, at creation; the catalog keeps only
//! its hash.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;

use crate::auth::key;
use crate::catalog::{self, ApiKeyRecord, KeyStore, Role};
use crate::config::Config;

/// What `checkpointd keys` does.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it on standard output, once: only its hash is stored.
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// What the key may do: read, write (includes read) or admin (everything).
        #[arg(long)]
        role: Role,
        /// A note saying who or what the key is for, shown by `keys list`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List every key (id, tenant, role, name, created, revoked); secrets are never shown.
    List,
    /// Revoke a key: every call presenting it is refused from now on, by every instance.
    Revoke {
        /// The key's id (the part after `ckpt_`), or the whole key.
        id: String,
    },
}

/// Runs one `checkpointd keys` command against the configured catalog.
pub async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let (_, keys) = catalog::open_with_keys(&config.database(), 1, config.db_acquire_timeout)
        .await
        .with_context(|| format!("opening the catalog at {}", config.redacted_database()))?;
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Create { tenant, role, name } => {
            create(keys.as_ref(), &tenant, role, &name, &mut out).await
        }
        KeysCommand::List => list(keys.as_ref(), &mut out).await,
        KeysCommand::Revoke { id } => revoke(keys.as_ref(), &id, &mut out).await,
    }
}

async fn create(
    keys: &dyn KeyStore,
    tenant: &str,
    role: Role,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if tenant.trim().is_empty() {
        anyhow::bail!("--tenant must not be empty");
    }
    let generated = key::generate(tenant, role, name).context("reading random bytes")?;
    let record = keys.create_key(generated.record).await?;
    writeln!(out, "{}", generated.text)?;
    eprintln!(
        "created API key {} for tenant {} with role {}; store it now, it is not shown again",
        record.id, record.tenant, record.role
    );
    Ok(())
}

async fn list(keys: &dyn KeyStore, out: &mut dyn Write) -> anyhow::Result<()> {
    let records = keys.list_keys().await?;
    writeln!(
        out,
        "{:<16}  {:<20}  {:<5}  {:<20}  {:<20}  NAME",
        "ID", "TENANT", "ROLE", "CREATED", "REVOKED"
    )?;
    for record in &records {
        writeln!(out, "{}", row(record))?;
    }
    Ok(())
}

fn row(record: &ApiKeyRecord) -> String {
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    format!(
        "{:<16}  {:<20}  {:<5}  {:<20}  {:<20}  {}",
        record.id,
        record.tenant,
        record.role,
        time(record.created_at),
        record.revoked_at.map(time).unwrap_or_else(|| "-".into()),
        record.name
    )
}

async fn revoke(keys: &dyn KeyStore, id: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    // Accept the whole key too: it is what an operator holding a leaked key has at hand.
    let id = key::key_id(id).unwrap_or(id);
    let record = keys.revoke_key(id).await?;
    writeln!(out, "{}", row(&record))?;
    eprintln!("revoked API key {}", record.id);
    Ok(())
}
