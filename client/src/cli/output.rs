//! Rendering results: aligned tables for people, JSON for programs. Everything printed on
//! standard output goes through here; notes and warnings go to standard error.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use indicatif::HumanBytes;
use serde_json::{Value, json};

use ckpt_client::{Checkpoint, Session};

/// How results are printed on standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned columns and plain lines, for people.
    Table,
    /// One JSON document, for programs.
    Json,
}

/// Writes `text` to standard output.
pub(crate) fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Writes `value` to standard output as pretty JSON.
pub(crate) fn print_json(value: &Value) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value always serializes");
    text.push('\n');
    print(&text)
}

pub(crate) fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    json!({
        "id": checkpoint.id,
        "session_id": checkpoint.session_id,
        "branch": checkpoint.branch,
        "parent_ids": checkpoint.parent_ids,
        "create_time": rfc3339(&checkpoint.create_time),
        "metadata": checkpoint.metadata,
        "message": checkpoint.message,
        "summary": {
            "entry_count": checkpoint.summary.entry_count,
            "logical_bytes": checkpoint.summary.logical_bytes,
            "stored_bytes": checkpoint.summary.stored_bytes,
        },
        "sequence": checkpoint.sequence,
    })
}

pub(crate) fn session_json(session: &Session) -> Value {
    json!({
        "id": session.id,
        "create_time": rfc3339(&session.create_time),
        "update_time": rfc3339(&session.update_time),
        "checkpoint_count": session.checkpoint_count,
    })
}

pub(crate) fn checkpoints_table(checkpoints: &[Checkpoint]) -> String {
    let mut table = Table::new(&[
        "SEQ",
        "ID",
        "BRANCH",
        "CREATED (UTC)",
        "ENTRIES",
        "SIZE",
        "MESSAGE",
    ]);
    for checkpoint in checkpoints {
        table.row(vec![
            checkpoint.sequence.to_string(),
            checkpoint.id.clone(),
            checkpoint.branch.clone(),
            short_time(&checkpoint.create_time),
            checkpoint.summary.entry_count.to_string(),
            HumanBytes(checkpoint.summary.logical_bytes).to_string(),
            first_line(&checkpoint.message, 60),
        ]);
    }
    table.render()
}

/// Checkpoints from any sessions (search results): the session comes first.
pub(crate) fn found_table(checkpoints: &[Checkpoint]) -> String {
    let mut table = Table::new(&["SESSION", "SEQ", "ID", "BRANCH", "CREATED (UTC)", "MESSAGE"]);
    for checkpoint in checkpoints {
        table.row(vec![
            checkpoint.session_id.clone(),
            checkpoint.sequence.to_string(),
            checkpoint.id.clone(),
            checkpoint.branch.clone(),
            short_time(&checkpoint.create_time),
            first_line(&checkpoint.message, 60),
        ]);
    }
    table.render()
}

pub(crate) fn sessions_table(sessions: &[Session]) -> String {
    let mut table = Table::new(&["SESSION", "CHECKPOINTS", "CREATED (UTC)", "UPDATED (UTC)"]);
    for session in sessions {
        table.row(vec![
            session.id.clone(),
            session.checkpoint_count.to_string(),
            short_time(&session.create_time),
            short_time(&session.update_time),
        ]);
    }
    table.render()
}

/// Every field of a checkpoint, one per line, metadata as indented JSON.
pub(crate) fn checkpoint_details(checkpoint: &Checkpoint) -> String {
    let summary = &checkpoint.summary;
    let parents = if checkpoint.parent_ids.is_empty() {
        "(none)".to_owned()
    } else {
        checkpoint.parent_ids.join(", ")
    };
    let metadata = serde_json::to_string_pretty(&checkpoint.metadata)
        .expect("a JSON value always serializes")
        .replace('\n', "\n  ");
    format!(
        "id:        {}\nsession:   {}\nbranch:    {}\nsequence:  {}\nparents:   {}\n\
         created:   {}\nentries:   {}\nsize:      {} ({} bytes)\nstored:    {} ({} bytes)\n\
         message:   {}\nmetadata:\n  {}\n",
        checkpoint.id,
        checkpoint.session_id,
        checkpoint.branch,
        checkpoint.sequence,
        parents,
        rfc3339(&checkpoint.create_time),
        summary.entry_count,
        HumanBytes(summary.logical_bytes),
        summary.logical_bytes,
        HumanBytes(summary.stored_bytes),
        summary.stored_bytes,
        checkpoint.message,
        metadata,
    )
}

/// Names a checkpoint with its place in the session: `checkpoint ID (#3 on s@main)`.
pub(crate) fn checkpoint_label(checkpoint: &Checkpoint) -> String {
    format!(
        "checkpoint {} (#{} on {}@{})",
        checkpoint.id, checkpoint.sequence, checkpoint.session_id, checkpoint.branch
    )
}

/// One line for standard error after a save.
pub(crate) fn summary_line(checkpoint: &Checkpoint) -> String {
    format!(
        "{}: {} entries, {}, {} newly stored",
        checkpoint_label(checkpoint),
        checkpoint.summary.entry_count,
        HumanBytes(checkpoint.summary.logical_bytes),
        HumanBytes(checkpoint.summary.stored_bytes),
    )
}

pub(crate) fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn short_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The first line of `text`, cut to `max` characters with an ellipsis.
pub(crate) fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    let multi_line = text.trim_end().contains('\n');
    if line.chars().count() <= max && !multi_line {
        return line.to_owned();
    }
    let cut: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                let cell_width = |row: &Vec<String>| row[column].chars().count();
                self.rows.iter().map(cell_width).max().unwrap_or(0)
            })
            .collect();

        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (column, cell) in row.iter().enumerate() {
                if column + 1 == columns {
                    line.push_str(cell);
                } else {
                    let pad = widths[column] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["A", "LONGER", "LAST"]);
        table.row(vec!["wide cell".into(), "x".into(), "msg".into()]);
        assert_eq!(
            table.render(),
            "A          LONGER  LAST\nwide cell  x       msg\n"
        );
    }

    #[test]
    fn first_line_cuts_long_and_multi_line_messages() {
        assert_eq!(first_line("short", 10), "short");
        assert_eq!(first_line("0123456789abc", 10), "012345678…");
        assert_eq!(first_line("one\ntwo", 10), "one…");
        assert_eq!(first_line("", 10), "");
    }
}
