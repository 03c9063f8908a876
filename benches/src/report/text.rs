//! The human-readable rendering of a [`Report`], laid out like ghz's summary: totals, an ASCII
//! latency histogram, the latency distribution, status codes and errors.

use std::fmt::Write;

use super::Report;

/// Width of the longest histogram bar, in characters.
const BAR_WIDTH: u64 = 40;

/// Renders `report` as text.
pub(crate) fn render(report: &Report) -> String {
    let mut out = String::new();
    summary(&mut out, report);
    histogram(&mut out, report);
    distribution(&mut out, report);
    codes(&mut out, report);
    out
}

fn summary(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\nSummary:");
    let _ = writeln!(out, "  Call:         {}", r.call);
    if let Some(setup) = setup_line(&r.config) {
        let _ = writeln!(out, "  Config:       {setup}");
    }
    let _ = writeln!(out, "  Count:        {}", r.count);
    let _ = writeln!(out, "  Total:        {:.2} s", r.total_seconds);
    if let Some(l) = &r.latency_ms {
        let _ = writeln!(out, "  Slowest:      {:.3} ms", l.max);
        let _ = writeln!(out, "  Fastest:      {:.3} ms", l.min);
        let _ = writeln!(out, "  Average:      {:.3} ms", l.mean);
    }
    let _ = writeln!(out, "  Requests/sec: {:.2}", r.rps);
    let _ = writeln!(out, "  Throughput:   {:.2} MB/s", r.mb_per_s);
}

/// Workers, connections and payload, from the report's config when it has them.
fn setup_line(config: &serde_json::Value) -> Option<String> {
    let field = |name: &str| config.get(name).filter(|v| !v.is_null());
    let mut line = format!(
        "-c {} over {} connection(s)",
        field("concurrency")?,
        field("connections")?
    );
    if let (Some(size), Some(keys), Some(shape)) =
        (field("size_bytes"), field("keys"), field("shape"))
    {
        let shape = shape.as_str().unwrap_or_default();
        line.push_str(&format!("; payload {size} B in {keys} key(s), {shape}"));
    }
    if let Some(rate) = field("rate") {
        line.push_str(&format!("; {rate} calls/s"));
    }
    Some(line)
}

fn histogram(out: &mut String, r: &Report) {
    let Some(top) = r.histogram.iter().map(|b| b.count).max() else {
        return;
    };
    let _ = writeln!(out, "\nResponse time histogram (ms):");
    for bucket in &r.histogram {
        let bar = "#".repeat((bucket.count * BAR_WIDTH).div_ceil(top.max(1)) as usize);
        let _ = writeln!(out, "  {:>10.3} [{:>7}] |{bar}", bucket.le_ms, bucket.count);
    }
}

fn distribution(out: &mut String, r: &Report) {
    let Some(l) = &r.latency_ms else {
        return;
    };
    let _ = writeln!(out, "\nLatency distribution:");
    let rows = [
        ("10", l.p10),
        ("25", l.p25),
        ("50", l.p50),
        ("75", l.p75),
        ("90", l.p90),
        ("95", l.p95),
        ("99", l.p99),
        ("99.9", l.p99_9),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:>4} % in {value:.3} ms");
    }
}

fn codes(out: &mut String, r: &Report) {
    let _ = writeln!(out, "\nStatus code distribution:");
    for (code, n) in &r.status_codes {
        let _ = writeln!(out, "  [{code}] {n:>8} responses");
    }
    if r.errors.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nError distribution (first distinct errors):");
    for error in &r.errors {
        let _ = writeln!(
            out,
            "  [{}] {:>8} {}",
            error.code, error.count, error.message
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stats::{Recorder, Span};

    #[test]
    fn text_shows_totals_bars_percentiles_and_errors() {
        let mut record = Recorder::new();
        let t = Instant::now();
        for us in [100, 200, 200, 300] {
            let span = Span {
                start: t,
                end: t + Duration::from_micros(us),
            };
            record.record_ok(span, 10);
        }
        let span = Span { start: t, end: t };
        record.record_error(span, "DeadlineExceeded", "timed out after 30s");

        let config = serde_json::json!({"concurrency": 4, "connections": 1, "size_bytes": 10,
            "keys": 1, "shape": "json", "rate": null});
        let text = render(&Report::build("create", config, &record));

        assert!(text.contains("Count:        5"), "{text}");
        let setup = "Config:       -c 4 over 1 connection(s); payload 10 B in 1 key(s), json\n";
        assert!(text.contains(setup), "{text}");
        assert!(text.contains("Slowest:      0.300 ms"), "{text}");
        assert!(text.contains(&format!("|{}\n", "#".repeat(40))), "{text}");
        assert!(text.contains("  50 % in 0.200 ms"), "{text}");
        assert!(text.contains("[OK]        4 responses"), "{text}");
        assert!(
            text.contains("[DeadlineExceeded]        1 timed out after 30s"),
            "{text}"
        );
    }
}
