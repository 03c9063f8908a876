//! The `ckpt` command line: argument definitions, dispatch to one module per group of
//! commands, and the mapping from errors to messages and exit codes.

mod branch;
mod browse;
mod diff;
mod gc;
mod graph;
mod log;
mod merge;
mod output;
mod progress;
mod restore;
mod save;
mod tag;
mod transfer;
mod watch;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::Code;

use ckpt_client::Client;

use self::output::OutputFormat;

/// Exit codes, listed for users in `ckpt --help`.
pub(crate) mod exit {
    /// Any error without a more specific code.
    pub(crate) const GENERIC: u8 = 1;
    /// The command line was wrong (clap uses the same code).
    pub(crate) const USAGE: u8 = 2;
    /// The checkpoint, session, branch or key does not exist.
    pub(crate) const NOT_FOUND: u8 = 3;
    /// The branch moved, the object exists, a merge conflicted, or a precondition failed.
    pub(crate) const CONFLICT: u8 = 4;
    /// The server rejected an argument.
    pub(crate) const INVALID_ARGUMENT: u8 = 5;
    /// The server lost or found corrupt data, or `ckpt verify` found missing or damaged blobs.
    pub(crate) const DATA_LOSS: u8 = 6;
    /// The server could not be reached or is unavailable.
    pub(crate) const UNAVAILABLE: u8 = 7;
    /// A limit was hit: the server was at its limit of concurrent calls (retry with backoff),
    /// or a value or message was too large (the message says which).
    pub(crate) const RESOURCE_EXHAUSTED: u8 = 8;
    /// The call ran past its deadline and was stopped; nothing of it was committed.
    pub(crate) const DEADLINE_EXCEEDED: u8 = 9;
    /// The server requires an API key and got none, a malformed one, or an unknown or revoked
    /// one.
    pub(crate) const UNAUTHENTICATED: u8 = 10;
    /// The API key's role does not allow the command.
    pub(crate) const PERMISSION_DENIED: u8 = 11;
}

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  any other error
  2  usage error
  3  not found: no such checkpoint, session, branch or key
  4  conflict: the branch moved (pass --parent or --on-head), the object already exists, a
     merge left conflicting keys, or a precondition failed (e.g. deleting a branch head)
  5  invalid argument rejected by the server
  6  data loss: the server lost or found corrupt data, or `ckpt verify` found missing or
     damaged blobs
  7  server unavailable or unreachable
  8  a limit was hit: the server is at its limit of concurrent calls (retry with backoff), or a
     value or message is too large
  9  the call ran past its deadline; nothing of it was committed
 10  unauthenticated: the server requires an API key (--api-key or CKPT_API_KEY), or the key
     given is malformed, unknown or revoked
 11  permission denied: the API key's role (read, write, admin) does not allow the command";

/// Save, restore and browse checkpoints of agent sessions on a checkpointd server.
#[derive(Debug, Parser)]
#[command(name = "ckpt", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Address of the checkpointd server.
    #[arg(
        long,
        global = true,
        env = "CKPT_SERVER",
        default_value = "http://127.0.0.1:7777"
    )]
    server: String,

    /// API key for a server that requires one (`ckpt_…`, from `checkpointd keys create`).
    /// Prefer the variable: a flag's value shows in the process list.
    #[arg(long, global = true, env = "CKPT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// PEM CA certificate to trust for an https:// server, instead of the platform's roots.
    /// Given with a --server without a scheme, https:// is assumed.
    #[arg(long, global = true, env = "CKPT_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// PEM client certificate for a server that requires mutual TLS (with --tls-key).
    #[arg(
        long,
        global = true,
        env = "CKPT_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "CKPT_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Format of the results printed on standard output.
    #[arg(
        long,
        global = true,
        env = "CKPT_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    output: OutputFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Save a file, a directory tree or standard input as a new checkpoint.
    Save(save::SaveArgs),
    /// Restore a checkpoint into a directory, a file (--json) or standard output.
    Restore(restore::RestoreArgs),
    /// List sessions.
    Sessions,
    /// List a session's checkpoints, newest first.
    List(browse::ListArgs),
    /// Show every field of one checkpoint.
    Show(browse::ShowArgs),
    /// Delete one checkpoint (not the head of a branch).
    Delete(browse::DeleteArgs),
    /// Delete a session with all its branches and checkpoints.
    DeleteSession(browse::DeleteSessionArgs),
    /// Find checkpoints by words of their messages, metadata values and written keys, or a tag.
    Search(browse::SearchArgs),
    /// Write a session (checkpoints, branches and their data) to a portable bundle file.
    Export(transfer::ExportArgs),
    /// Load a bundle written by `ckpt export` into this server.
    Import(transfer::ImportArgs),
    /// Replay recorded agent sessions as checkpoint chains and check every one loads back.
    Replay(transfer::ReplayArgs),
    /// List a session's branches, or create, show, delete one or read its ref-log.
    Branch(branch::BranchArgs),
    /// List a session's tags, or create, move, show or delete one.
    Tag(tag::TagArgs),
    /// Move a branch to another checkpoint of its session (rewind or jump ahead).
    Reset(branch::ResetArgs),
    /// Start a new session from a checkpoint of another one; no data is copied.
    Fork(tag::ForkArgs),
    /// Show the history of a branch or checkpoint, newest first, optionally as a graph.
    Log(log::LogArgs),
    /// Show the keys added, removed and modified from one checkpoint to another.
    Diff(diff::DiffArgs),
    /// Merge a branch or checkpoint into a branch (exit code 4 when keys conflict).
    Merge(merge::MergeArgs),
    /// Drop the checkpoints retention no longer keeps and free storage nothing references.
    Gc(gc::GcArgs),
    /// Check that the blobs of every checkpoint are present and intact (exit code 6 if not).
    Verify(gc::VerifyArgs),
    /// Show, set or clear which checkpoints a session or branch keeps (its retention policy).
    Retention(gc::RetentionArgs),
    /// Print changes (checkpoints created, branches and tags moved, sessions deleted) as they
    /// happen.
    Watch(watch::WatchArgs),
}

