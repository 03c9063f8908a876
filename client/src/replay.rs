//! Turns recorded AI-agent sessions into sequences of checkpoint steps.
//!
//! Pure and offline: the `ckpt replay` command and the server's integration tests feed the steps
//! to a real server, and [`apply`] gives the state each checkpoint is expected to hold.
//!
//! Six on-disk formats are understood (see [`Format`]). Every format is mapped the same way:
//! one step per message, trajectory step, action/observation pair or user turn; the transcript
//! lives under `transcript/NNNNNN` (one key per message, holding that message's JSON or
//! Markdown), files the agent wrote under `files/<path>`, and editor state under `state/...`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Map, Value};

mod aider;
mod claude_code;
mod openhands;
mod run;
mod swe_agent;

pub use run::{ReplayReport, ReplayRunError, replay};

/// Environment variable that overrides [`default_data_dir`].
pub const DATA_DIR_ENV: &str = "CKPT_SESSION_DATA";

/// Longest [`Step::message`], in characters.
const MESSAGE_CHARS: usize = 80;

/// One recorded session turned into steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Path of the file relative to the data folder, with `/` separators, e.g.
    /// `swe-agent-traj/katy.traj`.
    pub name: String,
    /// The format the file was read as.
    pub format: Format,
    /// The checkpoints, in order; never empty.
    pub steps: Vec<Step>,
}

impl Recording {
    /// The state after the last step, starting from an empty state.
    pub fn final_state(&self) -> BTreeMap<String, Bytes> {
        let mut state = BTreeMap::new();
        for step in &self.steps {
            apply(&mut state, step);
        }
        state
    }
}

/// The on-disk format of a recorded session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// Claude Code session transcript: JSONL, one record per line (main or subagent file).
    ClaudeCodeJsonl,
    /// SWE-agent `.traj`: one JSON object with `trajectory`, `history` and `info`.
    SweAgentTraj,
    /// mini-swe-agent trajectory: a JSON list of chat messages.
    MiniSweAgentTraj,
    /// OpenHands agent-SDK (V1) event list: JSON array of `ActionEvent`/`ObservationEvent`.
    OpenHandsSdkEvents,
    /// OpenHands V0 event stream: JSON array of actions and observations with integer ids.
    OpenHandsV0Events,
    /// Aider `.aider.chat.history.md` Markdown log.
    AiderChatHistory,
}

impl Format {
    /// A stable lowercase name, used in step metadata and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::ClaudeCodeJsonl => "claude-code-jsonl",
            Format::SweAgentTraj => "swe-agent-traj",
            Format::MiniSweAgentTraj => "mini-swe-agent-traj",
            Format::OpenHandsSdkEvents => "openhands-sdk-events",
            Format::OpenHandsV0Events => "openhands-v0-events",
            Format::AiderChatHistory => "aider-chat-history",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One checkpoint's worth of change, incremental against the previous step's state.
///
/// A step never puts and deletes the same key, and never puts one key twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Keys written by this step, with their new values.
    pub puts: Vec<(String, Bytes)>,
    /// Keys removed by this step; each was present before it.
    pub deletes: Vec<String>,
    /// A short human line: the first 80 characters of the text or action.
    pub message: String,
    /// A small JSON object: always `format` and `step` (0-based), plus `role`, `tool`, ... where
    /// the recording says.
    pub metadata: Value,
}

impl Step {
    fn new(message: &str, metadata: Value) -> Self {
        Step {
            puts: Vec::new(),
            deletes: Vec::new(),
            message: short_line(message),
            metadata,
        }
    }

    /// Puts `key`, replacing an earlier put of the same key in this step.
    fn put(&mut self, key: String, value: Bytes) {
        match self.puts.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.puts.push((key, value)),
        }
    }

    /// Sets one metadata field (metadata is always an object).
    fn set_meta(&mut self, field: &str, value: Value) {
        if let Value::Object(map) = &mut self.metadata {
            map.insert(field.to_owned(), value);
        }
    }
}

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The file or folder could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON (or a JSONL line is not).
    #[error("{name}: invalid JSON{}: {source}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Json {
        /// The recording's name.
        name: String,
        /// 1-based line number for JSONL files.
        line: Option<usize>,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file matches none of the known formats.
    #[error("{name}: not a recording in any known format")]
    UnknownFormat {
        /// The recording's name.
        name: String,
    },
    /// The file is in a known format but lacks something the mapping needs.
    #[error("{name}: {reason}")]
    Malformed {
        /// The recording's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The folder holds no recordings.
    #[error("no recordings found under {}", path.display())]
    NoRecordings {
        /// The folder.
        path: PathBuf,
    },
}

