//! The report of a run, built from the merged [`Recorder`]: a serde struct whose JSON form is
//! the machine-readable output (schema documented on [`Report`]), and its text rendering.

mod text;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::{ErrorCount, Recorder};

pub(crate) use text::render;

/// Identifies the JSON layout; bumped when a field changes meaning or disappears.
pub(crate) const SCHEMA: &str = "ckpt-bench/run/v1";

/// Number of histogram buckets between the fastest and the slowest call.
const BUCKETS: u64 = 10;

/// The result of one `ckpt-bench run`, as written by `--format json` and `--output`.
///
/// ```text
/// { "schema": "ckpt-bench/run/v1", "call": "create", "config": { ...the options... },
///   "count": 2000, "total_seconds": 1.5, "rps": 1333.3, "bytes": 20000000, "mb_per_s": 13.3,
///   "latency_ms": { "min", "mean", "stddev", "max", "p10", "p25", "p50", "p75", "p90",
///                   "p95", "p99", "p99_9" } | null,
///   "histogram": [ { "le_ms": 0.42, "count": 17 }, ... ],
///   "status_codes": { "OK": 1998, "DeadlineExceeded": 2 },
///   "errors": [ { "code": "DeadlineExceeded", "message": "...", "count": 2 } ] }
/// ```
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// [`SCHEMA`].
    pub(crate) schema: &'static str,
    /// The call measured, as named on the command line.
    pub(crate) call: String,
    /// The effective options of the run.
    pub(crate) config: serde_json::Value,
    /// Measured calls, successful or not (warm-up and setup excluded).
    pub(crate) count: u64,
    /// From the start of the first measured call to the end of the last, in seconds.
    pub(crate) total_seconds: f64,
    /// `count / total_seconds`.
    pub(crate) rps: f64,
    /// Payload bytes moved by successful calls: values sent by creates, values read by loads.
    pub(crate) bytes: u64,
    /// `bytes / total_seconds`, in MB/s (10^6 bytes).
    pub(crate) mb_per_s: f64,
    /// Latency of successful calls; `null` when none succeeded.
    pub(crate) latency_ms: Option<Latency>,
    /// Successful calls by latency: each bucket counts the calls slower than the previous
    /// bucket's bound and at most `le_ms`; the first bound is the fastest call.
    pub(crate) histogram: Vec<Bucket>,
    /// Calls per gRPC status code name; timeouts count as `DeadlineExceeded`.
    pub(crate) status_codes: BTreeMap<String, u64>,
    /// The first distinct errors, in order of first appearance, with their counts.
    pub(crate) errors: Vec<ErrorCount>,
}

/// Latency statistics in milliseconds (microsecond resolution).
#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct Latency {
    /// Fastest call.
    pub(crate) min: f64,
    /// Arithmetic mean.
    pub(crate) mean: f64,
    /// Standard deviation.
    pub(crate) stddev: f64,
    /// Slowest call.
    pub(crate) max: f64,
    /// Percentiles: `pNN` is the latency NN % of the calls did not exceed.
    pub(crate) p10: f64,
    pub(crate) p25: f64,
    pub(crate) p50: f64,
    pub(crate) p75: f64,
    pub(crate) p90: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) p99_9: f64,
}

/// One histogram bucket.
#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct Bucket {
    /// Upper bound, in milliseconds.
    pub(crate) le_ms: f64,
    /// Calls in the bucket.
    pub(crate) count: u64,
}

impl Report {
    /// Builds the report of `call` run with `config` from the merged record.
    pub(crate) fn build(call: &str, config: serde_json::Value, record: &Recorder) -> Report {
        let seconds = record.elapsed().as_secs_f64();
        let per_second = |n: f64| if seconds > 0.0 { n / seconds } else { 0.0 };
        Report {
            schema: SCHEMA,
            call: call.to_owned(),
            config,
            count: record.count,
            total_seconds: seconds,
            rps: per_second(record.count as f64),
            bytes: record.bytes,
            mb_per_s: per_second(record.bytes as f64 / 1e6),
            latency_ms: latency(&record.latency),
            histogram: buckets(&record.latency),
            status_codes: record.codes.clone(),
            errors: record.errors.clone(),
        }
    }
}

