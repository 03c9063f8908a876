//! `ckpt export`, `import` and `replay`: moving whole sessions in and out.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use ckpt_client::Client;
use ckpt_client::replay::{self, ReplayReport};

use super::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The session to export.
    session: String,
    /// Where to write the bundle; standard output when absent or `-`.
    // Not `--output`: that global flag picks the output format.
    #[arg(short = 'o', long = "to", value_name = "FILE")]
    bundle: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// A bundle written by `ckpt export`, or `-` for standard input.
    bundle: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// A recorded agent session, or a folder of them (by default the project's
    /// shared/data/agent-sessions, or $CKPT_SESSION_DATA).
    path: Option<PathBuf>,
    /// Prefix for the session ids the recordings are written to; by default
    /// `replay/<time of the run>/`, so runs never collide.
    #[arg(long)]
    prefix: Option<String>,
    /// Skip loading every checkpoint back to compare it with what was written.
    #[arg(long)]
    no_verify: bool,
}

pub(crate) async fn export(client: &Client, args: ExportArgs) -> anyhow::Result<()> {
    let to_stdout = args.bundle.as_deref().is_none_or(|p| p == Path::new("-"));
    if to_stdout {
        let mut stdout = tokio::io::stdout();
        client
            .export_session(&args.session, &mut stdout)
            .await
            .with_context(|| format!("cannot export session {}", args.session))?;
        return Ok(());
    }
    // Written beside the target and renamed, so a failed export leaves no partial bundle.
    let path = args.bundle.expect("checked above");
    let partial = path.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let result = client.export_session(&args.session, &mut file).await;
    let written = match result {
        Ok(n) => n,
        Err(err) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err).with_context(|| format!("cannot export session {}", args.session));
        }
    };
    file.sync_all().await?;
    tokio::fs::rename(&partial, &path).await?;
    eprintln!(
        "exported session {} to {} ({written} bytes)",
        args.session,
        path.display()
    );
    Ok(())
}

pub(crate) async fn import(
    client: &Client,
    args: ImportArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    if args.bundle != Path::new("-") && !args.bundle.is_file() {
        return Err(super::Failure::usage(format!(
            "{} is not a bundle file",
            args.bundle.display()
        ))
        .into());
    }
    let report = if args.bundle == Path::new("-") {
        client.import_session(tokio::io::stdin()).await
    } else {
        let file = tokio::fs::File::open(&args.bundle)
            .await
            .with_context(|| format!("cannot open {}", args.bundle.display()))?;
        client.import_session(file).await
    }
    .with_context(|| format!("cannot import {}", args.bundle.display()))?;
    match format {
        OutputFormat::Json => output::print_json(&json!({
            "session_id": report.session_id,
            "checkpoints_imported": report.checkpoints_imported,
            "checkpoints_present": report.checkpoints_present,
            "branches_updated": report.branches_updated,
            "stored_bytes": report.stored_bytes,
        }))?,
        OutputFormat::Table => output::print(&format!(
            "imported session {}: {} checkpoints added, {} already present, {} branches updated, {} bytes stored",
            report.session_id,
            report.checkpoints_imported,
            report.checkpoints_present,
            report.branches_updated,
            report.stored_bytes
        ))?,
    }
    Ok(())
}

pub(crate) async fn replay(
    client: &Client,
    args: ReplayArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let path = args.path.unwrap_or_else(replay::default_data_dir);
    if !path.exists() {
        return Err(super::Failure::usage(format!(
            "no recorded sessions at {}: pass a file or folder of them, or set {}",
            path.display(),
            replay::DATA_DIR_ENV
        ))
        .into());
    }
    let prefix = args
        .prefix
        .unwrap_or_else(|| format!("replay/{}/", chrono::Utc::now().format("%Y%m%dT%H%M%S")));
    let recordings = if path.is_dir() {
        replay::load_dir(&path)?
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![replay::load_file(&path, &name)?]
    };
    let mut reports = Vec::new();
    for recording in &recordings {
        let session = format!("{prefix}{}", recording.name);
        let report = replay::replay(client, recording, &session, !args.no_verify)
            .await
            .with_context(|| format!("replaying {}", recording.name))?;
        if format == OutputFormat::Table {
            eprintln!("{}", report_line(&report));
        }
        reports.push(report);
    }
    if format == OutputFormat::Json {
        output::print_json(&serde_json::Value::Array(
            reports.iter().map(report_json).collect(),
        ))?;
    }
    Ok(())
}

fn report_line(r: &ReplayReport) -> String {
    format!(
        "{:<95} {:>5} steps  final {:>9} B  sent-as-full {:>11} B  stored {:>9} B  write {:>6.2}s  verify {:>6.2}s",
        r.session_id,
        r.steps,
        r.final_bytes,
        r.logical_bytes,
        r.stored_bytes,
        r.write_time.as_secs_f64(),
        r.verify_time.as_secs_f64()
    )
}

fn report_json(r: &ReplayReport) -> serde_json::Value {
    json!({
        "session_id": r.session_id,
        "steps": r.steps,
        "final_bytes": r.final_bytes,
        "logical_bytes": r.logical_bytes,
        "stored_bytes": r.stored_bytes,
        "write_seconds": r.write_time.as_secs_f64(),
        "verify_seconds": r.verify_time.as_secs_f64(),
    })
}
