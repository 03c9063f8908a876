//! Stores a JSON document as a state, one entry per leaf, so that saving a slightly changed
//! document only sends the leaves that changed. Used by `ckpt save --json` and by library
//! callers that keep their agent state as JSON.
//!
//! The layout, which [`unflatten`] reverses exactly:
//!
//! - A non-empty object or array is not stored itself; its members are, under its key.
//! - Everything else (strings, numbers, booleans, null, and empty objects and arrays, whose JSON
//!   text `{}` / `[]` marks them) is one entry whose value is its JSON text.
//! - A key is the path from the root, segments joined by `/`. An array element's segment is its
//!   index in decimal (`messages/0/role`). An object member's segment is its name with `~`
//!   written `~0` and `/` written `~1` (as in JSON Pointer); a name that is empty is written
//!   `~e`, and a name made only of ASCII digits gets the prefix `~d` so it cannot pass for an
//!   array index.
//! - A document that is not a non-empty container has no path: it is stored under the key `~`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::State;

/// The key of a document that is a single leaf.
pub const ROOT_KEY: &str = "~";

/// Why a state is not the flattened form of a JSON document.
#[derive(thiserror::Error, Debug)]
pub enum UnflattenError {
    /// The state has no entries.
    #[error("the state is empty")]
    Empty,
    /// A key is not a path this module writes.
    #[error("key {key:?} is not a JSON path: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value is not JSON text.
    #[error("value of key {key:?} is not JSON")]
    InvalidValue {
        /// The offending key.
        key: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A key conflicts with another: a leaf where a container is, or array indices mixed with
    /// member names.
    #[error("key {key:?} conflicts with another key")]
    Conflict {
        /// The offending key.
        key: String,
    },
    /// An array misses an index below its largest one.
    #[error("array {path:?} has no element {index}")]
    MissingIndex {
        /// The array's key prefix.
        path: String,
        /// The first missing index.
        index: usize,
    },
}

/// Flattens a JSON document into a state (see the module docs for the layout).
pub fn flatten(doc: &Value) -> State {
    let mut state = State::new();
    if is_leaf(doc) {
        state.insert(ROOT_KEY.to_owned(), leaf_bytes(doc));
        return state;
    }
    let mut path = String::new();
    flatten_into(doc, &mut path, &mut state);
    state
}

/// Rebuilds the JSON document that [`flatten`] turned into `state`.
pub fn unflatten(state: &State) -> Result<Value, UnflattenError> {
    if let Some(bytes) = state.get(ROOT_KEY) {
        if state.len() > 1 {
            return Err(UnflattenError::Conflict {
                key: ROOT_KEY.to_owned(),
            });
        }
        return parse_leaf(ROOT_KEY, bytes);
    }
    if state.is_empty() {
        return Err(UnflattenError::Empty);
    }

    let mut root = Node::Container(BTreeMap::new());
    for (key, bytes) in state {
        let segments = parse_key(key)?;
        let value = parse_leaf(key, bytes)?;
        insert(&mut root, &segments, value, key)?;
    }
    root.into_value(String::new())
}

fn is_leaf(value: &Value) -> bool {
    match value {
        Value::Object(members) => members.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => true,
    }
}

fn leaf_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("a JSON value always serializes"))
}

/// Adds the entries of the non-empty container `doc`, whose key prefix is `path`.
fn flatten_into(doc: &Value, path: &mut String, state: &mut State) {
    let children: Box<dyn Iterator<Item = (String, &Value)>> = match doc {
        Value::Object(members) => Box::new(
            members
                .iter()
                .map(|(name, value)| (escape_member(name), value)),
        ),
        Value::Array(items) => Box::new(
            items
                .iter()
                .enumerate()
                .map(|(index, value)| (index.to_string(), value)),
        ),
        _ => unreachable!("flatten_into is only called on containers"),
    };
    for (segment, value) in children {
        let parent_len = path.len();
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&segment);
        if is_leaf(value) {
            state.insert(path.clone(), leaf_bytes(value));
        } else {
            flatten_into(value, path, state);
        }
        path.truncate(parent_len);
    }
}

fn escape_member(name: &str) -> String {
    if name.is_empty() {
        return "~e".to_owned();
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return format!("~d{name}");
    }
    name.replace('~', "~0").replace('/', "~1")
}

/// One step of a key's path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Index(usize),
    Member(String),
}

fn parse_key(key: &str) -> Result<Vec<Segment>, UnflattenError> {
    key.split('/')
        .map(|segment| parse_segment(key, segment))
        .collect()
}

fn parse_segment(key: &str, segment: &str) -> Result<Segment, UnflattenError> {
    let invalid = |reason| UnflattenError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if segment.is_empty() {
        return Err(invalid("empty segment"));
    }
    if segment == "~e" {
        return Ok(Segment::Member(String::new()));
    }
    if let Some(digits) = segment.strip_prefix("~d") {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("`~d` must be followed by digits only"));
        }
        return Ok(Segment::Member(digits.to_owned()));
    }
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        if segment.len() > 1 && segment.starts_with('0') {
            return Err(invalid("array index with a leading zero"));
        }
        let index = segment
            .parse()
            .map_err(|_| invalid("array index out of range"))?;
        return Ok(Segment::Index(index));
    }
    unescape_member(segment)
        .map(Segment::Member)
        .ok_or_else(|| invalid("`~` must be followed by 0 or 1"))
}

fn unescape_member(segment: &str) -> Option<String> {
    let mut name = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            name.push(c);
            continue;
        }
        match chars.next()? {
            '0' => name.push('~'),
            '1' => name.push('/'),
            _ => return None,
        }
    }
    Some(name)
}