/// Runs one command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let output = cli.output;
    if let Command::DeleteSession(args) = &cli.command {
        // Refuse before connecting, so a missing --yes is reported even with no server.
        browse::confirm_delete_session(args)?;
    }
    let client = connect(&cli)
        .await
        .with_context(|| format!("cannot reach checkpointd at {}", cli.server))?;

    match cli.command {
        Command::Save(args) => save::run(&client, args, output).await,
        Command::Restore(args) => restore::run(&client, args, output).await,
        Command::Sessions => browse::sessions(&client, output).await,
        Command::List(args) => browse::list(&client, args, output).await,
        Command::Show(args) => browse::show(&client, args, output).await,
        Command::Delete(args) => browse::delete(&client, args, output).await,
        Command::DeleteSession(args) => browse::delete_session(&client, args, output).await,
        Command::Search(args) => browse::search(&client, args, output).await,
        Command::Export(args) => transfer::export(&client, args).await,
        Command::Import(args) => transfer::import(&client, args, output).await,
        Command::Replay(args) => transfer::replay(&client, args, output).await,
        Command::Branch(args) => branch::branch(&client, args, output).await,
        Command::Tag(args) => tag::tag(&client, args, output).await,
        Command::Reset(args) => branch::reset(&client, args, output).await,
        Command::Fork(args) => tag::fork(&client, args, output).await,
        Command::Log(args) => log::run(&client, args, output).await,
        Command::Diff(args) => diff::run(&client, args, output).await,
        Command::Merge(args) => merge::run(&client, args, output).await,
        Command::Gc(args) => gc::gc(&client, args, output).await,
        Command::Verify(args) => gc::verify(&client, args, output).await,
        Command::Retention(args) => gc::retention(&client, args, output).await,
        Command::Watch(args) => watch::run(&client, args, output).await,
    }
}

/// Connects as the global options say: server address, API key, TLS files.
async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let mut builder = Client::builder(cli.server.as_str());
    // An empty CKPT_API_KEY (as `export CKPT_API_KEY=` leaves it) means no key.
    if let Some(key) = cli.api_key.as_deref().filter(|key| !key.trim().is_empty()) {
        builder = builder.api_key(key);
    }
    if let Some(path) = &cli.tls_ca {
        builder = builder.tls_ca_pem(read_pem(path)?);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        builder = builder.tls_identity_pem(read_pem(cert)?, read_pem(key)?);
    }
    Ok(builder.connect().await?)
}

fn read_pem(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Prints `err` for a person and returns the exit code it maps to.
pub(crate) fn report(err: &anyhow::Error) -> ExitCode {
    // `ckpt list | head` closes the pipe early; that is not worth a message.
    let broken_pipe = err
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io_err| io_err.kind() == io::ErrorKind::BrokenPipe);
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {err:#}");
    ExitCode::from(exit_code(err))
}

/// An error whose message is written for the person at the terminal, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    message: String,
    exit: u8,
}

impl Failure {
    pub(crate) fn new(exit: u8, message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(exit::NOT_FOUND, message)
    }
}

/// The exit code of the first error in the chain that carries one.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.exit;
        }
        if let Some(client_err) = cause.downcast_ref::<ckpt_client::Error>() {
            return code_exit(client_err.code());
        }
    }
    exit::GENERIC
}

fn code_exit(code: Code) -> u8 {
    match code {
        Code::NotFound => exit::NOT_FOUND,
        Code::Aborted | Code::AlreadyExists | Code::FailedPrecondition => exit::CONFLICT,
        Code::InvalidArgument => exit::INVALID_ARGUMENT,
        Code::DataLoss => exit::DATA_LOSS,
        Code::Unavailable => exit::UNAVAILABLE,
        Code::ResourceExhausted => exit::RESOURCE_EXHAUSTED,
        Code::DeadlineExceeded => exit::DEADLINE_EXCEEDED,
        Code::Unauthenticated => exit::UNAUTHENTICATED,
        Code::PermissionDenied => exit::PERMISSION_DENIED,
        _ => exit::GENERIC,
    }
}

