//! What the workers record while a bench runs: latencies of successful calls in an HDR
//! histogram (microseconds), counts per status code, the first distinct errors, payload bytes
//! and the window in which the measured calls ran. Each worker keeps its own; they are merged
//! once at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// How many distinct (code, message) pairs are kept; later distinct errors are only counted
/// in the status codes.
pub(crate) const MAX_DISTINCT_ERRORS: usize = 10;

/// Largest latency the histogram tracks: one hour, in microseconds. Longer calls are clamped.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Three significant digits: values are exact below 2.048 ms and within 0.1 % above.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The status code name of a successful call.
pub(crate) const OK: &str = "OK";

/// An error message and how many calls ended with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ErrorCount {
    /// The gRPC status code name, e.g. `DeadlineExceeded`.
    pub(crate) code: String,
    /// The error with its causes.
    pub(crate) message: String,
    /// How many measured calls failed this way.
    pub(crate) count: u64,
}

/// When a call started and ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    /// When the call was handed to the client, after its payload was built.
    pub(crate) start: Instant,
    /// When the call returned or timed out.
    pub(crate) end: Instant,
}

/// One worker's (or, merged, the whole run's) record of measured calls.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// Latencies of successful calls, in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Calls per status code name (`OK` for successes).
    pub(crate) codes: BTreeMap<String, u64>,
    /// The first [`MAX_DISTINCT_ERRORS`] distinct errors, in order of first appearance.
    pub(crate) errors: Vec<ErrorCount>,
    /// Payload bytes moved by successful calls.
    pub(crate) bytes: u64,
    /// Calls recorded, successful or not.
    pub(crate) count: u64,
    first_start: Option<Instant>,
    last_end: Option<Instant>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty record.
    pub(crate) fn new() -> Self {
        let latency = Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
            .expect("histogram bounds are valid");
        Recorder {
            latency,
            codes: BTreeMap::new(),
            errors: Vec::new(),
            bytes: 0,
            count: 0,
            first_start: None,
            last_end: None,
        }
    }

    /// Records a successful call that moved `bytes` of payload.
    pub(crate) fn record_ok(&mut self, span: Span, bytes: u64) {
        let micros = span.end.saturating_duration_since(span.start).as_micros();
        self.latency
            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
        self.bytes += bytes;
        self.count_call(span, OK);
    }

    /// Records a failed call. Ids in the message are masked so that errors differing only
    /// in the checkpoint they name count as one.
    pub(crate) fn record_error(&mut self, span: Span, code: &str, message: &str) {
        self.count_call(span, code);
        self.add_error(code, &mask_uuids(message), 1);
    }

    fn count_call(&mut self, span: Span, code: &str) {
        self.count += 1;
        *self.codes.entry(code.to_owned()).or_default() += 1;
        self.first_start = Some(self.first_start.map_or(span.start, |t| t.min(span.start)));
        self.last_end = Some(self.last_end.map_or(span.end, |t| t.max(span.end)));
    }

    fn add_error(&mut self, code: &str, message: &str, count: u64) {
        let same = |e: &ErrorCount| e.code == code && e.message == message;
        if let Some(known) = self.errors.iter_mut().find(|e| same(e)) {
            known.count += count;
        } else if self.errors.len() < MAX_DISTINCT_ERRORS {
            self.errors.push(ErrorCount {
                code: code.to_owned(),
                message: message.to_owned(),
                count,
            });
        }
    }

    /// Adds another record to this one.
    pub(crate) fn merge(&mut self, other: Recorder) {
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
        for error in other.errors {
            self.add_error(&error.code, &error.message, error.count);
        }
        self.bytes += other.bytes;
        self.count += other.count;
        self.first_start = [self.first_start, other.first_start]
            .into_iter()
            .flatten()
            .min();
        self.last_end = [self.last_end, other.last_end].into_iter().flatten().max();
    }

    /// From the start of the first measured call to the end of the last; zero when none ran.
    pub(crate) fn elapsed(&self) -> Duration {
        match (self.first_start, self.last_end) {
            (Some(start), Some(end)) => end.saturating_duration_since(start),
            _ => Duration::ZERO,
        }
    }
}

/// Replaces every UUID in canonical text form (8-4-4-4-12 hex digits) by `<id>`.
fn mask_uuids(message: &str) -> String {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let is_uuid = |candidate: &[u8]| {
        let mut at = 0;
        GROUPS.iter().enumerate().all(|(i, &len)| {
            let group = &candidate[at..at + len];
            let dash = i == GROUPS.len() - 1 || candidate[at + len] == b'-';
            at += len + 1;
            dash && group.iter().all(u8::is_ascii_hexdigit)
        })
    };
    let bytes = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes.len() - i >= LEN && is_uuid(&bytes[i..i + LEN]) {
            out.push_str("<id>");
            i += LEN;
        } else {
            let c = message[i..]
                .chars()
                .next()
                .expect("i is on a char boundary");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: Instant, from_ms: u64, to_ms: u64) -> Span {
        Span {
            start: start + Duration::from_millis(from_ms),
            end: start + Duration::from_millis(to_ms),
        }
    }

    #[test]
    fn merge_adds_counts_and_widens_the_window() {
        let t0 = Instant::now();
        let mut a = Recorder::new();
        a.record_ok(span(t0, 10, 12), 100);
        a.record_error(span(t0, 12, 40), "Aborted", "moved");
        let mut b = Recorder::new();
        b.record_ok(span(t0, 0, 5), 50);
        b.record_error(span(t0, 5, 50), "Aborted", "moved");
        b.record_error(span(t0, 5, 6), "NotFound", "gone");

        a.merge(b);

        assert_eq!(a.count, 5);
        assert_eq!(a.bytes, 150);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.codes["OK"], 2);
        assert_eq!(a.codes["Aborted"], 2);
        assert_eq!(a.elapsed(), Duration::from_millis(50));
        assert_eq!(a.errors[0].count, 2);
        assert_eq!(a.errors[1].message, "gone");
    }

    #[test]
    fn errors_naming_different_checkpoints_count_as_one() {
        let t0 = Instant::now();
        let mut r = Recorder::new();
        let moved = |id: &str| format!("aborted: branch main has moved: its head is {id}; retry");
        r.record_error(
            span(t0, 0, 1),
            "Aborted",
            &moved("01a23c6c-4936-775e-bb01-6794ca96a058"),
        );
        r.record_error(
            span(t0, 0, 1),
            "Aborted",
            &moved("01A23C6C-4962-710C-8C2E-64DA05681B3A"),
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].message, moved("<id>"));
        assert_eq!(r.errors[0].count, 2);
    }

    #[test]
    fn masking_leaves_other_text_alone() {
        assert_eq!(
            mask_uuids("not found: checkpoint x"),
            "not found: checkpoint x"
        );
        assert_eq!(
            mask_uuids("é 0193aaaa-0000-7000-8000-00000000000"),
            "é 0193aaaa-0000-7000-8000-00000000000"
        );
        assert_eq!(mask_uuids("0193aaaa-0000-7000-8000-000000000001é"), "<id>é");
    }

    #[test]
    fn only_the_first_distinct_errors_are_kept() {
        let t0 = Instant::now();
        let mut r = Recorder::new();
        for i in 0..MAX_DISTINCT_ERRORS + 5 {
            r.record_error(span(t0, 0, 1), "Internal", &format!("error {i}"));
        }
        assert_eq!(r.errors.len(), MAX_DISTINCT_ERRORS);
        assert_eq!(r.codes["Internal"], MAX_DISTINCT_ERRORS as u64 + 5);
        assert_eq!(r.errors[0].message, "error 0");
    }
}
