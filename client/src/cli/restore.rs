//! `ckpt restore`: writes a checkpoint's state into a directory, one file per key, or one
//! entry to standard output, or the JSON document saved with `ckpt save --json`.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use ckpt_client::{Checkpoint, Client, ReadFilter, State, StateReader, Target, json};

use super::output::{self, OutputFormat};
use super::{Failure, progress};

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// A checkpoint id, or `SESSION[@BRANCH]` for the head of a branch (main by default). The
    /// session is split from the branch at the last `@`; use --branch for a session id that
    /// contains `@`. An id that names no checkpoint is tried as a session.
    source: String,

    /// The directory to write into (created if missing), or `-` for standard output. With
    /// --json, the file to write.
    dest: PathBuf,

    /// Read the head of this branch, taking SOURCE whole as the session id.
    #[arg(long)]
    branch: Option<String>,

    /// Restore only this entry (required for `-` when the state has several entries).
    #[arg(long, conflicts_with_all = ["prefix", "json"])]
    key: Option<String>,

    /// Restore only the entries whose key starts with this prefix.
    #[arg(long)]
    prefix: Option<String>,

    /// Rebuild the JSON document saved with `ckpt save --json` and write it to DEST.
    #[arg(long)]
    json: bool,
}

impl RestoreArgs {
    fn filter(&self) -> ReadFilter {
        ReadFilter {
            prefix: self.prefix.clone(),
            keys: self.key.iter().cloned().collect(),
        }
    }

    fn to_stdout(&self) -> bool {
        self.dest == Path::new("-")
    }
}

pub(crate) async fn run(
    client: &Client,
    args: RestoreArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    if args.to_stdout() && args.prefix.is_some() && !args.json {
        return Err(Failure::usage("--prefix needs a directory to restore into, not `-`").into());
    }
    let reader = open(client, &args).await?;

    if args.json {
        return restore_json(reader, &args, format).await;
    }
    if args.to_stdout() {
        return restore_stdout(reader, &args).await;
    }
    restore_tree(reader, &args, format).await
}

/// Reads a whole state (or the part `filter` selects), with a progress bar when it is large.
pub(crate) async fn read_all(
    client: &Client,
    target: Target,
    filter: ReadFilter,
) -> Result<(Checkpoint, State), ckpt_client::Error> {
    let reader = client.read_state_stream(target, filter).await?;
    collect(reader).await
}

async fn collect(reader: StateReader) -> Result<(Checkpoint, State), ckpt_client::Error> {
    let bar = progress::bar(reader.checkpoint().summary.logical_bytes, "reading");
    let result = reader.collect_with_progress(|bytes| bar.inc(bytes)).await;
    bar.finish_and_clear();
    result
}

