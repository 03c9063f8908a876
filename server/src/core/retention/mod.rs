//! Retention rules for checkpoints: which checkpoints of one (session, branch) group to keep.
//! Pure logic with no I/O and no clock, so collection and dry runs share one tested answer.
//! [`Policy`] (in `policy.rs`) says what to keep; [`evaluate`] applies it to a group.

mod policy;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use uuid::Uuid;

pub use self::policy::{Policy, PolicyError};

/// Something that pins a checkpoint: pinned checkpoints are never dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// The checkpoint is the head of this branch.
    Head(String),
    /// The checkpoint carries this tag.
    Tag(String),
}

/// One checkpoint of a group, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: Uuid,
    /// Position in the group's history; breaks ties on `created_at` (higher is newer).
    pub seq: u64,
    pub created_at: DateTime<Utc>,
    pub pins: Vec<Pin>,
}

/// Why a checkpoint is kept. Bucket labels are UTC: `2026-12-03T14`, `2026-12-03`,
/// `2026-W49` (ISO week year and week), `2026-12`, `2026`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Head of the named branch.
    Head(String),
    /// Carries the named tag.
    Tag(String),
    /// The policy is empty, so everything is kept.
    NoPolicy,
    /// Among the `of` newest; `rank` 1 is the newest.
    Last {
        rank: u32,
        of: u32,
    },
    /// Within this window of the group's newest checkpoint.
    Within(Duration),
    Hourly(String),
    Daily(String),
    Weekly(String),
    Monthly(String),
    Yearly(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Head(branch) => write!(f, "head of branch {branch}"),
            Reason::Tag(tag) => write!(f, "tag {tag}"),
            Reason::NoPolicy => f.write_str("no retention policy"),
            Reason::Last { rank, of } => write!(f, "among the last {of} ({})", ordinal(*rank)),
            Reason::Within(window) => {
                let window = humantime::format_duration(*window);
                write!(f, "within {window} of the newest")
            }
            Reason::Hourly(hour) => write!(f, "newest of hour {hour}"),
            Reason::Daily(day) => write!(f, "newest of day {day}"),
            Reason::Weekly(week) => write!(f, "newest of week {week}"),
            Reason::Monthly(month) => write!(f, "newest of month {month}"),
            Reason::Yearly(year) => write!(f, "newest of year {year}"),
        }
    }
}

fn ordinal(n: u32) -> String {
    // 11th, 12th and 13th break the last-digit rule.
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// The verdict on one checkpoint. `keep` is true exactly when `reasons` is non-empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: Uuid,
    pub keep: bool,
    /// Every reason that keeps the checkpoint, pins first, then rules in canonical order.
    pub reasons: Vec<Reason>,
}

/// Why [`evaluate`] refused to decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "the retention policy would drop every one of the group's {checkpoints} checkpoints, \
         so it is refused"
    )]
    WouldDropAll { checkpoints: usize },
}

