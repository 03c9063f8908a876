//! Retention rules for checkpoints: which checkpoints of one (session, branch) group to keep.
//! Pure logic with no I/O and no clock, so collection and dry runs share one tested answer.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A retention policy for one group of checkpoints.
///
/// A count of zero means "this rule is off", not "keep none". All counts zero and no window is
/// the empty policy, which keeps everything. The compact text form (see [`FromStr`]) refuses
/// zeros, so a policy read from text never holds a rule that is on but keeps nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest `keep_last` checkpoints.
    pub keep_last: u32,
    /// Keep every checkpoint created at most this long before the group's newest checkpoint.
    /// Serialized as a humantime string such as `"7days"`.
    #[serde(with = "humantime_window")]
    pub keep_within: Option<Duration>,
    /// Keep the newest checkpoint of each of the last `keep_hourly` UTC hours that have one.
    pub keep_hourly: u32,
    /// Keep the newest checkpoint of each of the last `keep_daily` UTC days that have one.
    pub keep_daily: u32,
    /// Keep the newest checkpoint of each of the last `keep_weekly` ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest checkpoint of each of the last `keep_monthly` UTC months that have one.
    pub keep_monthly: u32,
    /// Keep the newest checkpoint of each of the last `keep_yearly` UTC years that have one.
    pub keep_yearly: u32,
}

impl Policy {
    /// True when no rule is set: such a policy keeps every checkpoint.
    pub fn is_empty(&self) -> bool {
        self.keep_within.is_none() && self.counts().iter().all(|&(_, count)| count == 0)
    }

    /// The count rules in canonical order, `within` excluded (it sits after `last`).
    fn counts(&self) -> [(&'static str, u32); 6] {
        [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ]
    }

    /// The field behind a count rule's name, or `None` for a name that is no count rule.
    fn count_slot(&mut self, name: &str) -> Option<&mut u32> {
        match name {
            "last" => Some(&mut self.keep_last),
            "hourly" => Some(&mut self.keep_hourly),
            "daily" => Some(&mut self.keep_daily),
            "weekly" => Some(&mut self.keep_weekly),
            "monthly" => Some(&mut self.keep_monthly),
            "yearly" => Some(&mut self.keep_yearly),
            _ => None,
        }
    }

    /// Applies one `name=value` item of the compact form.
    fn apply_item(&mut self, item: &str) -> Result<(), PolicyError> {
        let Some((name, value)) = item.split_once('=') else {
            return Err(PolicyError::Malformed {
                item: item.to_owned(),
            });
        };
        let (name, value) = (name.trim(), value.trim());
        if name == "within" {
            let window = parse_window(item, value)?;
            return set_once(&mut self.keep_within, window, name);
        }
        let Some(slot) = self.count_slot(name) else {
            return Err(PolicyError::UnknownRule {
                item: item.to_owned(),
            });
        };
        let count = parse_count(item, value)?;
        // Zeros are refused before this point, so a non-zero slot was set by an earlier item.
        if *slot != 0 {
            return Err(PolicyError::Duplicate {
                rule: name.to_owned(),
            });
        }
        *slot = count;
        Ok(())
    }
}

/// Parses the compact form `last=10,within=7d,hourly=24,daily=7,weekly=4,monthly=12,yearly=3`.
///
/// Any subset in any order; `"none"` is the empty policy (blank text is refused, so a lost
/// argument never silently keeps everything). Each rule may appear once
/// and must be non-zero: to turn a rule off, leave it out.
impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let mut policy = Policy::default();
        if text.is_empty() {
            return Err(PolicyError::Empty);
        }
        if text == "none" {
            return Ok(policy);
        }
        for item in text.split(',') {
            policy.apply_item(item.trim())?;
        }
        Ok(policy)
    }
}

/// Writes the compact form in canonical order (`last`, `within`, then the calendar rules);
/// the empty policy is `none`. Rules that are off are left out.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        for (name, count) in self.counts() {
            if count != 0 {
                items.push(format!("{name}={count}"));
            }
            if let (Some(window), "last") = (self.keep_within, name) {
                items.push(format!("within={}", humantime::format_duration(window)));
            }
        }
        if items.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&items.join(","))
    }
}