/// Opens the state of SOURCE, trying each reading of it in turn.
async fn open(client: &Client, args: &RestoreArgs) -> anyhow::Result<StateReader> {
    let candidates = candidates(&args.source, args.branch.as_deref());
    for target in &candidates {
        match client
            .read_state_stream(target.clone(), args.filter())
            .await
        {
            Ok(reader) => return Ok(reader),
            Err(ckpt_client::Error::NotFound(_)) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    let message = match candidates.as_slice() {
        [Target::Checkpoint(id), _] => format!("no checkpoint or session named {id}"),
        [Target::Head { session_id, branch }] => {
            format!("session {session_id} has no checkpoint on branch {branch}")
        }
        _ => format!("{} not found", args.source),
    };
    Err(Failure::not_found(message).into())
}

/// What SOURCE may name, in the order to try. An id shaped like a checkpoint id may also be a
/// session id (agents often name sessions with UUIDs), so it is tried as both.
pub(crate) fn candidates(source: &str, branch: Option<&str>) -> Vec<Target> {
    if let Some(branch) = branch {
        return vec![Target::branch_head(source, branch)];
    }
    if looks_like_uuid(source) {
        return vec![Target::checkpoint(source), Target::head(source)];
    }
    match source.rsplit_once('@') {
        Some((session, branch)) if !session.is_empty() && !branch.is_empty() => {
            vec![Target::branch_head(session, branch)]
        }
        _ => vec![Target::head(source)],
    }
}

fn looks_like_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Writes each entry as a file under DEST, through a temporary name so that a failed restore
/// leaves no partial file.
async fn restore_tree(
    mut reader: StateReader,
    args: &RestoreArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let dest = &args.dest;
    tokio::fs::create_dir_all(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let bar = progress::bar(expected_bytes(&reader, args), "restoring");
    let mut verified_dirs = HashSet::new();
    let (mut entries, mut bytes) = (0u64, 0u64);

    while let Some(entry) = reader.next_entry().await? {
        let relative = relative_path(&entry.key).map_err(|reason| {
            anyhow::anyhow!("refusing to restore key {:?}: {reason}", entry.key)
        })?;
        create_parent_dirs(dest, &relative, &mut verified_dirs).await?;
        let path = dest.join(&relative);
        write_value(&mut reader, &path, &bar)
            .await
            .with_context(|| format!("cannot restore {}", path.display()))?;
        entries += 1;
        bytes += entry.size;
    }
    bar.finish_and_clear();

    let checkpoint = reader.checkpoint();
    eprintln!(
        "restored {entries} entries ({}) from {} into {}",
        HumanBytes(bytes),
        output::checkpoint_label(checkpoint),
        dest.display()
    );
    if format == OutputFormat::Json {
        output::print_json(&json!({
            "checkpoint": output::checkpoint_json(checkpoint),
            "entries": entries,
            "bytes": bytes,
            "destination": dest,
        }))?;
    }
    Ok(())
}

/// The bytes a restore will write, when known up front (unfiltered reads only).
fn expected_bytes(reader: &StateReader, args: &RestoreArgs) -> u64 {
    if args.filter().is_all() {
        reader.checkpoint().summary.logical_bytes
    } else {
        0
    }
}

/// Writes one entry to standard output; the state must hold exactly one, or --key picks it.
async fn restore_stdout(mut reader: StateReader, args: &RestoreArgs) -> anyhow::Result<()> {
    let checkpoint = reader.checkpoint().clone();
    let entry_count = checkpoint.summary.entry_count;
    if args.key.is_none() && entry_count != 1 {
        return Err(Failure::usage(format!(
            "checkpoint {} has {entry_count} entries; pass --key KEY to write one of them to \
             standard output, or give a directory",
            checkpoint.id
        ))
        .into());
    }
    let Some(entry) = reader.next_entry().await? else {
        let key = args.key.as_deref().unwrap_or_default();
        return Err(
            Failure::not_found(format!("checkpoint {} has no key {key:?}", checkpoint.id)).into(),
        );
    };

    let bar = progress::bar(entry.size, "restoring");
    let mut stdout = tokio::io::stdout();
    while let Some(piece) = reader.next_piece().await? {
        stdout.write_all(&piece).await?;
        bar.inc(piece.len() as u64);
    }
    stdout.flush().await?;
    bar.finish_and_clear();
    if reader.next_entry().await?.is_some() {
        bail!("the server sent more than the one entry asked for");
    }
    eprintln!(
        "restored {:?} from {}",
        entry.key,
        output::checkpoint_label(&checkpoint)
    );
    Ok(())
}

/// Rebuilds the JSON document and writes it, pretty-printed, to DEST.
async fn restore_json(
    reader: StateReader,
    args: &RestoreArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let (checkpoint, state) = collect(reader).await?;
    let doc = json::unflatten(&state).with_context(|| {
        format!(
            "checkpoint {} does not hold a document saved with `ckpt save --json`",
            checkpoint.id
        )
    })?;
    let mut text = serde_json::to_vec_pretty(&doc).expect("a JSON value always serializes");
    text.push(b'\n');

    if args.to_stdout() {
        let mut stdout = tokio::io::stdout();
        stdout.write_all(&text).await?;
        stdout.flush().await?;
        return Ok(());
    }
    write_file(&args.dest, &text)
        .await
        .with_context(|| format!("cannot write {}", args.dest.display()))?;
    eprintln!(
        "restored a JSON document of {} entries from {} into {}",
        state.len(),
        output::checkpoint_label(&checkpoint),
        args.dest.display()
    );
    if format == OutputFormat::Json {
        output::print_json(&json!({
            "checkpoint": output::checkpoint_json(&checkpoint),
            "entries": state.len(),
            "destination": args.dest,
        }))?;
    }
    Ok(())
}

/// `key` as a path relative to DEST, or why it cannot be one. Every `/`-separated part must be
/// a plain name: no absolute paths, no empty, `.` or `..` parts (and no drive prefixes or
/// backslashes on Windows), so nothing is written outside DEST.
fn relative_path(key: &str) -> Result<PathBuf, &'static str> {
    if key.starts_with('/') {
        return Err("it is an absolute path");
    }
    let mut path = PathBuf::new();
    for part in key.split('/') {
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) if name == part => path.push(name),
            (Some(Component::ParentDir), None) => return Err("it has a `..` part"),
            (None, _) => return Err("it has an empty part"),
            _ => return Err("it has a part that is not a plain file name"),
        }
    }
    Ok(path)
}

