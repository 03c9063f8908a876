//! Claude Code JSONL transcripts: one step per `user` or `assistant` record.
//!
//! The transcript key holds the record's line byte for byte. `progress`, `system`,
//! `queue-operation` and `file-history-snapshot` records make no step of their own: they are
//! counted in the metadata of the step before them (or the first step). The latest snapshot's
//! tracked-file table goes to `files/snapshot`, and the compact boundary prunes the transcript
//! that the compaction summary replaces.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ReplayError, Step, json_bytes, short_line, str_field, transcript_key};

/// Key holding the tracked-file table of the latest `file-history-snapshot` record.
const SNAPSHOT_KEY: &str = "files/snapshot";

/// Builds the steps of one JSONL transcript.
pub(super) fn steps(data: &Bytes, name: &str) -> Result<Vec<Step>, ReplayError> {
    let mut session = Session::default();
    let mut offset = 0;
    for (index, line) in data.split(|b| *b == b'\n').enumerate() {
        let start = offset;
        offset += line.len() + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: Value = serde_json::from_slice(line)
            .map_err(|e| ReplayError::json(name, Some(index + 1), e))?;
        if !record.is_object() {
            return Err(ReplayError::malformed(
                name,
                format!("line {} is not an object", index + 1),
            ));
        }
        session.record(&record, data.slice(start..start + line.len()));
    }
    Ok(session.finish())
}

/// The replay of one transcript, record by record.
#[derive(Default)]
struct Session {
    steps: Vec<Step>,
    /// Transcript keys in the state now, oldest first.
    live: Vec<String>,
    /// Messages seen so far; the next transcript key's index.
    messages: usize,
    /// Record counts by type waiting for the first step.
    unattached: BTreeMap<String, u64>,
    /// The latest snapshot table not yet written, and the one in the state.
    pending_snapshot: Option<Bytes>,
    current_snapshot: Option<Bytes>,
    /// A compact boundary was seen: the next message starts a new root.
    prune: bool,
    /// Tool names by `tool_use` id, to name the tool of a `tool_result`.
    tools: HashMap<String, String>,
}

impl Session {
    fn record(&mut self, record: &Value, raw: Bytes) {
        let kind = str_field(record, "type");
        match kind {
            "user" | "assistant" => self.message(record, raw),
            "file-history-snapshot" => {
                let table = &record["snapshot"]["trackedFileBackups"];
                self.pending_snapshot = Some(json_bytes(table));
                self.attach(kind);
            }
            "system" => {
                if str_field(record, "subtype") == "compact_boundary" {
                    self.prune = true;
                }
                self.attach(kind);
            }
            _ => self.attach(kind),
        }
    }

    fn message(&mut self, record: &Value, raw: Bytes) {
        let message = &record["message"];
        let (text, tool) = self.describe(message);
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or(str_field(record, "type"));
        let parent = record.get("parentUuid").filter(|p| !p.is_null());
        let parent = parent.or_else(|| record.get("logicalParentUuid")).cloned();
        let mut step = Step::new(&text, json!({ "role": role, "uuid": record.get("uuid") }));
        if let Some(parent) = parent {
            step.set_meta("parent", parent);
        }
        if let Some(tool) = tool {
            step.set_meta("tool", Value::from(tool));
        }
        for field in ["timestamp", "agentId"] {
            if let Some(value) = record.get(field) {
                step.set_meta(field, value.clone());
            }
        }

        // After a compact boundary the summary replaces everything before it.
        if std::mem::take(&mut self.prune) && !self.live.is_empty() {
            step.set_meta("pruned", Value::from(self.live.len()));
            step.deletes = std::mem::take(&mut self.live);
        }

        let key = transcript_key(self.messages);
        self.messages += 1;
        self.live.push(key.clone());
        step.put(key, raw);
        self.write_snapshot(&mut step);

        if self.steps.is_empty() && !self.unattached.is_empty() {
            step.set_meta("attached", json!(std::mem::take(&mut self.unattached)));
        }
        self.steps.push(step);
    }

    /// Counts a non-message record on the latest step.
    fn attach(&mut self, kind: &str) {
        let kind = if kind.is_empty() { "unknown" } else { kind };
        let Some(step) = self.steps.last_mut() else {
            *self.unattached.entry(kind.to_owned()).or_default() += 1;
            return;
        };
        let Value::Object(meta) = &mut step.metadata else {
            return;
        };
        let attached = meta.entry("attached").or_insert_with(|| json!({}));
        if let Some(counts) = attached.as_object_mut() {
            let count = counts.get(kind).and_then(Value::as_u64).unwrap_or(0);
            counts.insert(kind.to_owned(), Value::from(count + 1));
        }
    }

    fn write_snapshot(&mut self, step: &mut Step) {
        let Some(snapshot) = self.pending_snapshot.take() else {
            return;
        };
        if self.current_snapshot.as_ref() != Some(&snapshot) {
            self.current_snapshot = Some(snapshot.clone());
            step.put(SNAPSHOT_KEY.to_owned(), snapshot);
        }
    }

    /// The text for the step's message line and the tool involved, if any.
    fn describe(&mut self, message: &Value) -> (String, Option<String>) {
        let content = &message["content"];
        if let Some(text) = content.as_str() {
            return (text.to_owned(), None);
        }
        let Some(block) = content.as_array().and_then(|blocks| blocks.first()) else {
            return (String::new(), None);
        };
        match str_field(block, "type") {
            "text" => (str_field(block, "text").to_owned(), None),
            "thinking" => (format!("(thinking) {}", str_field(block, "thinking")), None),
            "tool_use" => {
                let tool = str_field(block, "name").to_owned();
                let id = str_field(block, "id");
                self.tools.insert(id.to_owned(), tool.clone());
                (
                    format!("{tool}: {}", tool_input_summary(&block["input"])),
                    Some(tool),
                )
            }
            "tool_result" => {
                let tool = self.tools.get(str_field(block, "tool_use_id")).cloned();
                (
                    format!("result: {}", tool_result_text(&block["content"])),
                    tool,
                )
            }
            other => (other.to_owned(), None),
        }
    }

    /// Writes a snapshot that arrived after the last message onto the last step.
    fn finish(mut self) -> Vec<Step> {
        if let Some(mut last) = self.steps.pop() {
            self.write_snapshot(&mut last);
            self.steps.push(last);
        }
        self.steps
    }
}

/// The most telling argument of a tool call: a command, path, pattern, URL or query.
fn tool_input_summary(input: &Value) -> String {
    let fields = [
        "command",
        "file_path",
        "pattern",
        "url",
        "query",
        "description",
        "skill",
    ];
    let found = fields
        .iter()
        .find_map(|field| input.get(*field).and_then(Value::as_str));
    short_line(found.unwrap_or_default())
}

fn tool_result_text(content: &Value) -> String {
    if let Some(text) = content.as_str() {
        return short_line(text);
    }
    let first = content.as_array().and_then(|blocks| blocks.first());
    short_line(
        first
            .map(|block| str_field(block, "text"))
            .unwrap_or_default(),
    )
}