impl ReplayError {
    fn malformed(name: &str, reason: impl Into<String>) -> Self {
        ReplayError::Malformed {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    fn json(name: &str, line: Option<usize>, source: serde_json::Error) -> Self {
        ReplayError::Json {
            name: name.to_owned(),
            line,
            source,
        }
    }
}

/// The folder of recorded sessions: `$CKPT_SESSION_DATA` if set, else
/// `shared/data/agent-sessions` beside the workspace this crate was built from.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/agent-sessions")
}

/// Loads every recording under `root` (recursively), sorted by name.
///
/// Files ending in `.jsonl`, `.traj`, `.json` or `.md` are recordings, except `README*` and
/// hidden files; one that cannot be read fails the whole load rather than being skipped.
pub fn load_dir(root: &Path) -> Result<Vec<Recording>, ReplayError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|err| {
            let path = err.path().unwrap_or(root).to_path_buf();
            ReplayError::Io {
                path,
                source: err.into(),
            }
        })?;
        if entry.file_type().is_file() && is_recording_file(entry.path()) {
            files.push(entry.into_path());
        }
    }

    let mut recordings = Vec::with_capacity(files.len());
    for path in files {
        let name = relative_name(root, &path);
        recordings.push(load_file(&path, &name)?);
    }
    if recordings.is_empty() {
        return Err(ReplayError::NoRecordings {
            path: root.to_path_buf(),
        });
    }
    recordings.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(recordings)
}

/// Loads one recording, telling its format from the file name and content.
pub fn load_file(path: &Path, name: &str) -> Result<Recording, ReplayError> {
    let data = std::fs::read(path).map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(Bytes::from(data), path, name)
}

/// Applies `step` to `state`: deletes first, then puts.
pub fn apply(state: &mut BTreeMap<String, Bytes>, step: &Step) {
    for key in &step.deletes {
        state.remove(key);
    }
    for (key, value) in &step.puts {
        state.insert(key.clone(), value.clone());
    }
}

/// Parses one recording already in memory.
fn parse(data: Bytes, path: &Path, name: &str) -> Result<Recording, ReplayError> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or(name);

    let (format, steps) = if file_name.ends_with(".jsonl") {
        (Format::ClaudeCodeJsonl, claude_code::steps(&data, name)?)
    } else if file_name.ends_with(".md") {
        (Format::AiderChatHistory, aider::steps(&data, name)?)
    } else {
        let doc: Value =
            serde_json::from_slice(&data).map_err(|e| ReplayError::json(name, None, e))?;
        match detect_json(&doc) {
            Some(Format::SweAgentTraj) => (Format::SweAgentTraj, swe_agent::steps(&doc, name)?),
            Some(Format::MiniSweAgentTraj) => {
                (Format::MiniSweAgentTraj, swe_agent::mini_steps(&doc, name)?)
            }
            Some(Format::OpenHandsSdkEvents) => (
                Format::OpenHandsSdkEvents,
                openhands::sdk_steps(&doc, name)?,
            ),
            Some(Format::OpenHandsV0Events) => {
                (Format::OpenHandsV0Events, openhands::v0_steps(&doc, name)?)
            }
            _ => {
                return Err(ReplayError::UnknownFormat {
                    name: name.to_owned(),
                });
            }
        }
    };

    finish(name, format, steps)
}