/// Why the compact policy text was refused; every variant names the offending item or rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy item {item:?} is not of the form name=value")]
    Malformed { item: String },
    #[error(
        "policy item {item:?} names no known rule \
         (expected last, within, hourly, daily, weekly, monthly or yearly)"
    )]
    UnknownRule { item: String },
    #[error("policy rule {rule:?} is given more than once")]
    Duplicate { rule: String },
    #[error("policy item {item:?} needs a whole number")]
    NotANumber { item: String },
    #[error("policy item {item:?} is too large (at most {max})")]
    TooLarge { item: String, max: String },
    #[error("policy item {item:?} needs a duration such as 7d or 12h")]
    BadDuration { item: String },
    #[error("the policy is empty: give rules such as last=10, or \"none\" to keep everything")]
    Empty,
    #[error("policy item {item:?} would keep nothing; leave the rule out to turn it off")]
    Zero { item: String },
}

fn parse_count(item: &str, value: &str) -> Result<u32, PolicyError> {
    let count: u32 = value.parse().map_err(|e: std::num::ParseIntError| {
        let item = item.to_owned();
        match e.kind() {
            std::num::IntErrorKind::PosOverflow => PolicyError::TooLarge {
                item,
                max: u32::MAX.to_string(),
            },
            _ => PolicyError::NotANumber { item },
        }
    })?;
    if count == 0 {
        return Err(PolicyError::Zero {
            item: item.to_owned(),
        });
    }
    Ok(count)
}

fn parse_window(item: &str, value: &str) -> Result<Duration, PolicyError> {
    let too_large = || PolicyError::TooLarge {
        item: item.to_owned(),
        max: humantime::format_duration(MAX_WINDOW).to_string(),
    };
    let window = humantime::parse_duration(value).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_large(),
        _ => PolicyError::BadDuration {
            item: item.to_owned(),
        },
    })?;
    if window > MAX_WINDOW {
        return Err(too_large());
    }
    if window.is_zero() {
        return Err(PolicyError::Zero {
            item: item.to_owned(),
        });
    }
    Ok(window)
}

/// The longest `within` window: a century, beyond any history worth bounding by age (and
/// within what calendar arithmetic handles).
const MAX_WINDOW: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn set_once(slot: &mut Option<Duration>, window: Duration, rule: &str) -> Result<(), PolicyError> {
    if slot.is_some() {
        return Err(PolicyError::Duplicate {
            rule: rule.to_owned(),
        });
    }
    *slot = Some(window);
    Ok(())
}

