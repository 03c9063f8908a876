//! SWE-agent `.traj` files and mini-swe-agent message lists: one step per agent action.
//!
//! The chat history is split at assistant messages: step `i` adds the `i`-th assistant message
//! and what follows it up to the next one, and the first step also adds the prompt before it.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ReplayError, Step, file_key, json_bytes, str_field, transcript_key};

/// Key overwritten every step with the full model input, for files whose steps carry one.
const MODEL_INPUT_KEY: &str = "model_input";

/// Where the final diff (or a CTF flag, for the CTF demonstrations) is stored.
const SUBMISSION_PATH: &str = "submission.diff";

/// Builds the steps of a SWE-agent `.traj` document.
pub(super) fn steps(doc: &Value, name: &str) -> Result<Vec<Step>, ReplayError> {
    let trajectory = doc["trajectory"]
        .as_array()
        .ok_or_else(|| not_array(name, "trajectory"))?;
    let history = match doc.get("history") {
        None => &[][..],
        Some(history) => history
            .as_array()
            .ok_or_else(|| not_array(name, "history"))?,
    };
    let chunks = split_at_assistant(history, trajectory.len());

    let mut steps = Vec::with_capacity(trajectory.len());
    let mut editor = Editor::default();
    for (index, (traj_step, chunk)) in trajectory.iter().zip(chunks).enumerate() {
        if !traj_step.is_object() {
            return Err(ReplayError::malformed(
                name,
                format!("trajectory[{index}] is not an object"),
            ));
        }
        let action = str_field(traj_step, "action");
        let text = if action.trim().is_empty() {
            str_field(traj_step, "thought")
        } else {
            action
        };
        let tool = action.split_whitespace().next().unwrap_or_default();
        let mut step = Step::new(text, json!({ "role": "assistant", "tool": tool }));

        for (position, message) in chunk {
            step.put(transcript_key(position), json_bytes(message));
        }
        // The trajectory step itself (action, observation, thought, response, state), minus
        // the model input, which gets its own overwritten key.
        let mut record = traj_step.clone();
        let model_input = record.as_object_mut().and_then(|r| r.remove("messages"));
        step.put(format!("trajectory/{index:06}"), json_bytes(&record));
        if let Some(model_input) = model_input {
            step.put(MODEL_INPUT_KEY.to_owned(), json_bytes(&model_input));
        }
        editor.update(&traj_step["state"], &mut step);
        steps.push(step);
    }

    // The final step carries the submission.
    if let Some(last) = steps.last_mut() {
        let info = &doc["info"];
        let submission = str_field(info, "submission");
        if !submission.is_empty() {
            last.put(
                file_key(SUBMISSION_PATH),
                Bytes::copy_from_slice(submission.as_bytes()),
            );
        }
        if let Some(status) = info.get("exit_status") {
            last.set_meta("exit_status", status.clone());
        }
    }
    Ok(steps)
}

/// Builds the steps of a mini-swe-agent trajectory: a message list, or an object holding one
/// under `messages`.
pub(super) fn mini_steps(doc: &Value, name: &str) -> Result<Vec<Step>, ReplayError> {
    let messages = doc
        .as_array()
        .or_else(|| doc["messages"].as_array())
        .ok_or_else(|| not_array(name, "messages"))?;
    if messages.is_empty() {
        return Err(ReplayError::malformed(name, "the message list is empty"));
    }
    if let Some(bad) = messages.iter().position(|m| !m.is_object()) {
        return Err(ReplayError::malformed(
            name,
            format!("message {bad} is not an object"),
        ));
    }
    let actions = messages.iter().filter(|m| is_assistant(m)).count().max(1);

    let mut steps = Vec::with_capacity(actions);
    for chunk in split_at_assistant(messages, actions) {
        let first = chunk.iter().map(|(_, m)| *m).find(|m| is_assistant(m));
        let content = first.map(|m| str_field(m, "content")).unwrap_or_default();
        let command = bash_block(content).unwrap_or(content);
        let mut step = Step::new(command, json!({ "role": "assistant", "tool": "bash" }));
        for (position, message) in chunk {
            step.put(transcript_key(position), json_bytes(message));
        }
        steps.push(step);
    }

    // The last message is the submitted diff when the agent finished.
    let final_output = str_field(&messages[messages.len() - 1], "content");
    let finished = !final_output.starts_with("<returncode>") && final_output.contains("diff --git");
    if let (true, Some(last)) = (finished, steps.last_mut()) {
        let diff = Bytes::copy_from_slice(final_output.as_bytes());
        last.put(file_key(SUBMISSION_PATH), diff);
    }
    Ok(steps)
}

/// Splits messages into `parts` chunks, each starting at an assistant message (the first also
/// takes the prompt before it), keeping each message's position. Chunks past the last assistant
/// message are empty; messages that do not fit go to the last chunk.
fn split_at_assistant(messages: &[Value], parts: usize) -> Vec<Vec<(usize, &Value)>> {
    let mut chunks: Vec<Vec<(usize, &Value)>> = vec![Vec::new(); parts];
    if parts == 0 {
        return chunks;
    }
    let mut current = 0;
    let mut seen_assistant = false;
    for (position, message) in messages.iter().enumerate() {
        if is_assistant(message) {
            if seen_assistant && current + 1 < parts {
                current += 1;
            }
            seen_assistant = true;
        }
        chunks[current].push((position, message));
    }
    chunks
}

fn is_assistant(message: &Value) -> bool {
    str_field(message, "role") == "assistant"
}

/// The command inside the first fenced bash block of a mini-swe-agent action.
fn bash_block(content: &str) -> Option<&str> {
    let start = content.find("```")?;
    let after_fence = &content[start + 3..];
    let body_start = after_fence.find('\n')? + 1;
    let body = &after_fence[body_start..];
    Some(body.find("```").map_or(body, |end| &body[..end]))
}

/// The editor state of the last step, to write only what changed.
#[derive(Default)]
struct Editor {
    open_file: Option<String>,
    working_dir: Option<String>,
}

impl Editor {
    /// Reads `state`: a JSON string (older SWE-agent) or an object. Unreadable state is ignored,
    /// as it is optional.
    fn update(&mut self, state: &Value, step: &mut Step) {
        let parsed;
        let state = match state.as_str() {
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(value) => {
                    parsed = value;
                    &parsed
                }
                Err(_) => return,
            },
            None => state,
        };
        Self::field(&mut self.open_file, state, "open_file", step);
        Self::field(&mut self.working_dir, state, "working_dir", step);
    }

    fn field(last: &mut Option<String>, state: &Value, field: &str, step: &mut Step) {
        let Some(value) = state.get(field).and_then(Value::as_str) else {
            return;
        };
        if last.as_deref() != Some(value) {
            *last = Some(value.to_owned());
            step.put(
                format!("state/{field}"),
                Bytes::copy_from_slice(value.as_bytes()),
            );
        }
    }
}

fn not_array(name: &str, field: &str) -> ReplayError {
    ReplayError::malformed(name, format!("`{field}` is not a list"))
}
