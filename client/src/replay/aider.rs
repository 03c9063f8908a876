//! Aider Markdown chat history: one step per user turn.
//!
//! The file is cut into messages at session headers (`# aider chat started at ...`) and at the
//! start of each user turn (a run of `#### ` lines); each message is stored byte for byte, so
//! the transcript keys concatenated give back the file. A turn's message runs to the next cut,
//! so it holds the user input, the assistant reply with its SEARCH/REPLACE blocks, and the tool
//! output. Session preambles join the step of the turn after them.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ReplayError, Step, transcript_key};

const SESSION_HEADER: &str = "# aider chat started at ";

/// Builds the steps of one chat history file.
pub(super) fn steps(data: &Bytes, name: &str) -> Result<Vec<Step>, ReplayError> {
    let text = std::str::from_utf8(data)
        .map_err(|err| ReplayError::malformed(name, format!("not UTF-8: {err}")))?;
    if !text
        .lines()
        .any(|l| l.starts_with(SESSION_HEADER) || is_user_line(l))
    {
        return Err(ReplayError::malformed(
            name,
            "no aider session header or user turn",
        ));
    }

    let mut steps: Vec<Step> = Vec::new();
    // Messages waiting for the next turn's step: (transcript key, bytes).
    let mut waiting: Vec<(String, Bytes)> = Vec::new();
    let mut session = Session::default();
    for (index, segment) in segments(text).into_iter().enumerate() {
        let body = &text[segment.clone()];
        let bytes = data.slice(segment);
        waiting.push((transcript_key(index), bytes));
        if let Some(started) = body.strip_prefix(SESSION_HEADER) {
            session.number += 1;
            session.started = started.lines().next().unwrap_or_default().trim().to_owned();
            continue;
        }
        if !body.lines().next().is_some_and(is_user_line) {
            continue;
        }
        let mut step = turn_step(body, &session);
        for (key, value) in waiting.drain(..) {
            step.put(key, value);
        }
        steps.push(step);
    }

    // Sessions after the last turn (or a file with no turn at all).
    if !waiting.is_empty() {
        if steps.is_empty() {
            steps.push(Step::new("aider session", json!({ "role": "system" })));
        }
        if let Some(last) = steps.last_mut() {
            for (key, value) in waiting {
                last.put(key, value);
            }
        }
    }
    Ok(steps)
}

#[derive(Default)]
struct Session {
    /// 1-based; 0 before the first header.
    number: u64,
    started: String,
}

fn turn_step(body: &str, session: &Session) -> Step {
    let input = body
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches('#')
        .trim();
    let mut step = Step::new(input, json!({ "role": "user", "session": session.number }));
    if !session.started.is_empty() {
        step.set_meta("started_at", Value::from(session.started.as_str()));
    }
    if input.starts_with('/') {
        let command = input.split_whitespace().next().unwrap_or_default();
        step.set_meta("command", Value::from(command));
    }

    let edit_blocks = body
        .lines()
        .filter(|l| l.trim_start().starts_with("<<<<<<< SEARCH"))
        .count();
    if edit_blocks > 0 {
        step.set_meta("edit_blocks", Value::from(edit_blocks));
    }
    // `Commit <sha> <message>` gives a ready-made file-state id.
    let commit = body.lines().find_map(|l| l.strip_prefix("> Commit "));
    if let Some(sha) = commit.and_then(|rest| rest.split_whitespace().next()) {
        step.set_meta("commit", Value::from(sha));
    }
    step
}

fn is_user_line(line: &str) -> bool {
    let line = line.trim_end_matches(['\r', '\n']);
    line == "####" || line.starts_with("#### ")
}

/// Byte ranges of the messages: cuts at every session header and at the first line of every
/// run of user lines. The ranges cover the whole text.
fn segments(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut cuts = vec![0];
    let mut offset = 0;
    let mut previous_was_user = false;
    for line in text.split_inclusive('\n') {
        let user = is_user_line(line);
        if line.starts_with(SESSION_HEADER) || (user && !previous_was_user) {
            cuts.push(offset);
        }
        previous_was_user = user;
        offset += line.len();
    }
    cuts.push(text.len());
    cuts.dedup();
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}