/// Creates the directories between DEST and the file, refusing to follow a symlink out of
/// DEST.
async fn create_parent_dirs(
    dest: &Path,
    relative: &Path,
    verified: &mut HashSet<PathBuf>,
) -> anyhow::Result<()> {
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    let mut dir = dest.to_path_buf();
    for component in parent.components() {
        dir.push(component);
        if verified.contains(&dir) {
            continue;
        }
        match tokio::fs::symlink_metadata(&dir).await {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!("refusing to write through the symlink {}", dir.display())
            }
            Ok(_) => bail!("{} exists and is not a directory", dir.display()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                tokio::fs::create_dir(&dir)
                    .await
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot inspect {}", dir.display()));
            }
        }
        verified.insert(dir.clone());
    }
    Ok(())
}

/// Streams the current entry's value into `path` through a temporary file in the same
/// directory, renamed into place once complete.
async fn write_value(
    reader: &mut StateReader,
    path: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let temp = temp_path(path);
    let result = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        while let Some(piece) = reader.next_piece().await? {
            file.write_all(&piece).await?;
            bar.inc(piece.len() as u64);
        }
        file.flush().await?;
        drop(file);
        tokio::fs::rename(&temp, path).await?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
async fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temp = temp_path(path);
    let result = async {
        tokio::fs::write(&temp, bytes).await?;
        tokio::fs::rename(&temp, path).await?;
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

/// A hidden name next to `path`, unique to this process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.ckpt-{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_keys_become_paths() {
        assert_eq!(relative_path("a").unwrap(), PathBuf::from("a"));
        assert_eq!(
            relative_path("a/b/c.txt").unwrap(),
            PathBuf::from("a/b/c.txt")
        );
        assert_eq!(relative_path("..a/b..").unwrap(), PathBuf::from("..a/b.."));
        assert_eq!(
            relative_path("ünï/cødé").unwrap(),
            PathBuf::from("ünï/cødé")
        );
    }

    #[test]
    fn keys_that_escape_dest_are_refused() {
        for key in [
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "",
        ] {
            assert!(relative_path(key).is_err(), "{key:?} must be refused");
        }
    }

    #[cfg(windows)]
    #[test]
    fn windows_prefixes_and_backslashes_are_refused() {
        for key in ["C:/x", "C:", "a\\..\\..\\x", "\\\\server\\share"] {
            assert!(relative_path(key).is_err(), "{key:?} must be refused");
        }
    }

    #[test]
    fn uuid_sources_are_tried_as_checkpoint_then_session() {
        let id = "0193aaaa-0000-7000-8000-00000000000f";
        assert_eq!(
            candidates(id, None),
            [Target::checkpoint(id), Target::head(id)]
        );
    }

    #[test]
    fn session_sources_split_the_branch_at_the_last_at() {
        assert_eq!(candidates("s1", None), [Target::head("s1")]);
        assert_eq!(
            candidates("me@host@exp", None),
            [Target::branch_head("me@host", "exp")]
        );
        assert_eq!(candidates("s1@", None), [Target::head("s1@")]);
        assert_eq!(
            candidates("me@host", Some("main")),
            [Target::branch_head("me@host", "main")]
        );
    }

    #[tokio::test]
    async fn parent_dirs_refuse_symlinks() {
        let dest = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(outside.path(), dest.path().join("link")).unwrap();
        let mut verified = HashSet::new();

        create_parent_dirs(dest.path(), Path::new("a/b/file"), &mut verified)
            .await
            .unwrap();
        assert!(dest.path().join("a/b").is_dir());

        #[cfg(unix)]
        assert!(
            create_parent_dirs(dest.path(), Path::new("link/file"), &mut verified)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn write_file_replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.json");
        std::fs::write(&path, "old").unwrap();

        write_file(&path, b"new").await.unwrap();

        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