/// Tells the format of a JSON document from its shape.
fn detect_json(doc: &Value) -> Option<Format> {
    if doc.get("trajectory").is_some_and(Value::is_array) {
        return Some(Format::SweAgentTraj);
    }
    if doc.get("messages").is_some_and(Value::is_array) {
        return Some(Format::MiniSweAgentTraj);
    }
    let first = doc.as_array()?.first()?;
    if first.get("kind").is_some() {
        Some(Format::OpenHandsSdkEvents)
    } else if first.get("role").is_some() {
        Some(Format::MiniSweAgentTraj)
    } else if first.get("id").is_some_and(Value::is_u64)
        && (first.get("action").is_some() || first.get("observation").is_some())
    {
        Some(Format::OpenHandsV0Events)
    } else {
        None
    }
}

/// Stamps `format` and `step` into every step's metadata and checks there is at least one step.
fn finish(name: &str, format: Format, mut steps: Vec<Step>) -> Result<Recording, ReplayError> {
    if steps.is_empty() {
        return Err(ReplayError::malformed(name, "the recording holds no steps"));
    }
    for (index, step) in steps.iter_mut().enumerate() {
        if !step.metadata.is_object() {
            step.metadata = Value::Object(Map::new());
        }
        step.set_meta("format", Value::from(format.as_str()));
        step.set_meta("step", Value::from(index));
        if step.message.is_empty() {
            step.message = format!("{format} step {index}");
        }
    }
    Ok(Recording {
        name: name.to_owned(),
        format,
        steps,
    })
}

fn is_recording_file(path: &Path) -> bool {
    let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if file_name.starts_with('.') || file_name.to_ascii_lowercase().starts_with("readme") {
        return false;
    }
    [".jsonl", ".traj", ".json", ".md"]
        .iter()
        .any(|ext| file_name.ends_with(ext))
}

fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    parts.join("/")
}

/// Key of the `index`-th transcript message.
fn transcript_key(index: usize) -> String {
    format!("transcript/{index:06}")
}

/// Key of a workspace file the agent wrote; absolute paths lose their leading `/`.
fn file_key(path: &str) -> String {
    format!("files/{}", path.trim_start_matches('/'))
}

/// Serializes a JSON value the same way every time (serde_json keeps object keys in a stable
/// order, so two runs give the same bytes).
fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The first [`MESSAGE_CHARS`] characters of `text`, whitespace runs folded to one space.
fn short_line(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= MESSAGE_CHARS {
            break;
        }
    }
    out.chars().take(MESSAGE_CHARS).collect()
}