fn parse_leaf(key: &str, bytes: &[u8]) -> Result<Value, UnflattenError> {
    serde_json::from_slice(bytes).map_err(|source| UnflattenError::InvalidValue {
        key: key.to_owned(),
        source,
    })
}

/// The document being rebuilt. A container's children are all indices (an array) or all
/// member names (an object); `insert` keeps them from mixing.
enum Node {
    Leaf(Value),
    Container(BTreeMap<Segment, Node>),
}

fn insert(
    node: &mut Node,
    segments: &[Segment],
    value: Value,
    key: &str,
) -> Result<(), UnflattenError> {
    let conflict = || UnflattenError::Conflict {
        key: key.to_owned(),
    };
    let Node::Container(children) = node else {
        return Err(conflict());
    };
    let (first, rest) = segments.split_first().expect("split yields a segment");
    let is_index = |segment: &Segment| matches!(segment, Segment::Index(_));
    if let Some(sibling) = children.keys().next()
        && is_index(sibling) != is_index(first)
    {
        return Err(conflict());
    }

    if rest.is_empty() {
        if children.insert(first.clone(), Node::Leaf(value)).is_some() {
            return Err(conflict());
        }
        return Ok(());
    }
    let child = children
        .entry(first.clone())
        .or_insert_with(|| Node::Container(BTreeMap::new()));
    insert(child, rest, value, key)
}

impl Node {
    fn into_value(self, path: String) -> Result<Value, UnflattenError> {
        let children = match self {
            Node::Leaf(value) => return Ok(value),
            Node::Container(children) => children,
        };
        let is_array = matches!(children.keys().next(), Some(Segment::Index(_)));
        let child_path = |segment: &str| {
            if path.is_empty() {
                segment.to_owned()
            } else {
                format!("{path}/{segment}")
            }
        };

        if is_array {
            let mut items = Vec::with_capacity(children.len());
            for (expected, (segment, child)) in children.into_iter().enumerate() {
                let Segment::Index(index) = segment else {
                    unreachable!("insert keeps containers homogeneous")
                };
                if index != expected {
                    return Err(UnflattenError::MissingIndex {
                        path,
                        index: expected,
                    });
                }
                items.push(child.into_value(child_path(&index.to_string()))?);
            }
            return Ok(Value::Array(items));
        }

        let mut members = serde_json::Map::new();
        for (segment, child) in children {
            let Segment::Member(name) = segment else {
                unreachable!("insert keeps containers homogeneous")
            };
            let value = child.into_value(child_path(&escape_member(&name)))?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn keys(state: &State) -> Vec<&str> {
        state.keys().map(String::as_str).collect()
    }

    #[test]
    fn flatten_writes_one_entry_per_leaf() {
        let doc = json!({
            "model": "m1",
            "messages": [{"role": "user", "text": "hi"}, {"role": "agent"}],
            "a/b": {"~x": 1},
            "": null,
            "42": true,
            "empty": {},
            "none": [],
        });

        let state = flatten(&doc);

        assert_eq!(
            keys(&state),
            [
                "a~1b/~0x",
                "empty",
                "messages/0/role",
                "messages/0/text",
                "messages/1/role",
                "model",
                "none",
                "~d42",
                "~e",
            ]
        );
        assert_eq!(state["model"], Bytes::from_static(br#""m1""#));
        assert_eq!(state["empty"], Bytes::from_static(b"{}"));
        assert_eq!(state["none"], Bytes::from_static(b"[]"));
        assert_eq!(unflatten(&state).unwrap(), doc);
    }

    #[test]
    fn scalar_and_empty_documents_use_the_root_key() {
        for doc in [json!(1.5), json!("x"), json!(null), json!({}), json!([])] {
            let state = flatten(&doc);
            assert_eq!(keys(&state), [ROOT_KEY]);
            assert_eq!(unflatten(&state).unwrap(), doc);
        }
    }

    #[test]
    fn changing_one_leaf_changes_one_entry() {
        let before = flatten(&json!({"a": [1, 2, 3], "b": {"c": "x"}}));
        let after = flatten(&json!({"a": [1, 2, 3], "b": {"c": "y"}}));
        assert_eq!(crate::diff(&before, &after).len(), 1);
    }

    fn state(entries: &[(&str, &str)]) -> State {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    #[test]
    fn unflatten_rejects_states_flatten_cannot_write() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "Empty"),
            (&[("a", "1"), ("a/b", "2")], "Conflict"),
            (&[("a/0", "1"), ("a/b", "2")], "Conflict"),
            (&[("~", "1"), ("a", "2")], "Conflict"),
            (&[("a/0", "1"), ("a/2", "2")], "MissingIndex"),
            (&[("a/01", "1")], "InvalidKey"),
            (&[("a//b", "1")], "InvalidKey"),
            (&[("a~2", "1")], "InvalidKey"),
            (&[("~dx", "1")], "InvalidKey"),
            (&[("a", "not json")], "InvalidValue"),
        ];
        for (entries, variant) in cases {
            let err = unflatten(&state(entries)).unwrap_err();
            assert!(
                format!("{err:?}").starts_with(variant),
                "{entries:?}: expected {variant}, got {err:?}"
            );
        }
    }

    fn arb_member_name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c/~0-9]{0,4}",
            "[0-9]{1,3}",
            Just(String::new()),
            Just("~".to_owned()),
            Just("~e".to_owned()),
            Just("~d1".to_owned()),
            any::<String>(),
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
                prop::collection::btree_map(arb_member_name(), inner, 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn unflatten_inverts_flatten(doc in arb_json()) {
            let state = flatten(&doc);
            prop_assert!(state.keys().all(|key| !key.is_empty()));
            prop_assert_eq!(unflatten(&state).unwrap(), doc);
        }
    }
}
