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

fn with_shuffled(group: Vec<Candidate>) -> impl Strategy<Value = (Vec<Candidate>, Vec<Candidate>)> {
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