/// Serde for `Policy::keep_within`: a humantime string, so config files read `"7days"`.
mod humantime_window {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        window: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match window {
            Some(window) => {
                let text = humantime::format_duration(*window).to_string();
                serializer.serialize_some(&text)
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(D::Error::custom)
    }
}

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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test timestamps are RFC 3339")
            .with_timezone(&Utc)
    }

    /// A candidate whose id encodes its seq, so tests can speak in seqs.
    fn cand(seq: u64, created_at: &str) -> Candidate {
        Candidate {
            id: Uuid::from_u128(u128::from(seq)),
            seq,
            created_at: at(created_at),
            pins: Vec::new(),
        }
    }

    fn pinned(seq: u64, created_at: &str, pin: Pin) -> Candidate {
        Candidate {
            pins: vec![pin],
            ..cand(seq, created_at)
        }
    }

    fn policy(text: &str) -> Policy {
        text.parse().expect("test policies are valid")
    }

    fn seq_of(id: Uuid) -> u64 {
        u64::try_from(id.as_u128()).expect("test ids encode a u64 seq")
    }

    fn kept(policy_text: &str, group: &[Candidate]) -> Vec<u64> {
        let decisions = evaluate(&policy(policy_text), group).expect("evaluation succeeds");
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| seq_of(d.id))
            .collect()
    }

    fn reasons_of(decisions: &[Decision], seq: u64) -> Vec<Reason> {
        let decision = decisions.iter().find(|d| seq_of(d.id) == seq);
        decision.expect("seq is in the group").reasons.clone()
    }

    #[test]
    fn keep_last_keeps_the_n_newest_with_ranks() {
        let group: Vec<Candidate> = (1..=5)
            .map(|seq| cand(seq, &format!("2026-03-0{seq}T10:00:00Z")))
            .collect();

        let decisions = evaluate(&policy("last=3"), &group).unwrap();

        assert_eq!(kept("last=3", &group), vec![5, 4, 3]);
        assert_eq!(
            reasons_of(&decisions, 3),
            vec![Reason::Last { rank: 3, of: 3 }]
        );
        assert!(reasons_of(&decisions, 2).is_empty());
    }

    #[test]
    fn keep_last_larger_than_group_keeps_everything() {
        let group = vec![
            cand(1, "2026-03-01T10:00:00Z"),
            cand(2, "2026-03-02T10:00:00Z"),
        ];
        assert_eq!(kept("last=10", &group), vec![2, 1]);
    }

    #[test]
    fn keep_within_includes_the_exact_boundary_and_excludes_one_second_more() {
        let group = vec![
            cand(1, "2026-03-03T11:59:59Z"),
            cand(2, "2026-03-03T12:00:00Z"),
            cand(3, "2026-03-10T12:00:00Z"),
        ];
        assert_eq!(kept("within=7d", &group), vec![3, 2]);
    }

    #[test]
    fn keep_within_measures_from_the_newest_checkpoint_not_the_clock() {
        let group = vec![
            cand(1, "2001-01-01T00:00:00Z"),
            cand(2, "2001-01-02T00:00:00Z"),
        ];
        assert_eq!(kept("within=2d", &group), vec![2, 1]);
    }

    #[test]
    fn keep_within_past_the_representable_range_keeps_everything() {
        let group = vec![
            cand(1, "1970-01-01T00:00:00Z"),
            cand(2, "2026-01-01T00:00:00Z"),
        ];
        let huge = Policy {
            keep_within: Some(Duration::MAX),
            ..Policy::default()
        };

        let decisions = evaluate(&huge, &group).unwrap();

        assert!(decisions.iter().all(|d| d.keep));
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_hour() {
        let group = vec![
            cand(1, "2026-12-03T13:10:00Z"),
            cand(2, "2026-12-03T14:05:00Z"),
            cand(3, "2026-12-03T14:50:00Z"),
        ];

        let decisions = evaluate(&policy("hourly=5"), &group).unwrap();

        assert_eq!(kept("hourly=5", &group), vec![3, 1]);
        let label = "2026-12-03T14".to_owned();
        assert_eq!(reasons_of(&decisions, 3), vec![Reason::Hourly(label)]);
    }

    #[test]
    fn daily_crosses_a_month_end() {
        let group = vec![
            cand(1, "2026-01-31T10:00:00Z"),
            cand(2, "2026-01-31T23:00:00Z"),
            cand(3, "2026-02-01T00:30:00Z"),
            cand(4, "2026-02-01T08:00:00Z"),
        ];

        let decisions = evaluate(&policy("daily=2"), &group).unwrap();

        assert_eq!(kept("daily=2", &group), vec![4, 2]);
        let label = "2026-01-31".to_owned();
        assert_eq!(reasons_of(&decisions, 2), vec![Reason::Daily(label)]);
    }

    #[test]
    fn daily_crosses_a_year_end() {
        let group = vec![
            cand(1, "2026-12-31T05:00:00Z"),
            cand(2, "2026-12-31T22:00:00Z"),
            cand(3, "2027-01-01T01:00:00Z"),
            cand(4, "2026-12-30T12:00:00Z"),
        ];
        assert_eq!(kept("daily=2", &group), vec![3, 2]);
    }

    #[test]
    fn week_labels_use_the_iso_week_year() {
        assert_eq!(week_label(at("2026-12-31T12:00:00Z")), "2026-W53");
        assert_eq!(week_label(at("2027-01-01T12:00:00Z")), "2026-W53");
        assert_eq!(week_label(at("2027-01-04T00:00:00Z")), "2027-W01");
        assert_eq!(week_label(at("2024-12-30T00:00:00Z")), "2025-W01");
    }

    #[test]
    fn weekly_crosses_a_year_end_inside_one_iso_week() {
        let group = vec![
            cand(1, "2026-12-21T09:00:00Z"), // 2026-W52
            cand(2, "2026-12-28T09:00:00Z"), // 2026-W53
            cand(3, "2026-12-31T09:00:00Z"), // 2026-W53
            cand(4, "2027-01-01T09:00:00Z"), // 2026-W53, newest of that week
            cand(5, "2027-01-04T09:00:00Z"), // 2027-W01
        ];

        let decisions = evaluate(&policy("weekly=2"), &group).unwrap();

        assert_eq!(kept("weekly=2", &group), vec![5, 4]);
        let label = "2026-W53".to_owned();
        assert_eq!(reasons_of(&decisions, 4), vec![Reason::Weekly(label)]);
        assert_eq!(kept("weekly=3", &group), vec![5, 4, 1]);
    }

    #[test]
    fn monthly_crosses_december_into_january() {
        let group = vec![
            cand(1, "2026-12-01T00:00:00Z"),
            cand(2, "2026-12-20T00:00:00Z"),
            cand(3, "2027-01-02T00:00:00Z"),
            cand(4, "2027-01-15T00:00:00Z"),
            cand(5, "2026-11-30T23:59:59Z"),
        ];

        let decisions = evaluate(&policy("monthly=2"), &group).unwrap();

        assert_eq!(kept("monthly=2", &group), vec![4, 2]);
        let label = "2026-12".to_owned();
        assert_eq!(reasons_of(&decisions, 2), vec![Reason::Monthly(label)]);
    }

    #[test]
    fn yearly_keeps_the_newest_of_each_year() {
        let group = vec![
            cand(1, "2024-05-01T00:00:00Z"),
            cand(2, "2025-06-01T00:00:00Z"),
            cand(3, "2025-12-31T23:59:59Z"),
            cand(4, "2026-01-01T00:00:00Z"),
            cand(5, "2026-07-01T00:00:00Z"),
        ];

        assert_eq!(kept("yearly=2", &group), vec![5, 3]);
        assert_eq!(kept("yearly=9", &group), vec![5, 3, 1]);
    }

    #[test]
    fn combined_rules_list_every_reason() {
        let group = vec![
            cand(1, "2026-03-01T10:00:00Z"),
            cand(2, "2026-03-02T09:00:00Z"),
            cand(3, "2026-03-02T10:00:00Z"),
        ];

        let decisions = evaluate(&policy("weekly=1,daily=2,last=1"), &group).unwrap();

        let newest = vec![
            Reason::Last { rank: 1, of: 1 },
            Reason::Daily("2026-03-02".to_owned()),
            Reason::Weekly("2026-W10".to_owned()),
        ];
        assert_eq!(reasons_of(&decisions, 3), newest);
        assert_eq!(reasons_of(&decisions, 2), Vec::<Reason>::new());
        assert_eq!(
            reasons_of(&decisions, 1),
            vec![Reason::Daily("2026-03-01".to_owned())]
        );
    }

    #[test]
    fn pinned_checkpoints_are_kept_even_when_old() {
        let group = vec![
            pinned(1, "2020-01-01T00:00:00Z", Pin::Tag("v1".to_owned())),
            cand(2, "2026-03-01T00:00:00Z"),
            pinned(3, "2026-03-02T00:00:00Z", Pin::Head("main".to_owned())),
        ];

        let decisions = evaluate(&policy("last=1"), &group).unwrap();

        assert_eq!(kept("last=1", &group), vec![3, 1]);
        let head = vec![
            Reason::Head("main".to_owned()),
            Reason::Last { rank: 1, of: 1 },
        ];
        assert_eq!(reasons_of(&decisions, 3), head);
        assert_eq!(
            reasons_of(&decisions, 1),
            vec![Reason::Tag("v1".to_owned())]
        );
    }

    #[test]
    fn output_is_newest_first_with_seq_breaking_ties() {
        let group = vec![
            cand(2, "2026-03-01T10:00:00Z"),
            cand(4, "2026-03-02T10:00:00Z"),
            cand(1, "2026-03-01T10:00:00Z"),
            cand(3, "2026-03-01T10:00:00Z"),
        ];

        let decisions = evaluate(&policy("last=2"), &group).unwrap();

        let order: Vec<u64> = decisions.iter().map(|d| seq_of(d.id)).collect();
        assert_eq!(order, vec![4, 3, 2, 1]);
        assert_eq!(kept("last=2", &group), vec![4, 3]);
    }

    #[test]
    fn empty_policy_keeps_everything_without_a_rule() {
        let group = vec![
            cand(1, "2020-01-01T00:00:00Z"),
            cand(2, "2026-01-01T00:00:00Z"),
        ];

        let decisions = evaluate(&Policy::default(), &group).unwrap();

        assert!(
            decisions
                .iter()
                .all(|d| d.reasons == vec![Reason::NoPolicy])
        );
        assert!(decisions.iter().all(|d| d.keep));
    }

    #[test]
    fn empty_group_gives_no_decisions() {
        assert_eq!(evaluate(&policy("last=3"), &[]), Ok(Vec::new()));
        assert_eq!(evaluate(&Policy::default(), &[]), Ok(Vec::new()));
    }

    #[test]
    fn guard_refuses_decisions_that_drop_every_checkpoint() {
        let dropped = |seq| Decision {
            id: Uuid::from_u128(seq),
            keep: false,
            reasons: Vec::new(),
        };

        let err = ensure_something_kept(&[dropped(1), dropped(2)]).unwrap_err();

        assert_eq!(err, RetentionError::WouldDropAll { checkpoints: 2 });
        assert!(
            err.to_string()
                .contains("drop every one of the group's 2 checkpoints")
        );
        assert_eq!(ensure_something_kept(&[]), Ok(()));
    }

    #[test]
    fn reasons_read_as_short_sentences() {
        let cases = [
            (Reason::Head("main".to_owned()), "head of branch main"),
            (Reason::Tag("v1".to_owned()), "tag v1"),
            (Reason::NoPolicy, "no retention policy"),
            (Reason::Last { rank: 3, of: 10 }, "among the last 10 (3rd)"),
            (
                Reason::Last { rank: 12, of: 20 },
                "among the last 20 (12th)",
            ),
            (
                Reason::Last { rank: 21, of: 30 },
                "among the last 30 (21st)",
            ),
            (
                Reason::Within(Duration::from_secs(7 * 86_400)),
                "within 7days of the newest",
            ),
            (
                Reason::Hourly("2026-12-03T14".to_owned()),
                "newest of hour 2026-12-03T14",
            ),
            (
                Reason::Daily("2026-12-03".to_owned()),
                "newest of day 2026-12-03",
            ),
            (
                Reason::Weekly("2026-W49".to_owned()),
                "newest of week 2026-W49",
            ),
            (
                Reason::Monthly("2026-12".to_owned()),
                "newest of month 2026-12",
            ),
            (Reason::Yearly("2026".to_owned()), "newest of year 2026"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn policy_parses_any_subset_in_any_order() {
        let parsed = policy(" yearly=3, within=7d ,last=10,hourly=24,daily=7,weekly=4,monthly=12");

        let expected = Policy {
            keep_last: 10,
            keep_within: Some(Duration::from_secs(7 * 86_400)),
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_yearly: 3,
        };
        assert_eq!(parsed, expected);
        let canonical = "last=10,within=7days,hourly=24,daily=7,weekly=4,monthly=12,yearly=3";
        assert_eq!(parsed.to_string(), canonical);
    }

    #[test]
    fn policy_none_is_empty_and_blank_is_refused() {
        assert_eq!("".parse::<Policy>(), Err(PolicyError::Empty));
        assert_eq!("  ".parse::<Policy>(), Err(PolicyError::Empty));
        assert!(policy("  none ").is_empty());
        assert_eq!(Policy::default().to_string(), "none");
        assert!(!policy("daily=1").is_empty());
    }

    #[test]
    fn policy_errors_name_the_bad_item() {
        let cases = [
            ("last=10,daily=x", "\"daily=x\""),
            ("last=10,forever=1", "\"forever=1\""),
            ("daily=2,daily=3", "\"daily\""),
            ("within=1d,within=2d", "\"within\""),
            ("last=0", "\"last=0\""),
            ("within=0s", "\"within=0s\""),
            ("within=soon", "\"within=soon\""),
            ("last=10,,daily=1", "\"\""),
            ("last", "\"last\""),
            ("daily=-1", "\"daily=-1\""),
            ("last=99999999999999999999", "too large"),
            ("within=99999999999999999999d", "too large"),
            ("within=1000years", "too large"),
        ];
        for (text, named) in cases {
            let err = text.parse::<Policy>().unwrap_err().to_string();
            assert!(err.contains(named), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn policy_zero_error_says_the_rule_keeps_nothing() {
        let err = "last=0".parse::<Policy>().unwrap_err();
        assert_eq!(
            err,
            PolicyError::Zero {
                item: "last=0".to_owned()
            }
        );
        assert!(err.to_string().contains("would keep nothing"));
    }

    #[test]
    fn policy_serializes_the_window_as_humantime() {
        let parsed = policy("last=2,within=7d");

        let json = serde_json::to_value(&parsed).unwrap();

        assert_eq!(json["keep_within"], "7days");
        assert_eq!(json["keep_last"], 2);
        let back: Policy = serde_json::from_value(json).unwrap();
        assert_eq!(back, parsed);
        let sparse: Policy = serde_json::from_str(r#"{"keep_within": "12h"}"#).unwrap();
        assert_eq!(sparse, policy("within=12h"));
    }

    // ---- property tests ----

    /// About two years, in seconds: the spread of generated checkpoint times.
    const SPAN_SECS: i64 = 2 * 366 * 86_400;

    fn arb_pins() -> impl Strategy<Value = Vec<Pin>> {
        prop_oneof![
            8 => Just(Vec::new()),
            1 => Just(vec![Pin::Head("main".to_owned())]),
            1 => Just(vec![Pin::Tag("v1".to_owned()), Pin::Tag("v2".to_owned())]),
        ]
    }

    /// Up to 199 candidates with distinct seqs starting at `first_seq`. Times are drawn from a
    /// coarse grid as often as from a fine one, so equal timestamps (seq tie-breaks) occur.
    fn arb_group(first_seq: u64) -> impl Strategy<Value = Vec<Candidate>> {
        let offset = prop_oneof![0..SPAN_SECS, (0..200i64).prop_map(|n| n * 3_600)];
        let base = at("2025-06-01T00:00:00Z");
        prop::collection::vec((offset, arb_pins()), 0..200).prop_map(move |items| {
            let to_candidate = |(seq, (offset, pins))| Candidate {
                id: Uuid::from_u128(u128::from(seq)),
                seq,
                created_at: base + TimeDelta::seconds(offset),
                pins,
            };
            (first_seq..).zip(items).map(to_candidate).collect()
        })
    }

    fn arb_count() -> impl Strategy<Value = u32> {
        prop_oneof![2 => Just(0u32), 3 => 1..6u32, 1 => 6..40u32]
    }

    /// Policies as the text form can express them: the window, if any, is at least 1ns.
    fn arb_policy() -> impl Strategy<Value = Policy> {
        let window = prop::option::of((1..90 * 86_400u64, 0..1_000_000_000u32))
            .prop_map(|w| w.map(|(secs, nanos)| Duration::new(secs, nanos)));
        let counts = [
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
        ];
        (counts, window).prop_map(|(c, keep_within)| Policy {
            keep_last: c[0],
            keep_within,
            keep_hourly: c[1],
            keep_daily: c[2],
            keep_weekly: c[3],
            keep_monthly: c[4],
            keep_yearly: c[5],
        })
    }

    fn arb_non_empty_policy() -> impl Strategy<Value = Policy> {
        arb_policy().prop_filter("a rule must be set", |p| !p.is_empty())
    }

    fn kept_candidates(group: &[Candidate], decisions: &[Decision]) -> Vec<Candidate> {
        let kept: HashSet<Uuid> = decisions.iter().filter(|d| d.keep).map(|d| d.id).collect();
        group
            .iter()
            .filter(|c| kept.contains(&c.id))
            .cloned()
            .collect()
    }

    fn with_shuffled(
        group: Vec<Candidate>,
    ) -> impl Strategy<Value = (Vec<Candidate>, Vec<Candidate>)> {
        (Just(group.clone()), Just(group).prop_shuffle())
    }

    proptest! {
        #[test]
        fn policy_text_round_trips(p in arb_policy()) {
            let text = p.to_string();
            prop_assert_eq!(text.parse::<Policy>(), Ok(p));
        }

        #[test]
        fn policy_json_round_trips(p in arb_policy()) {
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
        }

        // No extra rule (such as restic's "keep the oldest if buckets remain") looks at what
        // was dropped, so a second pass finds the same newest checkpoint, the same N newest and
        // the same newest-per-bucket: it keeps everything again, for the same reasons.
        #[test]
        fn evaluating_the_kept_set_again_keeps_all_of_it(
            p in arb_non_empty_policy(),
            group in arb_group(0),
        ) {
            let first = evaluate(&p, &group).unwrap();
            let kept = kept_candidates(&group, &first);

            let second = evaluate(&p, &kept).unwrap();

            let first_kept: Vec<Decision> = first.into_iter().filter(|d| d.keep).collect();
            prop_assert_eq!(second, first_kept);
        }

        #[test]
        fn pinned_checkpoints_are_never_dropped(p in arb_policy(), group in arb_group(0)) {
            let decisions = evaluate(&p, &group).unwrap();
            let pinned: HashSet<Uuid> =
                group.iter().filter(|c| !c.pins.is_empty()).map(|c| c.id).collect();
            for d in decisions.iter().filter(|d| pinned.contains(&d.id)) {
                prop_assert!(d.keep);
            }
        }

        #[test]
        fn a_non_empty_group_always_keeps_something(p in arb_policy(), group in arb_group(0)) {
            let decisions = evaluate(&p, &group).unwrap();
            prop_assert_eq!(decisions.len(), group.len());
            prop_assert_eq!(decisions.iter().any(|d| d.keep), !group.is_empty());
            for d in &decisions {
                prop_assert_eq!(d.keep, !d.reasons.is_empty());
            }
        }

        #[test]
        fn keep_last_keeps_at_least_min_of_n_and_len(
            p in arb_non_empty_policy(),
            group in arb_group(0),
        ) {
            let decisions = evaluate(&p, &group).unwrap();
            let kept = decisions.iter().filter(|d| d.keep).count();
            let n = usize::try_from(p.keep_last).unwrap();
            prop_assert!(kept >= n.min(group.len()));
        }

        #[test]
        fn groups_are_independent(
            p in arb_policy(),
            a in arb_group(0),
            b in arb_group(1_000),
        ) {
            let alone = evaluate(&p, &a).unwrap();

            let _other = evaluate(&p, &b).unwrap();
            let beside = evaluate(&p, &a).unwrap();

            prop_assert_eq!(alone, beside);
        }

        #[test]
        fn input_order_does_not_matter(
            p in arb_policy(),
            (group, shuffled) in arb_group(0).prop_flat_map(with_shuffled),
        ) {
            prop_assert_eq!(evaluate(&p, &group).unwrap(), evaluate(&p, &shuffled).unwrap());
        }

        #[test]
        fn output_is_sorted_newest_first(p in arb_policy(), group in arb_group(0)) {
            let decisions = evaluate(&p, &group).unwrap();
            let by_id = |id: Uuid| group.iter().find(|c| c.id == id).unwrap();
            for pair in decisions.windows(2) {
                let (newer, older) = (by_id(pair[0].id), by_id(pair[1].id));
                prop_assert!((newer.created_at, newer.seq) > (older.created_at, older.seq));
            }
        }
    }
}