/// `value[field]` as a string, or "".
fn str_field<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Finds the recorded sessions or fails the test with a clear message; never skips.
    fn data_dir() -> PathBuf {
        let dir = default_data_dir();
        assert!(
            dir.join("README.md").is_file(),
            "agent-session data not found at {}; check out the shared data beside the \
             workspace or set {DATA_DIR_ENV} to the agent-sessions folder",
            dir.display()
        );
        dir
    }

    fn load(name: &str) -> Recording {
        let path = data_dir().join(name);
        load_file(&path, name).unwrap_or_else(|err| panic!("{name}: {err}"))
    }

    fn total_bytes(state: &BTreeMap<String, Bytes>) -> usize {
        state.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    const CLAUDE_MAIN: &str = "claude-code-jsonl/ae4a77f8-aedd-4bc1-888f-c94edc91af04.jsonl";
    const MARSHMALLOW: &str = "swe-agent-traj/\
        marshmallow-code__marshmallow-1867.function_calling_replace_from_source.traj";

    /// Step counts, derived from the README's mapping and checked against the files by
    /// counting records independently (see the comment beside each).
    const EXPECTED_STEPS: [(&str, Format, usize); 14] = [
        // 331 lines starting with "#### " fold into 168 user turns across 109 sessions.
        (
            "aider-chat-history/chat-history.2024-08-21.md",
            Format::AiderChatHistory,
            168,
        ),
        // 2,385 lines, one step per `user`/`assistant` record: 249 + 408.
        (CLAUDE_MAIN, Format::ClaudeCodeJsonl, 657),
        // 13 `user` + 15 `assistant` records.
        (
            "claude-code-jsonl/ae4a77f8-aedd-4bc1-888f-c94edc91af04/subagents/agent-aac57f5.jsonl",
            Format::ClaudeCodeJsonl,
            28,
        ),
        // The instruction and the summary.
        (
            "claude-code-jsonl/ae4a77f8-aedd-4bc1-888f-c94edc91af04/subagents/agent-acompact-946d2b.jsonl",
            Format::ClaudeCodeJsonl,
            2,
        ),
        // 13 `user` + 9 `assistant` records.
        (
            "claude-code-jsonl/tool_heavy.jsonl",
            Format::ClaudeCodeJsonl,
            22,
        ),
        // 10 assistant actions, each with the observation after it.
        (
            "mini-swe-agent-traj/github_issue.traj.json",
            Format::MiniSweAgentTraj,
            10,
        ),
        // One step per tool call: 5 answered, plus the final FinishAction with no observation.
        (
            "openhands-sdk-events/traj_safety-meeting-topics.json",
            Format::OpenHandsSdkEvents,
            6,
        ),
        // 202 events: 101 actions, each answered.
        (
            "openhands-sdk-events/traj_safety-metrics.json",
            Format::OpenHandsSdkEvents,
            101,
        ),
        // 11 tool calls, two pairs of them issued in parallel.
        (
            "openhands-sdk-events/traj_safety-transitions.json",
            Format::OpenHandsSdkEvents,
            11,
        ),
        // 18 events: 7 action/observation pairs by `cause` and 4 lone state changes.
        (
            "openhands-v0-events/basic_gui_mode.json",
            Format::OpenHandsV0Events,
            11,
        ),
        // One step per `trajectory` entry (the README's step counts).
        ("swe-agent-traj/flash.traj", Format::SweAgentTraj, 4),
        ("swe-agent-traj/katy.traj", Format::SweAgentTraj, 18),
        (MARSHMALLOW, Format::SweAgentTraj, 13),
        (
            "swe-agent-traj/pydicom__pydicom-1458.traj",
            Format::SweAgentTraj,
            12,
        ),
    ];

    #[test]
    fn load_dir_reads_all_fourteen_recordings_sorted_by_name() {
        let recordings = load_dir(&data_dir()).unwrap();

        let names: Vec<_> = recordings.iter().map(|r| r.name.as_str()).collect();
        let expected: Vec<_> = EXPECTED_STEPS.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, expected);
        for (recording, (name, format, steps)) in recordings.iter().zip(EXPECTED_STEPS) {
            assert_eq!(recording.format, format, "{name}");
            assert_eq!(recording.steps.len(), steps, "{name}");
        }
    }

    #[test]
    fn every_step_is_well_formed() {
        for recording in load_dir(&data_dir()).unwrap() {
            let name = &recording.name;
            let mut state = BTreeMap::new();
            for (index, step) in recording.steps.iter().enumerate() {
                let meta = step.metadata.as_object().expect("metadata is an object");
                assert_eq!(meta["format"], recording.format.as_str(), "{name}");
                assert_eq!(meta["step"], index, "{name}");
                assert!(
                    serde_json::to_vec(meta).unwrap().len() < 1024,
                    "{name} step {index}"
                );
                assert!(!step.message.is_empty() && step.message.chars().count() <= 80);
                assert!(
                    !step.puts.is_empty() || !step.deletes.is_empty(),
                    "{name} step {index}"
                );

                let put_keys: BTreeSet<_> = step.puts.iter().map(|(k, _)| k).collect();
                assert_eq!(
                    put_keys.len(),
                    step.puts.len(),
                    "{name} step {index}: duplicate put"
                );
                for key in &step.deletes {
                    assert!(
                        state.contains_key(key),
                        "{name} step {index}: deletes absent {key}"
                    );
                    assert!(
                        !put_keys.contains(key),
                        "{name} step {index}: puts and deletes {key}"
                    );
                }
                apply(&mut state, step);
            }
            assert!(
                total_bytes(&state) > 2_000,
                "{name}: final state is too small"
            );
        }
    }

    #[test]
    fn loading_twice_gives_identical_steps() {
        assert_eq!(load(CLAUDE_MAIN), load(CLAUDE_MAIN));
        assert_eq!(load(MARSHMALLOW), load(MARSHMALLOW));
    }

    #[test]
    fn claude_code_keeps_raw_lines_and_prunes_at_the_compact_boundary() {
        let recording = load(CLAUDE_MAIN);
        let raw = std::fs::read(data_dir().join(CLAUDE_MAIN)).unwrap();
        let lines: BTreeSet<&[u8]> = raw.split(|b| *b == b'\n').collect();

        // Every transcript value is one line of the file, byte for byte.
        let transcript_puts = recording.steps.iter().flat_map(|s| &s.puts);
        for (key, value) in transcript_puts.filter(|(k, _)| k.starts_with("transcript/")) {
            assert!(
                lines.contains(value.as_ref()),
                "{key} is not a line of the file"
            );
        }

        // One prune: the 409 messages before the compact boundary (line 1,481).
        let pruning: Vec<_> = recording
            .steps
            .iter()
            .filter(|s| !s.deletes.is_empty())
            .collect();
        assert_eq!(pruning.len(), 1);
        assert_eq!(pruning[0].deletes.len(), 409);
        assert_eq!(pruning[0].metadata["pruned"], 409);

        let state = recording.final_state();
        assert_eq!(
            state
                .keys()
                .filter(|k| k.starts_with("transcript/"))
                .count(),
            657 - 409
        );
        let snapshot: Value = serde_json::from_slice(&state["files/snapshot"]).unwrap();
        assert!(
            snapshot.get("mix.exs").is_some(),
            "latest snapshot tracks mix.exs"
        );
        assert!(total_bytes(&state) > 500_000);
    }

    #[test]
    fn claude_code_names_the_tool_of_calls_and_results() {
        let recording = load("claude-code-jsonl/tool_heavy.jsonl");
        let tools: Vec<_> = recording
            .steps
            .iter()
            .filter_map(|s| s.metadata["tool"].as_str())
            .collect();
        // 6 calls and their 6 results; the interrupted call has no result.
        assert!(tools.len() >= 11, "{tools:?}");
        assert!(
            tools.contains(&"WebFetch") && tools.contains(&"Bash"),
            "{tools:?}"
        );
    }

    #[test]
    fn swe_agent_tracks_history_editor_state_and_submission() {
        let recording = load("swe-agent-traj/katy.traj");
        let state = recording.final_state();
        let transcript = state
            .keys()
            .filter(|k| k.starts_with("transcript/"))
            .count();
        let trajectory = state
            .keys()
            .filter(|k| k.starts_with("trajectory/"))
            .count();
        assert_eq!((transcript, trajectory), (37, 18));
        assert_eq!(&state["files/submission.diff"][..], b"125379498");
        assert!(state.contains_key("state/working_dir") && state.contains_key("state/open_file"));

        let last = recording.steps.last().unwrap();
        assert!(last.puts.iter().any(|(k, _)| k == "files/submission.diff"));

        let pydicom = load("swe-agent-traj/pydicom__pydicom-1458.traj").final_state();
        assert!(pydicom["files/submission.diff"].starts_with(b"\ndiff --git"));
    }

    #[test]
    fn marshmallow_overwrites_model_input_every_step() {
        let recording = load(MARSHMALLOW);
        let mut sizes = Vec::new();
        for step in &recording.steps {
            let input = step
                .puts
                .iter()
                .find(|(k, _)| k == "model_input")
                .expect("model_input");
            let messages: Vec<Value> = serde_json::from_slice(&input.1).unwrap();
            sizes.push(messages.len());
        }
        assert_eq!(sizes, (2..=14).map(|n| 2 * n).collect::<Vec<_>>());
        // 13 near-identical snapshots of 7-28 KB each.
        let written: usize = recording
            .steps
            .iter()
            .flat_map(|s| &s.puts)
            .map(|(_, v)| v.len())
            .sum();
        assert!(written > 250_000, "{written}");
        assert!(recording.final_state()["model_input"].len() > 25_000);
    }

    #[test]
    fn mini_swe_agent_stores_the_final_diff() {
        let state = load("mini-swe-agent-traj/github_issue.traj.json").final_state();
        assert_eq!(
            state
                .keys()
                .filter(|k| k.starts_with("transcript/"))
                .count(),
            22
        );
        assert!(state["files/submission.diff"].starts_with(b"diff --git a/tests/missing_colon.py"));
    }

    #[test]
    fn openhands_sdk_pairs_parallel_calls_and_writes_created_files() {
        let recording = load("openhands-sdk-events/traj_safety-transitions.json");
        // Events 0 and 1 are parallel actions; 2 and 3 their observations.
        let first: Vec<_> = recording.steps[0]
            .puts
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(first, ["transcript/000000", "transcript/000002"]);
        let state = recording.final_state();
        assert_eq!(&state["files/workspace/reimburse.txt"][..], b"approved");
        assert!(state.contains_key("files/workspace/final_reimbursement_note.txt"));

        // The final FinishAction has no observation but still makes a step.
        let topics = load("openhands-sdk-events/traj_safety-meeting-topics.json");
        assert_eq!(
            topics.steps.last().unwrap().metadata["action"],
            "FinishAction"
        );
    }

    #[test]
    fn openhands_v0_writes_edited_files() {
        let state = load("openhands-v0-events/basic_gui_mode.json").final_state();
        assert_eq!(
            state
                .keys()
                .filter(|k| k.starts_with("transcript/"))
                .count(),
            18
        );
        assert!(state["files/workspace/todo-app/index.html"].starts_with(b"<!DOCTYPE html>"));
        assert!(state["files/workspace/todo-app/app.js"].starts_with(b"const { createApp }"));
    }

    #[test]
    fn aider_transcript_reassembles_the_file() {
        let name = "aider-chat-history/chat-history.2024-08-21.md";
        let recording = load(name);
        let state = recording.final_state();
        let joined: Vec<u8> = state
            .iter()
            .filter(|(k, _)| k.starts_with("transcript/"))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        assert_eq!(joined, std::fs::read(data_dir().join(name)).unwrap());

        // Of the 70 `> Commit` lines, 15 are start-up commits in session preambles; the other
        // 55 fall in 34 turns (an edit is often followed by a style commit).
        let commits = recording
            .steps
            .iter()
            .filter(|s| s.metadata.get("commit").is_some());
        assert_eq!(commits.count(), 34);
        assert_eq!(recording.steps[0].metadata["command"], "/add");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8]); 9] = [
            (
                "broken.jsonl",
                b"{\"type\": \"user\", \"message\": {\"role\": \"user\"}}\n{not json\n",
            ),
            ("empty.jsonl", b""),
            ("only-progress.jsonl", b"{\"type\": \"progress\"}\n"),
            ("truncated.traj", b"{\"trajectory\": [{\"action\": \"ls\""),
            ("no-steps.traj", b"{\"trajectory\": [], \"history\": []}"),
            (
                "wrong-shape.traj",
                b"{\"trajectory\": [1, 2], \"history\": \"x\"}",
            ),
            ("unknown.json", b"{\"hello\": \"world\"}"),
            (
                "events.json",
                b"[{\"kind\": \"ActionEvent\", \"action\": 7}, 3]",
            ),
            ("notes.md", b"just some notes\n"),
        ];
        for (file, content) in cases {
            let path = dir.path().join(file);
            std::fs::write(&path, content).unwrap();
            let result = load_file(&path, file);
            assert!(result.is_err(), "{file} loaded: {result:?}");
        }

        let err = load_file(&dir.path().join("broken.jsonl"), "broken.jsonl").unwrap_err();
        assert!(
            matches!(err, ReplayError::Json { line: Some(2), .. }),
            "{err}"
        );
        let missing = load_file(&dir.path().join("absent.traj"), "absent.traj").unwrap_err();
        assert!(matches!(missing, ReplayError::Io { .. }), "{missing}");
        assert!(load_dir(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn apply_deletes_then_puts() {
        let mut state = BTreeMap::from([("a".to_owned(), Bytes::from_static(b"1"))]);
        let mut step = Step::new("x", Value::Object(Map::new()));
        step.deletes.push("a".to_owned());
        step.put("b".to_owned(), Bytes::from_static(b"2"));
        apply(&mut state, &step);
        assert_eq!(
            state,
            BTreeMap::from([("b".to_owned(), Bytes::from_static(b"2"))])
        );
    }

    #[test]
    fn short_line_folds_whitespace_and_truncates() {
        assert_eq!(short_line("  ls\n  -la \t/tmp "), "ls -la /tmp");
        assert_eq!(short_line(&"é".repeat(200)).chars().count(), 80);
    }
}
