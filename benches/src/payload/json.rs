//! Agent-transcript-like JSON lines: user and assistant messages, tool calls and tool output
//! built from a skewed vocabulary of prose and code words, so that they compress about as well
//! as real session transcripts (~4x with zstd).

use super::STAMP_LEN;
use super::rng::SplitMix64;

/// Longest text field in a line. Every line carries a stamp slot, so this bounds the distance
/// between stamps (see [`super::STAMP_EVERY`]).
const MAX_TEXT: u64 = 800;

/// Shortest text field worth starting a line for; a smaller remainder is padded with spaces.
const MIN_TEXT: usize = 8;

/// One line in this many repeats earlier text.
const RECALL_ONE_IN: u64 = 3;

/// Words of the transcripts, most frequent first: [`pick`] favours the front of the list the
/// way word frequencies in prose and code do.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "to", "a", "of", "and", "in", "is", "it", "that", "for", "this", "I", "fn", "let", "you",
    "on", "with", "be", "we", "not", "file", "test", "error", "if", "return", "self", "can", "as",
    "use", "from", "will", "have", "are", "at", "or", "by", "an", "mut", "pub", "should",
    "function", "value", "now", "run", "check", "struct", "impl", "new", "state", "session",
    "checkpoint", "cargo", "build", "line", "src", "so", "code", "need", "let's", "Result", "Ok",
    "Err", "String", "Vec", "None", "Some", "match", "async", "await", "type", "config", "server",
    "client", "request", "response", "update", "change", "fix", "add", "remove", "method", "module",
    "crate", "path", "key", "bytes", "data", "read", "write", "output", "input", "found", "failed",
    "passed", "warning", "expected", "actual", "because", "then", "also", "which", "when", "there",
    "into", "one", "all", "but", "does", "what", "look", "see", "first", "next", "make", "sure",
    "handle", "case", "empty", "length", "index", "loop", "call", "tests", "running", "finished",
    "compiling", "unused", "variable", "import", "const", "trait", "where", "clone", "iter", "map",
    "collect", "unwrap", "expect", "len", "push", "insert", "get", "set", "true", "false", "u64",
    "usize", "str", "&str", "Option", "Box", "Arc", "tokio", "spawn", "main", "mod", "tests.rs",
    "lib.rs", "main.rs", "Cargo.toml", "README.md", "assert_eq!", "println!", "format!", "{", "}",
    "(", ")", "=>", "->", "::", "//", "=", "==", ";", "0", "1", "2", "let me", "I'll", "looks",
    "good", "here", "is the", "updated", "version", "done", "great", "thanks", "please", "can you",
    "why", "the test", "the error", "this function", "line 42", "src/lib.rs", "src/main.rs",
    "database", "query", "table", "column", "index", "migration", "schema", "timeout", "retry",
    "connection", "pool", "stream", "chunk", "manifest", "hash", "branch", "merge", "diff",
    "parent", "head", "commit", "rollback", "transaction", "latency", "throughput", "benchmark",
    "profile", "memory", "allocation", "buffer", "capacity", "limit", "size",
];