/// Decides which checkpoints of one group to keep.
///
/// The input may be in any order; the output has one decision per candidate, newest first
/// (by `created_at`, then `seq`, then `id`, all descending). The result depends only on the
/// input: time windows are measured from the group's newest checkpoint, never from the clock.
///
/// For a non-empty policy the result is idempotent: evaluating the kept checkpoints again
/// keeps all of them, with the same reasons.
pub fn evaluate(policy: &Policy, group: &[Candidate]) -> Result<Vec<Decision>, RetentionError> {
    let newest_first = sort_newest_first(group);
    let mut reasons: Vec<Vec<Reason>> = newest_first.iter().map(|c| pin_reasons(c)).collect();
    apply_policy(policy, &newest_first, &mut reasons);

    let decisions: Vec<Decision> = newest_first
        .iter()
        .zip(reasons)
        .map(|(candidate, reasons)| Decision {
            id: candidate.id,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect();
    ensure_something_kept(&decisions)?;
    Ok(decisions)
}

fn sort_newest_first(group: &[Candidate]) -> Vec<&Candidate> {
    let mut sorted: Vec<&Candidate> = group.iter().collect();
    // `id` only matters for malformed input with a repeated seq; it keeps the order total.
    sorted.sort_by(|a, b| newest_first_order(a, b));
    sorted
}

fn newest_first_order(a: &Candidate, b: &Candidate) -> Ordering {
    (b.created_at, b.seq, b.id).cmp(&(a.created_at, a.seq, a.id))
}

fn pin_reasons(candidate: &Candidate) -> Vec<Reason> {
    let to_reason = |pin: &Pin| match pin {
        Pin::Head(branch) => Reason::Head(branch.clone()),
        Pin::Tag(tag) => Reason::Tag(tag.clone()),
    };
    candidate.pins.iter().map(to_reason).collect()
}

/// Adds each rule's reasons, in canonical order, to `reasons` (parallel to `newest_first`).
fn apply_policy(policy: &Policy, newest_first: &[&Candidate], reasons: &mut [Vec<Reason>]) {
    if policy.is_empty() {
        reasons.iter_mut().for_each(|r| r.push(Reason::NoPolicy));
        return;
    }
    keep_last(policy.keep_last, reasons);
    if let Some(window) = policy.keep_within {
        keep_within(window, newest_first, reasons);
    }
    for rule in bucket_rules(policy) {
        rule.apply(newest_first, reasons);
    }
}

fn keep_last(count: u32, reasons: &mut [Vec<Reason>]) {
    for (rank, r) in (1..=count).zip(reasons.iter_mut()) {
        r.push(Reason::Last { rank, of: count });
    }
}

fn keep_within(window: Duration, newest_first: &[&Candidate], reasons: &mut [Vec<Reason>]) {
    let Some(newest) = newest_first.first() else {
        return;
    };
    let start = window_start(newest.created_at, window);
    for (candidate, r) in newest_first.iter().zip(reasons.iter_mut()) {
        // Newest first, so the first checkpoint before the window ends the walk.
        if start.is_some_and(|start| candidate.created_at < start) {
            break;
        }
        r.push(Reason::Within(window));
    }
}

/// The oldest instant inside the window, or `None` when the window reaches past the earliest
/// time chrono can represent, in which case every checkpoint is inside it.
fn window_start(newest: DateTime<Utc>, window: Duration) -> Option<DateTime<Utc>> {
    let window = TimeDelta::from_std(window).ok()?;
    newest.checked_sub_signed(window)
}

/// Guards the promise that a non-empty group never loses all its checkpoints.
///
/// With the rules as written it cannot fire: an empty policy keeps everything, and every other
/// policy keeps the newest checkpoint (rank 1 of `last`, inside any `within` window, first of
/// its bucket for any calendar rule, and counts of zero turn a rule off). The check stays so a
/// future rule that breaks this property fails loudly instead of emptying a group; its tests
/// call it directly because no input to `evaluate` can reach the error.
fn ensure_something_kept(decisions: &[Decision]) -> Result<(), RetentionError> {
    if decisions.is_empty() || decisions.iter().any(|d| d.keep) {
        return Ok(());
    }
    Err(RetentionError::WouldDropAll {
        checkpoints: decisions.len(),
    })
}

/// One calendar rule: how many buckets it keeps, how it names a bucket, and its reason.
struct BucketRule {
    count: u32,
    label: fn(DateTime<Utc>) -> String,
    reason: fn(String) -> Reason,
}

fn bucket_rules(policy: &Policy) -> [BucketRule; 5] {
    let rule = |count, label, reason| BucketRule {
        count,
        label,
        reason,
    };
    [
        rule(policy.keep_hourly, hour_label, Reason::Hourly),
        rule(policy.keep_daily, day_label, Reason::Daily),
        rule(policy.keep_weekly, week_label, Reason::Weekly),
        rule(policy.keep_monthly, month_label, Reason::Monthly),
        rule(policy.keep_yearly, year_label, Reason::Yearly),
    ]
}

impl BucketRule {
    /// Keeps the newest checkpoint of each of the `count` newest buckets that hold one.
    ///
    /// Labels are monotonic in time, so walking newest first a bucket's checkpoints are
    /// adjacent and "differs from the last kept label" means "first seen of a new bucket".
    fn apply(&self, newest_first: &[&Candidate], reasons: &mut [Vec<Reason>]) {
        let mut remaining = self.count;
        let mut last_kept: Option<String> = None;
        for (candidate, r) in newest_first.iter().zip(reasons.iter_mut()) {
            if remaining == 0 {
                return;
            }
            let label = (self.label)(candidate.created_at);
            if last_kept.as_ref() != Some(&label) {
                r.push((self.reason)(label.clone()));
                last_kept = Some(label);
                remaining -= 1;
            }
        }
    }
}

fn hour_label(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

fn day_label(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// ISO week: the year is the ISO week-year, so 2027-01-01 falls in `2026-W53`.
fn week_label(at: DateTime<Utc>) -> String {
    let week = at.iso_week();
    format!("{}-W{:02}", week.year(), week.week())
}

fn month_label(at: DateTime<Utc>) -> String {
    at.format("%Y-%m").to_string()
}

fn year_label(at: DateTime<Utc>) -> String {
    at.format("%Y").to_string()
}
