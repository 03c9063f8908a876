//! `ckpt save`: turns a file, a directory tree or standard input into a state and saves it,
//! whole or as the changes since a parent checkpoint.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use ckpt_client::{Checkpoint, Client, NewCheckpoint, ReadFilter, State, Target, diff, json};

use super::output::{self, OutputFormat};
use super::restore::read_all;
use super::{Failure, exit, explain_not_found, progress};

#[derive(Debug, Args)]
pub(crate) struct SaveArgs {
    /// The session to save to; its first checkpoint creates it.
    session: String,

    /// A file (one entry, named after the file), a directory (one entry per regular file,
    /// keyed by its path relative to the directory, with `/`), or `-` for standard input.
    path: PathBuf,

    /// The branch to save on [default: the parent's branch with --parent, otherwise main].
    #[arg(long)]
    branch: Option<String>,

    /// Save as changes to this checkpoint, which must be the head of the branch: only new and
    /// changed entries and deletions are sent.
    #[arg(long, conflicts_with = "on_head")]
    parent: Option<String>,

    /// Make PATH the new state of the branch, on top of its current head: whatever the head
    /// holds that PATH lacks is deleted, including what another host saved since your files
    /// were restored. To keep other hosts' work, save with --parent (the checkpoint your files
    /// came from) on a branch of your own and `ckpt merge` it.
    #[arg(long)]
    on_head: bool,

    /// A description stored with the checkpoint.
    #[arg(long, short)]
    message: Option<String>,

    /// A JSON object stored with the checkpoint.
    #[arg(long, value_parser = parse_metadata)]
    metadata: Option<Value>,

    /// Read the file as a JSON document and store one entry per leaf, so saving it again sends
    /// only the parts that changed. Restore it with `ckpt restore --json`.
    #[arg(long, conflicts_with = "key")]
    json: bool,

    /// The entry's key for a single file or standard input [default: the file name, or
    /// `stdin`].
    #[arg(long)]
    key: Option<String>,
}

pub(crate) async fn run(
    client: &Client,
    args: SaveArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let state = read_input(&args).await?;
    let parent = read_parent(client, &args).await?;

    // Build the checkpoint: changes since the parent, or the whole state.
    let branch = args
        .branch
        .clone()
        .or_else(|| {
            parent
                .as_ref()
                .map(|(checkpoint, _)| checkpoint.branch.clone())
        })
        .unwrap_or_else(|| "main".to_owned());
    let new = match &parent {
        Some((checkpoint, old)) => {
            let ops = diff(old, &state);
            if ops.is_empty() {
                eprintln!("note: nothing changed since {}", checkpoint.id);
            }
            NewCheckpoint::incremental(&args.session, &checkpoint.id, ops)
        }
        None => NewCheckpoint::full(&args.session, state),
    };
    let new = new
        .branch(&branch)
        .message(args.message.clone().unwrap_or_default())
        .metadata(args.metadata.clone().unwrap_or(Value::Null));
    let change_count = new.changes.len();

    // Send it, with a progress bar when it is large and someone is watching.
    let bar = progress::bar(new.changes.put_bytes(), "uploading");
    let result = if bar.is_hidden() {
        client.create(new).await
    } else {
        let bar = bar.clone();
        client
            .upload_with_progress(new, move |bytes| bar.inc(bytes))
            .await
    };
    bar.finish_and_clear();
    let checkpoint =
        result.map_err(|err| explain_conflict(err, &branch, parent.is_some(), args.on_head))?;

    report(&checkpoint, change_count, parent.is_some(), format)
}

fn report(
    checkpoint: &Checkpoint,
    change_count: usize,
    incremental: bool,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let sent = if incremental {
        format!("{change_count} changes sent")
    } else {
        "full state sent".to_owned()
    };
    eprintln!("saved {}; {sent}", output::summary_line(checkpoint));
    match format {
        OutputFormat::Table => output::print(&format!("{}\n", checkpoint.id))?,
        OutputFormat::Json => output::print_json(&output::checkpoint_json(checkpoint))?,
    }
    Ok(())
}

/// The state to save, read from PATH.
async fn read_input(args: &SaveArgs) -> anyhow::Result<State> {
    if args.path == Path::new("-") {
        let mut bytes = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut bytes)
            .await
            .context("cannot read standard input")?;
        return single_entry(args, "stdin".to_owned(), bytes);
    }

    let path = &args.path;
    let metadata = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.is_dir() {
        if args.json || args.key.is_some() {
            return Err(
                Failure::usage("--json and --key need a file or `-`, not a directory").into(),
            );
        }
        let root = path.clone();
        return tokio::task::spawn_blocking(move || read_tree(&root)).await?;
    }

    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{} has no UTF-8 file name; pass --key", path.display()))?
        .to_owned();
    let bytes = tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    single_entry(args, name, bytes)
}

/// The state of one file or of standard input: one entry, or the flattened JSON document.
fn single_entry(args: &SaveArgs, default_key: String, bytes: Vec<u8>) -> anyhow::Result<State> {
    if args.json {
        let doc: Value = serde_json::from_slice(&bytes).context("the input is not JSON")?;
        return Ok(json::flatten(&doc));
    }
    let key = args.key.clone().unwrap_or(default_key);
    Ok(State::from([(key, Bytes::from(bytes))]))
}