/// Replaces a NOT_FOUND from the server with a message naming what was looked for.
pub(crate) fn explain_not_found(
    err: ckpt_client::Error,
    what: impl FnOnce() -> String,
) -> anyhow::Error {
    match err {
        ckpt_client::Error::NotFound(_) => {
            Failure::not_found(format!("{} not found", what())).into()
        }
        other => other.into(),
    }
}

/// Turns a NOT_FOUND from the server into a message built on the server's own words, which
/// name the missing object (`branch x of session s`); other errors pass through.
pub(crate) fn server_not_found(err: ckpt_client::Error, hint: &str) -> anyhow::Error {
    match err {
        ckpt_client::Error::NotFound(what) => {
            let mut message = what;
            if !message.contains("not found") {
                message.push_str(" not found");
            }
            if !hint.is_empty() {
                message = format!("{message}; {hint}");
            }
            Failure::not_found(message).into()
        }
        other => other.into(),
    }
}

/// Whether progress bars can be drawn.
pub(crate) fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Regression: export's own `-o` once shared the id of the global `--output` format flag,
    /// and every `ckpt export` panicked when clap read it back.
    #[test]
    fn every_subcommand_parses_with_the_global_flags() {
        for args in [
            &["ckpt", "export", "s", "-o", "bundle.ckpt"][..],
            &["ckpt", "--output", "json", "export", "s", "--to", "b"],
            &["ckpt", "import", "bundle.ckpt"],
            &[
                "ckpt",
                "--output",
                "json",
                "replay",
                "/tmp/x",
                "--no-verify",
            ],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            // Reading every field back is what panicked; Debug does exactly that.
            let _ = format!("{cli:?}");
        }
        let cli = Cli::try_parse_from(["ckpt", "export", "s", "-o", "f"]).unwrap();
        match cli.command {
            Command::Export(args) => assert!(format!("{args:?}").contains("\"f\"")),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_key_and_tls_files_are_global_and_a_client_certificate_needs_its_key() {
        let cli = Cli::try_parse_from([
            "ckpt",
            "list",
            "s",
            "--api-key",
            "ckpt_k",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(cli.api_key.as_deref(), Some("ckpt_k"));
        assert_eq!(cli.tls_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cli.tls_key, Some(PathBuf::from("k.pem")));
        assert!(Cli::try_parse_from(["ckpt", "--tls-cert", "c.pem", "list", "s"]).is_err());
        assert!(Cli::try_parse_from(["ckpt", "--tls-key", "k.pem", "list", "s"]).is_err());
    }

    #[test]
    fn exit_code_follows_client_error_through_context() {
        let err = anyhow::Error::from(ckpt_client::Error::Aborted {
            message: "moved".into(),
            current_head: None,
        })
        .context("cannot save");
        assert_eq!(exit_code(&err), exit::CONFLICT);

        let err = anyhow::Error::from(ckpt_client::Error::DataLoss("x".into()));
        assert_eq!(exit_code(&err), exit::DATA_LOSS);

        let err = anyhow::Error::from(ckpt_client::Error::ResourceExhausted("busy".into()));
        assert_eq!(exit_code(&err), exit::RESOURCE_EXHAUSTED);

        let status = tonic::Status::deadline_exceeded("too slow");
        let err = anyhow::Error::from(ckpt_client::Error::from(status)).context("cannot save");
        assert_eq!(exit_code(&err), exit::DEADLINE_EXCEEDED);

        let err = anyhow::anyhow!("plain");
        assert_eq!(exit_code(&err), exit::GENERIC);
    }

    #[test]
    fn failure_sets_its_own_exit_code() {
        let err = anyhow::Error::from(Failure::not_found("checkpoint x not found"));
        assert_eq!(exit_code(&err), exit::NOT_FOUND);
        assert_eq!(err.to_string(), "checkpoint x not found");
    }

    #[test]
    fn codes_map_to_documented_exit_codes() {
        assert_eq!(code_exit(Code::NotFound), 3);
        assert_eq!(code_exit(Code::AlreadyExists), 4);
        assert_eq!(code_exit(Code::FailedPrecondition), 4);
        assert_eq!(code_exit(Code::InvalidArgument), 5);
        assert_eq!(code_exit(Code::DataLoss), 6);
        assert_eq!(code_exit(Code::Unavailable), 7);
        assert_eq!(code_exit(Code::Internal), 1);
        assert_eq!(code_exit(Code::Unauthenticated), 10);
        assert_eq!(code_exit(Code::PermissionDenied), 11);
    }
}