/// The lines' kinds: (prefix up to the text, suffix after it, whether the text reads like
/// code output). Every prefix starts with the stamp slot `{"id":"` + [`STAMP_LEN`] characters.
const KINDS: &[(&str, &str, bool)] = &[
    (r#"","type":"message","role":"user","text":""#, "\"}", false),
    (
        r#"","type":"message","role":"assistant","model":"agent-large","text":""#,
        "\"}",
        false,
    ),
    (
        r#"","type":"tool_use","role":"assistant","tool":"bash","input":{"command":""#,
        "\"}}",
        true,
    ),
    (
        r#"","type":"tool_result","role":"tool","tool":"bash","is_error":false,"output":""#,
        "\"}",
        true,
    ),
];

/// A transcript of exactly `len` bytes and the offsets of its stamp slots (each
/// [`STAMP_LEN`] bytes, or fewer at the very end of a tiny value).
pub(crate) fn transcript(len: usize, seed: u64) -> (Vec<u8>, Vec<usize>) {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(len);
    let mut stamps = Vec::new();
    let mut seq = 0u64;
    let mut said = String::new();
    while out.len() < len {
        let remaining = len - out.len();
        let (middle, suffix, code) = KINDS[rng.below(KINDS.len() as u64) as usize];
        let head = format!("{{\"seq\":{seq},\"id\":\"");
        let overhead = head.len() + STAMP_LEN + middle.len() + suffix.len() + 1;
        if remaining < overhead + MIN_TEXT {
            pad(&mut out, &mut stamps, remaining);
            break;
        }
        let wanted = 40 + rng.below(MAX_TEXT - 40) as usize;
        let text = recall_or_write(&mut rng, &mut said, wanted.min(remaining - overhead), code);
        out.extend_from_slice(head.as_bytes());
        stamps.push(out.len());
        out.extend_from_slice(&[b'0'; STAMP_LEN]);
        out.extend_from_slice(middle.as_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(suffix.as_bytes());
        out.push(b'\n');
        seq += 1;
    }
    (out, stamps)
}

/// Ends a transcript with `n` bytes of blank line, stamped at its start so that even a value
/// too small for one JSON line differs between requests.
fn pad(out: &mut Vec<u8>, stamps: &mut Vec<usize>, n: usize) {
    stamps.push(out.len());
    out.resize(out.len() + n, b' ');
    if let Some(last) = out.last_mut() {
        *last = b'\n';
    }
}

/// Text for the next line: one time in [`RECALL_ONE_IN`], a passage of what was said before
/// (agents quote files they read, re-run commands, repeat plans), otherwise new text.
fn recall_or_write(rng: &mut SplitMix64, said: &mut String, len: usize, code: bool) -> String {
    if said.len() > len && rng.below(RECALL_ONE_IN) == 0 {
        let start = rng.below((said.len() - len) as u64) as usize;
        let mut text = said[start..start + len].to_owned();
        drop_trailing_backslash(&mut text);
        return text;
    }
    let text = text(rng, len, code);
    said.push_str(&text);
    text
}

/// Text of exactly `len` ASCII bytes, safe inside a JSON string: no quotes, no backslash other
/// than the `\n` escapes of code-like text.
fn text(rng: &mut SplitMix64, len: usize, code: bool) -> String {
    let mut out = String::with_capacity(len + 32);
    while out.len() < len {
        match rng.below(80) {
            0 => out.push_str(&format!("{:08x}", rng.next_u64() as u32)),
            1 | 2 => out.push_str(&rng.below(5000).to_string()),
            _ => out.push_str(pick(rng)),
        }
        let separator = match rng.below(16) {
            0 | 1 if code => "\\n    ",
            2 => ". ",
            3 => ", ",
            _ => " ",
        };
        out.push_str(separator);
    }
    out.truncate(len);
    drop_trailing_backslash(&mut out);
    out
}

/// A cut through a `\n` escape would leave a lone backslash escaping the closing quote.
fn drop_trailing_backslash(text: &mut String) {
    if text.ends_with('\\') {
        text.pop();
        text.push(' ');
    }
}

/// A word, skewed towards the front of [`WORDS`].
fn pick(rng: &mut SplitMix64) -> &'static str {
    let skewed = rng.unit().powf(3.0);
    WORDS[(skewed * WORDS.len() as f64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_is_json_lines_of_the_exact_length() {
        for len in [0, 1, 30, 100, 777, 10_000, 65_537] {
            let (bytes, stamps) = transcript(len, 3);
            assert_eq!(bytes.len(), len);
            let text = std::str::from_utf8(&bytes).unwrap();
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
                assert!(value["id"].is_string());
            }
            assert!(len == 0 || stamps[0] < len);
        }
    }

    #[test]
    fn stamps_point_at_the_id_slots_and_are_close_together() {
        let (bytes, stamps) = transcript(50_000, 9);
        for pair in stamps.windows(2) {
            assert!(pair[1] - pair[0] <= 1024, "{pair:?}");
        }
        let first = stamps[0];
        assert_eq!(&bytes[first..first + STAMP_LEN], &[b'0'; STAMP_LEN]);
        assert_eq!(&bytes[first - 7..first], b",\"id\":\"");
    }
}
