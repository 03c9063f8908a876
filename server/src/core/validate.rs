//! Validation of everything a client names: session ids, branch names, keys, metadata.
//! Each failure names the field so the caller can fix the request.

use uuid::Uuid;

use super::EngineError;

/// Longest session id or branch name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest state key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest metadata object, as JSON text.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest checkpoint message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The branch a write goes to when it names none.
pub const DEFAULT_BRANCH: &str = "main";

/// An INVALID_ARGUMENT naming `field`.
pub(super) fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Session ids and branch names: 1-256 bytes of `A-Z a-z 0-9 . _ - : @ /`.
///
/// Names are stored in their own columns and never joined into one string, so `/` is safe to
/// allow for hierarchical ids (`team/agent/run-7`). Spaces, control characters and non-ASCII
/// are refused so that ids survive shells, URLs and logs unchanged.
pub fn name(field: &str, value: &str) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, the limit is {MAX_NAME_BYTES}", value.len()),
        ));
    }
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/');
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(invalid(
            field,
            format!("contains {bad:?}; allowed are A-Z a-z 0-9 . _ - : @ /"),
        ));
    }
    Ok(())
}

/// Bytes a create's request id may have.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A create's request id, where empty means none.
pub fn request_id(field: &str, value: &str) -> Result<Option<String>, EngineError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_REQUEST_ID_BYTES {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, the limit is {MAX_REQUEST_ID_BYTES}",
                value.len()
            ),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(invalid(
            field,
            format!("contains {bad:?}; allowed are A-Z a-z 0-9 . _ - :"),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// A lease holder's name: 1-256 bytes of printable text.
pub fn holder(field: &str, value: &str) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, the limit is {MAX_NAME_BYTES}", value.len()),
        ));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(
            field,
            format!("contains the control character {bad:?}"),
        ));
    }
    Ok(())
}

/// A branch name, where empty means the default branch.
pub fn branch(field: &str, value: &str) -> Result<String, EngineError> {
    if value.is_empty() {
        return Ok(DEFAULT_BRANCH.to_owned());
    }
    name(field, value)?;
    Ok(value.to_owned())
}

/// State keys: non-empty UTF-8 (guaranteed by protobuf strings) without NUL, at most 4 KiB.
pub fn key(field: &str, value: &str) -> Result<(), EngineError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, the limit is {MAX_KEY_BYTES}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL"));
    }
    Ok(())
}

/// A checkpoint id: a UUID in any of its text forms.
pub fn checkpoint_id(field: &str, value: &str) -> Result<Uuid, EngineError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Uuid::parse_str(value)
        .map_err(|_| invalid(field, format!("{value:?} is not a checkpoint id (a UUID)")))
}

/// An optional checkpoint id, where empty means none.
pub fn optional_checkpoint_id(field: &str, value: &str) -> Result<Option<Uuid>, EngineError> {
    if value.is_empty() {
        Ok(None)
    } else {
        checkpoint_id(field, value).map(Some)
    }
}

/// Metadata: a JSON object of at most 64 KiB. Returns its canonical text.
///
/// NUL characters are refused: Postgres `jsonb` cannot store `\u0000`, and refusing them here
/// keeps every catalog backend identical rather than failing deep inside one of them.
pub fn metadata(field: &str, value: &str) -> Result<String, EngineError> {
    if value.trim().is_empty() {
        return Ok("{}".to_owned());
    }
    if value.len() > MAX_METADATA_BYTES {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, the limit is {MAX_METADATA_BYTES}",
                value.len()
            ),
        ));
    }
    let parsed: serde_json::Value = serde_json::from_str(value)
        .map_err(|e| invalid(field, format!("is not valid JSON: {e}")))?;
    if !parsed.is_object() {
        return Err(invalid(field, "must be a JSON object"));
    }
    if contains_nul(&parsed) {
        return Err(invalid(field, "must not contain NUL characters (\\u0000)"));
    }
    Ok(parsed.to_string())
}

fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v))
        }
        _ => false,
    }
}

/// A listing filter, as the wire carries it: every field optional, each checked here.
#[allow(clippy::too_many_arguments)]
pub fn checkpoint_filter(
    branch: &str,
    tag: &str,
    metadata_contains: &str,
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    created_before: Option<chrono::DateTime<chrono::Utc>>,
    message_contains: &str,
) -> Result<crate::catalog::CheckpointFilter, EngineError> {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if !branch.is_empty() {
        name("branch", branch)?;
    }
    if !tag.is_empty() {
        name("tag", tag)?;
    }
    let metadata = match metadata_contains.trim() {
        "" => None,
        text => {
            let canonical = metadata("metadata_contains", text)?;
            Some(serde_json::from_str(&canonical).expect("canonical JSON parses"))
        }
    };
    if let (Some(a), Some(b)) = (created_after, created_before)
        && a >= b
    {
        return Err(invalid(
            "created_before",
            "must be later than created_after",
        ));
    }
    message("message_contains", message_contains)?;
    Ok(crate::catalog::CheckpointFilter {
        branch: some(branch),
        tag: some(tag),
        metadata,
        created_after,
        created_before,
        message: some(message_contains),
    })
}

/// A checkpoint message: free text of at most 64 KiB.
pub fn message(field: &str, value: &str) -> Result<(), EngineError> {
    if value.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, the limit is {MAX_MESSAGE_BYTES}", value.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: EngineError) -> String {
        match err {
            EngineError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn names_accept_the_documented_alphabet() {
        for ok in [
            "a",
            "session-1",
            "team/agent:run@host_2.x",
            &"x".repeat(256),
        ] {
            name("session_id", ok).unwrap();
        }
    }

    #[test]
    fn names_refuse_empty_long_and_foreign_characters() {
        for bad in [
            "",
            "has space",
            "tab\t",
            "nul\0",
            "ünï",
            &"x".repeat(257),
            "semi;colon",
            "quote'",
        ] {
            assert_eq!(
                field_of(name("session_id", bad).unwrap_err()),
                "session_id",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_refuse_empty_nul_and_oversized() {
        key("k", "files/src/main.rs").unwrap();
        key("k", "ünïcode/κλειδί").unwrap();
        assert!(key("k", "").is_err());
        assert!(key("k", "a\0b").is_err());
        assert!(key("k", &"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn metadata_must_be_an_object_without_nul() {
        assert_eq!(metadata("metadata", "").unwrap(), "{}");
        assert_eq!(
            metadata("metadata", r#"{"b":1,"a":"x"}"#).unwrap(),
            r#"{"a":"x","b":1}"#
        );
        for bad in [
            "[1,2]",
            "3",
            "\"s\"",
            "{",
            r#"{"a":"x\u0000y"}"#,
            r#"{"k\u0000":1}"#,
            r#"{"a":["\u0000"]}"#,
        ] {
            assert_eq!(
                field_of(metadata("metadata", bad).unwrap_err()),
                "metadata",
                "{bad}"
            );
        }
    }

    #[test]
    fn checkpoint_ids_must_be_uuids() {
        assert!(checkpoint_id("parent_id", "nope").is_err());
        assert_eq!(optional_checkpoint_id("parent_id", "").unwrap(), None);
        let id = Uuid::now_v7();
        assert_eq!(checkpoint_id("parent_id", &id.to_string()).unwrap(), id);
    }
}
