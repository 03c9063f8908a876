//! `ckpt diff`: the keys added, removed and modified from one checkpoint to another.

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};

use ckpt_client::{Client, DiffEntry, DiffKind};

use super::output::{self, OutputFormat};
use super::server_not_found;

/// Values at least this large are not printed by --values.
const MAX_SHOWN_VALUE: usize = 4 * 1024;

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The older checkpoint.
    from_id: String,
    /// The newer checkpoint (any session).
    to_id: String,
    /// Also print the values: text under 4 KiB as is, anything else as its size. With
    /// --output json, every value is included (as text, or hex when it is not UTF-8).
    #[arg(long)]
    values: bool,
}

pub(crate) async fn run(
    client: &Client,
    args: DiffArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let entries = client
        .diff_all(&args.from_id, &args.to_id, args.values)
        .await
        .map_err(|err| server_not_found(err, ""))
        .with_context(|| format!("cannot diff {} and {}", args.from_id, args.to_id))?;

    if format == OutputFormat::Json {
        output::print_json(&entries.iter().map(entry_json).collect())?;
        return Ok(());
    }
    let mut text = String::new();
    for entry in &entries {
        text.push_str(&entry_line(entry));
        text.push('\n');
        if args.values {
            text.push_str(&value_lines(entry));
        }
    }
    output::print(&text)?;
    eprintln!("{}", summary(&entries));
    Ok(())
}

/// `+ key (12 bytes)`, `- key (12 bytes)` or `~ key (12 → 20 bytes)`.
pub(crate) fn entry_line(entry: &DiffEntry) -> String {
    let key = printable_key(&entry.key);
    match entry.kind {
        DiffKind::Added => format!("+ {key} ({})", bytes(entry.new_size)),
        DiffKind::Removed => format!("- {key} ({})", bytes(entry.old_size)),
        DiffKind::Modified => format!("~ {key} ({} → {})", entry.old_size, bytes(entry.new_size)),
    }
}

/// The values of an entry, indented under its line: `    - old` then `    + new`.
fn value_lines(entry: &DiffEntry) -> String {
    let mut out = String::new();
    let sides = [
        ('-', entry.kind != DiffKind::Added, &entry.old_value),
        ('+', entry.kind != DiffKind::Removed, &entry.new_value),
    ];
    for (sign, present, value) in sides {
        let Some(value) = value.as_ref().filter(|_| present) else {
            continue;
        };
        for line in shown_value(value).lines() {
            out.push_str(&format!("    {sign} {line}\n"));
        }
        if value.is_empty() {
            out.push_str(&format!("    {sign} <empty>\n"));
        }
    }
    out
}

/// A value as text when it is printable UTF-8 under 4 KiB, otherwise a description.
pub(crate) fn shown_value(value: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(value) else {
        return format!("<{} binary>", bytes(value.len() as u64));
    };
    // Terminal control sequences in a value could rewrite the screen; show those as binary.
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return format!("<{} binary>", bytes(value.len() as u64));
    }
    if value.len() >= MAX_SHOWN_VALUE {
        return format!("<{} of text, too long to show>", bytes(value.len() as u64));
    }
    text.to_owned()
}

/// Keys may hold any character but NUL; escape those that would garble a line.
fn printable_key(key: &str) -> String {
    if key.chars().any(char::is_control) {
        return format!("{key:?}");
    }
    key.to_owned()
}

fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

/// `3 keys differ: 1 added, 1 removed, 1 modified`.
fn summary(entries: &[DiffEntry]) -> String {
    if entries.is_empty() {
        return "no differences".to_owned();
    }
    let count = |kind| entries.iter().filter(|e| e.kind == kind).count();
    let keys = if entries.len() == 1 {
        "key differs"
    } else {
        "keys differ"
    };
    format!(
        "{} {keys}: {} added, {} removed, {} modified",
        entries.len(),
        count(DiffKind::Added),
        count(DiffKind::Removed),
        count(DiffKind::Modified)
    )
}

fn entry_json(entry: &DiffEntry) -> Value {
    let kind = match entry.kind {
        DiffKind::Added => "added",
        DiffKind::Removed => "removed",
        DiffKind::Modified => "modified",
    };
    let mut value = json!({
        "key": entry.key,
        "kind": kind,
        "old_size": entry.old_size,
        "new_size": entry.new_size,
        "old_hash": entry.old_hash,
        "new_hash": entry.new_hash,
    });
    let sides = [
        ("old", entry.kind != DiffKind::Added, &entry.old_value),
        ("new", entry.kind != DiffKind::Removed, &entry.new_value),
    ];
    for (side, present, bytes) in sides {
        if let Some(bytes) = bytes.as_ref().filter(|_| present) {
            let (field, text) = value_json(bytes);
            value[format!("{side}_{field}")] = json!(text);
        }
    }
    value
}

/// `("value", text)` for UTF-8, `("value_hex", hex)` for anything else.
fn value_json(value: &Bytes) -> (&'static str, String) {
    match std::str::from_utf8(value) {
        Ok(text) => ("value", text.to_owned()),
        Err(_) => (
            "value_hex",
            value.iter().map(|b| format!("{b:02x}")).collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: DiffKind, key: &str, old: &[u8], new: &[u8]) -> DiffEntry {
        DiffEntry {
            key: key.into(),
            kind,
            old_size: old.len() as u64,
            new_size: new.len() as u64,
            old_hash: String::new(),
            new_hash: String::new(),
            old_value: Some(Bytes::copy_from_slice(old)),
            new_value: Some(Bytes::copy_from_slice(new)),
        }
    }

    #[test]
    fn entry_lines_show_kind_key_and_sizes() {
        assert_eq!(
            entry_line(&entry(DiffKind::Added, "notes.md", b"", b"hello")),
            "+ notes.md (5 bytes)"
        );
        assert_eq!(
            entry_line(&entry(DiffKind::Removed, "a/b", b"x", b"")),
            "- a/b (1 byte)"
        );
        assert_eq!(
            entry_line(&entry(
                DiffKind::Modified,
                "cfg",
                b"0123456789",
                b"012345678912"
            )),
            "~ cfg (10 → 12 bytes)"
        );
    }

    #[test]
    fn keys_with_control_characters_are_escaped() {
        assert_eq!(
            entry_line(&entry(DiffKind::Added, "a\nb", b"", b"x")),
            "+ \"a\\nb\" (1 byte)"
        );
    }

    #[test]
    fn values_show_text_and_describe_the_rest() {
        assert_eq!(shown_value(b"hello"), "hello");
        assert_eq!(shown_value(&[0xff, 0x00, 0x10]), "<3 bytes binary>");
        assert_eq!(shown_value(b"\x1b[2J"), "<4 bytes binary>");
        let long = vec![b'a'; MAX_SHOWN_VALUE];
        assert_eq!(shown_value(&long), "<4096 bytes of text, too long to show>");
    }

    #[test]
    fn modified_values_print_old_then_new() {
        let e = entry(DiffKind::Modified, "k", b"one\ntwo", b"three");
        assert_eq!(value_lines(&e), "    - one\n    - two\n    + three\n");
        let e = entry(DiffKind::Added, "k", b"", b"");
        assert_eq!(value_lines(&e), "    + <empty>\n");
    }

    #[test]
    fn summary_counts_each_kind() {
        let entries = [
            entry(DiffKind::Added, "a", b"", b"1"),
            entry(DiffKind::Modified, "b", b"1", b"2"),
        ];
        assert_eq!(
            summary(&entries),
            "2 keys differ: 1 added, 0 removed, 1 modified"
        );
        assert_eq!(summary(&[]), "no differences");
    }
}
