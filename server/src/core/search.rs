//! Search: what a checkpoint is found by, and the engine's query.

use serde_json::Value;

use super::engine::{Engine, EngineError};
use super::validate;
use crate::catalog::CheckpointRecord;

/// Text gathered per checkpoint beyond this is dropped: search indexes words, not payloads.
const MAX_SEARCH_TEXT: usize = 16 * 1024;

/// The text a checkpoint is found by: its message, the string, number and boolean values of
/// its metadata, and the keys it wrote.
pub(crate) fn document<'a>(
    message: &str,
    metadata: &str,
    keys: impl Iterator<Item = &'a str>,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(message);
    if let Ok(value) = serde_json::from_str::<Value>(metadata) {
        push_values(&value, &mut out);
    }
    for key in keys {
        if out.len() >= MAX_SEARCH_TEXT {
            break;
        }
        out.push(' ');
        out.push_str(key);
    }
    truncate_at_char(&mut out, MAX_SEARCH_TEXT);
    words(&out)
}

/// Lowercase words separated by single spaces: what both catalogs index and match, so that a
/// path like `src/parser.rs` is found by `parser` on PostgreSQL and SQLite alike.
pub(crate) fn words(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn push_values(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push(' ');
            out.push_str(s);
        }
        Value::Number(n) => {
            out.push(' ');
            out.push_str(&n.to_string());
        }
        Value::Bool(b) => out.push_str(if *b { " true" } else { " false" }),
        Value::Array(items) => items.iter().for_each(|v| push_values(v, out)),
        Value::Object(map) => map.values().for_each(|v| push_values(v, out)),
        Value::Null => {}
    }
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl Engine {
    /// Checkpoints matching `query`, in one session or all, best first.
    pub async fn search(
        &self,
        session: Option<&str>,
        query: &str,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<CheckpointRecord>, EngineError> {
        if let Some(session) = session {
            // An unknown session is NOT_FOUND, as for listing, not an empty result.
            self.session(session).await?;
        }
        if query.trim().is_empty() {
            return Err(EngineError::InvalidArgument {
                field: "query".into(),
                reason: "must not be empty".into(),
            });
        }
        validate::message("query", query)?;
        Ok(self
            .catalog
            .search(session, &words(query), query.trim(), offset, limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_holds_message_metadata_values_and_keys() {
        let doc = document(
            "ran tests",
            r#"{"tool":"bash","n":3,"ok":true,"x":null,"l":["a",{"b":"c"}]}"#,
            ["files/main.rs"].into_iter(),
        );
        for word in ["ran tests", "bash", "3", "true", "a", "c", "files main rs"] {
            assert!(doc.contains(word), "{doc:?} lacks {word}");
        }
        assert!(!doc.contains("tool"), "metadata keys are not values");
    }

    #[test]
    fn the_document_is_bounded() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}-ünï")).collect();
        let doc = document("m", "{}", keys.iter().map(String::as_str));
        assert!(doc.len() <= MAX_SEARCH_TEXT);
    }
}