/// Reads every regular file under `root`, keyed by its relative path with `/`. Symlinks and
/// special files are skipped with a warning.
fn read_tree(root: &Path) -> anyhow::Result<State> {
    // TODO: the whole tree is held in memory before sending; streaming files into the upload
    // as they are read would keep memory flat for trees larger than RAM.
    let mut state = State::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        if !file_type.is_file() {
            let kind = if file_type.is_symlink() {
                "symlink"
            } else {
                "special file"
            };
            eprintln!("warning: skipping {kind} {}", entry.path().display());
            continue;
        }
        let key = relative_key(root, entry.path())?;
        let bytes = std::fs::read(entry.path())
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        state.insert(key, Bytes::from(bytes));
    }
    Ok(state)
}

/// `path`'s position under `root` as a key: its components joined with `/`.
fn relative_key(root: &Path, path: &Path) -> anyhow::Result<String> {
    let relative = path
        .strip_prefix(root)
        .with_context(|| format!("{} is not under {}", path.display(), root.display()))?;
    let mut segments = Vec::new();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            anyhow::bail!("unexpected path component in {}", path.display());
        };
        let name = name
            .to_str()
            .with_context(|| format!("{} has a name that is not UTF-8", path.display()))?;
        segments.push(name);
    }
    Ok(segments.join("/"))
}

/// The parent checkpoint and its state, for an incremental save.
async fn read_parent(
    client: &Client,
    args: &SaveArgs,
) -> anyhow::Result<Option<(Checkpoint, State)>> {
    // TODO: the parent's whole state is downloaded to compare contents; an RPC listing keys
    // with value hashes would let the client compare without the download.
    if let Some(id) = &args.parent {
        let parent = read_all(client, Target::checkpoint(id), ReadFilter::default())
            .await
            .map_err(|err| explain_not_found(err, || format!("parent checkpoint {id}")))?;
        return Ok(Some(parent));
    }
    if !args.on_head {
        return Ok(None);
    }

    let branch = args.branch.as_deref().unwrap_or("main");
    let head = Target::branch_head(&args.session, branch);
    match read_all(client, head, ReadFilter::default()).await {
        Ok(parent) => Ok(Some(parent)),
        Err(ckpt_client::Error::NotFound(_)) => {
            eprintln!(
                "note: branch {branch} of session {} has no checkpoint yet; saving the whole state",
                args.session
            );
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Turns a lost race on the branch into advice.
fn explain_conflict(
    err: ckpt_client::Error,
    branch: &str,
    had_parent: bool,
    on_head: bool,
) -> anyhow::Error {
    let ckpt_client::Error::Aborted {
        message,
        current_head,
    } = err
    else {
        return err.into();
    };
    let advice = match current_head {
        Some(head) if on_head => format!(
            "branch {branch} moved to {head} while saving; run the command again to save on the new head"
        ),
        Some(head) if had_parent => {
            format!(
                "branch {branch} moved: its head is now {head}; pass --parent {head} or --on-head"
            )
        }
        Some(head) => format!(
            "branch {branch} already has checkpoints: its head is {head}; pass --parent {head} or --on-head"
        ),
        // No head travels back: the branch did not move, another operation (a collection
        // pass) got in the way, and the server's message says to retry.
        None => format!("the save did not go through: {message}"),
    };
    Failure::new(exit::CONFLICT, advice).into()
}

fn parse_metadata(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    if !value.is_object() {
        return Err("must be a JSON object".to_owned());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn read_tree_keys_files_by_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        fs::create_dir_all(dir.path().join("empty")).unwrap();
        fs::write(dir.path().join("top.txt"), "top").unwrap();
        fs::write(dir.path().join("sub/deeper/leaf.bin"), [0u8, 1, 2]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("top.txt", dir.path().join("link")).unwrap();

        let state = read_tree(dir.path()).unwrap();

        let keys: Vec<&str> = state.keys().map(String::as_str).collect();
        assert_eq!(keys, ["sub/deeper/leaf.bin", "top.txt"]);
        assert_eq!(state["top.txt"], Bytes::from_static(b"top"));
    }

    #[test]
    fn incremental_save_sends_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("same"), "1").unwrap();
        fs::write(dir.path().join("changed"), "2").unwrap();
        let old = read_tree(dir.path()).unwrap();
        fs::write(dir.path().join("changed"), "22").unwrap();
        fs::write(dir.path().join("new"), "3").unwrap();
        fs::remove_file(dir.path().join("same")).unwrap();

        let ops = diff(&old, &read_tree(dir.path()).unwrap());

        let keys: Vec<&str> = ops.iter().map(|op| op.key()).collect();
        assert_eq!(keys, ["changed", "new", "same"]);
        assert!(matches!(&ops[2], ckpt_client::Op::Delete(_)));
    }

    #[test]
    fn metadata_must_be_a_json_object() {
        assert!(parse_metadata(r#"{"a": 1}"#).is_ok());
        assert!(parse_metadata("[1]").is_err());
        assert!(parse_metadata("{").is_err());
    }

    #[test]
    fn aborted_save_names_the_new_head() {
        let err = ckpt_client::Error::Aborted {
            message: "moved".into(),
            current_head: Some("H".into()),
        };
        let err = explain_conflict(err, "main", true, false);
        assert_eq!(
            err.to_string(),
            "branch main moved: its head is now H; pass --parent H or --on-head"
        );
        assert_eq!(super::super::exit_code(&err), exit::CONFLICT);
    }
}