fn ms(micros: f64) -> f64 {
    micros / 1000.0
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let q = |quantile: f64| ms(h.value_at_quantile(quantile) as f64);
    Some(Latency {
        // Highest equivalent, like the percentiles and the histogram's bounds.
        min: ms(h.highest_equivalent(h.min()) as f64),
        mean: ms(h.mean()),
        stddev: ms(h.stdev()),
        max: ms(h.max() as f64),
        p10: q(0.10),
        p25: q(0.25),
        p50: q(0.50),
        p75: q(0.75),
        p90: q(0.90),
        p95: q(0.95),
        p99: q(0.99),
        p99_9: q(0.999),
    })
}

/// [`BUCKETS`] equal-width buckets from the fastest to the slowest value, plus one holding
/// only the fastest, like ghz. Fewer when the spread is under [`BUCKETS`] microseconds.
fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    let values: Vec<(u64, u64)> = h
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    let (Some(&(lo, _)), Some(&(hi, _))) = (values.first(), values.last()) else {
        return Vec::new();
    };
    let mut bounds: Vec<u64> = (0..=BUCKETS)
        .map(|i| lo + (hi - lo) * i / BUCKETS)
        .collect();
    bounds.dedup();

    let mut counts = vec![0u64; bounds.len()];
    for (value, count) in values {
        let bucket = bounds.partition_point(|&bound| bound < value);
        counts[bucket] += count;
    }
    bounds
        .into_iter()
        .zip(counts)
        .map(|(bound, count)| Bucket {
            le_ms: ms(bound as f64),
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stats::Span;

    /// A record of successful calls of the given latencies in microseconds, run back to back.
    fn record(micros: &[u64], bytes_each: u64) -> Recorder {
        let mut r = Recorder::new();
        let mut t = Instant::now();
        for &us in micros {
            let end = t + Duration::from_micros(us);
            r.record_ok(Span { start: t, end }, bytes_each);
            t = end;
        }
        r
    }

    #[test]
    fn percentiles_of_one_to_a_thousand_microseconds_are_exact() {
        let micros: Vec<u64> = (1..=1000).collect();
        let report = Report::build("get", serde_json::json!({}), &record(&micros, 0));

        let l = report.latency_ms.unwrap();
        assert_eq!((l.min, l.max), (0.001, 1.0));
        assert_eq!(l.mean, 0.5005);
        assert_eq!((l.p10, l.p25, l.p50, l.p75), (0.1, 0.25, 0.5, 0.75));
        assert_eq!((l.p90, l.p95, l.p99, l.p99_9), (0.9, 0.95, 0.99, 0.999));
        assert_eq!(report.count, 1000);
        assert_eq!(report.status_codes["OK"], 1000);
    }

    #[test]
    fn rates_divide_by_the_measured_window() {
        // 4 calls of 250 ms back to back: one second, 1 MB each.
        let report = Report::build(
            "create",
            serde_json::json!({}),
            &record(&[250_000; 4], 1_000_000),
        );
        assert_eq!(report.total_seconds, 1.0);
        assert_eq!(report.rps, 4.0);
        assert_eq!(report.mb_per_s, 4.0);
    }

    #[test]
    fn histogram_splits_fastest_to_slowest_in_ten() {
        // 100 µs to 1100 µs: bounds every 100 µs.
        let micros = [100, 100, 150, 200, 201, 550, 1000, 1100, 1100, 1100];
        let report = Report::build("load", serde_json::json!({}), &record(&micros, 0));

        let got: Vec<(f64, u64)> = report
            .histogram
            .iter()
            .map(|b| (b.le_ms, b.count))
            .collect();
        assert_eq!(
            got,
            [
                (0.1, 2),
                (0.2, 2),
                (0.3, 1),
                (0.4, 0),
                (0.5, 0),
                (0.6, 1),
                (0.7, 0),
                (0.8, 0),
                (0.9, 0),
                (1.0, 1),
                (1.1, 3),
            ]
        );
    }

    #[test]
    fn histogram_of_equal_values_has_one_bucket() {
        let report = Report::build("get", serde_json::json!({}), &record(&[500; 3], 0));
        assert_eq!(
            report.histogram,
            [Bucket {
                le_ms: 0.5,
                count: 3
            }]
        );
    }

    #[test]
    fn empty_record_has_no_latency_and_zero_rates() {
        let report = Report::build("get", serde_json::json!({}), &Recorder::new());
        assert!(report.latency_ms.is_none());
        assert!(report.histogram.is_empty());
        assert_eq!((report.rps, report.mb_per_s), (0.0, 0.0));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert!(json["latency_ms"].is_null());
    }
}
