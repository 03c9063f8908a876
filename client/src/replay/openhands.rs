//! OpenHands event lists, agent-SDK (V1) and V0: one step per completed action.
//!
//! An action and the observation answering it (SDK: same `tool_call_id`; V0: the observation's
//! `cause`) make one step, emitted when the observation arrives, so parallel calls complete in
//! the order their results came. Other events make a step of their own; actions left without
//! an observation make one each at the end. Each event is stored under its position in the file.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{ReplayError, Step, file_key, json_bytes, str_field, transcript_key};

/// Builds the steps of an agent-SDK event list.
pub(super) fn sdk_steps(doc: &Value, name: &str) -> Result<Vec<Step>, ReplayError> {
    let events = event_list(doc, name)?;
    let mut steps = Vec::new();
    // Open actions by tool call id, with their positions.
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    for (position, event) in events.iter().enumerate() {
        let call_id = str_field(event, "tool_call_id");
        match str_field(event, "kind") {
            "ActionEvent" if !call_id.is_empty() => {
                open.insert(call_id, position);
            }
            "ObservationEvent" if open.contains_key(call_id) => {
                let action = open.remove(call_id).map(|at| (at, &events[at]));
                steps.push(sdk_step(action, Some((position, event)), name)?);
            }
            "ActionEvent" => steps.push(sdk_step(Some((position, event)), None, name)?),
            _ => steps.push(sdk_step(None, Some((position, event)), name)?),
        }
    }

    let mut unanswered: Vec<usize> = open.into_values().collect();
    unanswered.sort_unstable();
    for position in unanswered {
        steps.push(sdk_step(Some((position, &events[position])), None, name)?);
    }
    Ok(steps)
}

fn sdk_step(
    action: Option<(usize, &Value)>,
    observation: Option<(usize, &Value)>,
    name: &str,
) -> Result<Step, ReplayError> {
    let lead = action
        .or(observation)
        .map(|(_, event)| event)
        .unwrap_or(&Value::Null);
    let tool = str_field(lead, "tool_name");
    let mut step = Step::new(
        &sdk_summary(lead),
        json!({ "role": str_field(lead, "source") }),
    );
    if !tool.is_empty() {
        step.set_meta("tool", Value::from(tool));
    }

    if let Some((position, event)) = action {
        let body = &event["action"];
        if !body.is_object() {
            return Err(ReplayError::malformed(
                name,
                format!("event {position}: no action object"),
            ));
        }
        step.set_meta("action", body["kind"].clone());
        step.put(transcript_key(position), json_bytes(event));
        // A created file's contents are in the action's payload.
        if str_field(body, "command") == "create" {
            let path = str_field(body, "path");
            let text = str_field(body, "file_text");
            if !path.is_empty() {
                step.put(file_key(path), Bytes::copy_from_slice(text.as_bytes()));
            }
        }
    }
    if let Some((position, event)) = observation {
        if let Some(kind) = event["observation"].get("kind") {
            step.set_meta("observation", kind.clone());
        } else if action.is_none() {
            step.set_meta("kind", event["kind"].clone());
        }
        step.put(transcript_key(position), json_bytes(event));
    }
    Ok(step)
}

/// "tool: command" for the message line.
fn sdk_summary(event: &Value) -> String {
    let body = event
        .get("action")
        .or_else(|| event.get("observation"))
        .unwrap_or(event);
    let fields = ["command", "thought", "message", "url", "text", "content"];
    let mut detail = fields
        .iter()
        .map(|f| str_field(body, f))
        .find(|s| !s.is_empty());
    let index = body.get("index").map(|i| format!("index {i}"));
    if detail.is_none() {
        detail = index.as_deref();
    }
    let path = str_field(body, "path");
    let tool = str_field(event, "tool_name");
    let tool = if tool.is_empty() {
        str_field(event, "kind")
    } else {
        tool
    };
    format!("{tool}: {} {path}", detail.unwrap_or_default())
}

/// Builds the steps of a V0 event stream.
pub(super) fn v0_steps(doc: &Value, name: &str) -> Result<Vec<Step>, ReplayError> {
    let events = event_list(doc, name)?;
    let mut steps = Vec::new();
    // Open actions by event id, with their positions.
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for (position, event) in events.iter().enumerate() {
        let cause = event.get("cause").and_then(Value::as_u64);
        if event.get("action").is_some() {
            match event.get("id").and_then(Value::as_u64) {
                Some(id) => {
                    open.insert(id, position);
                }
                None => steps.push(v0_step(Some((position, event)), None)),
            }
        } else if let Some(action) = cause.and_then(|id| open.remove(&id)) {
            steps.push(v0_step(
                Some((action, &events[action])),
                Some((position, event)),
            ));
        } else {
            steps.push(v0_step(None, Some((position, event))));
        }
    }

    let mut unanswered: Vec<usize> = open.into_values().collect();
    unanswered.sort_unstable();
    for position in unanswered {
        steps.push(v0_step(Some((position, &events[position])), None));
    }
    Ok(steps)
}

fn v0_step(action: Option<(usize, &Value)>, observation: Option<(usize, &Value)>) -> Step {
    let lead = action
        .or(observation)
        .map(|(_, event)| event)
        .unwrap_or(&Value::Null);
    let mut step = Step::new(
        &v0_summary(lead),
        json!({ "role": str_field(lead, "source") }),
    );

    if let Some((position, event)) = action {
        step.set_meta("action", event["action"].clone());
        step.put(transcript_key(position), json_bytes(event));
    }
    if let Some((position, event)) = observation {
        let extras = &event["extras"];
        step.set_meta("observation", event["observation"].clone());
        if let Some(state) = extras.get("agent_state") {
            step.set_meta("agent_state", state.clone());
        }
        step.put(transcript_key(position), json_bytes(event));
        // Edit observations carry the file's whole new contents.
        let path = str_field(extras, "path");
        if let (false, Some(content)) = (path.is_empty(), extras["new_content"].as_str()) {
            step.put(file_key(path), Bytes::copy_from_slice(content.as_bytes()));
        }
    }
    step
}

/// The event's own message, or "agent state: running" for state changes.
fn v0_summary(event: &Value) -> String {
    let message = str_field(event, "message");
    if !message.is_empty() {
        return message.to_owned();
    }
    match event["extras"].get("agent_state").and_then(Value::as_str) {
        Some(state) => format!("agent state: {state}"),
        None => str_field(event, "observation").to_owned(),
    }
}

/// The events as a list of objects.
fn event_list<'a>(doc: &'a Value, name: &str) -> Result<&'a [Value], ReplayError> {
    let events = doc
        .as_array()
        .ok_or_else(|| ReplayError::malformed(name, "not an event list"))?;
    if let Some(bad) = events.iter().position(|e| !e.is_object()) {
        return Err(ReplayError::malformed(
            name,
            format!("event {bad} is not an object"),
        ));
    }
    Ok(events)
}
