//! Branches, tags, the ref-log, forks, history, diff and merge, through the real server.

mod common;

use bytes::Bytes;
use ckpt_client::{
    Checkpoint, Client, ConflictKind, DiffKind, MergeOptions, MergeOutcome, MergeStrategy,
    NewCheckpoint, Op, ReadFilter, Resolution, State, Target,
};
use common::{Setup, TestEnv, noise};
use tonic::Code;

fn put(key: &str, value: &str) -> Op {
    Op::Put(key.to_owned(), Bytes::copy_from_slice(value.as_bytes()))
}

async fn commit(
    c: &Client,
    session: &str,
    branch: &str,
    parent: &Checkpoint,
    ops: Vec<Op>,
) -> Checkpoint {
    c.create(NewCheckpoint::incremental(session, &parent.id, ops).branch(branch))
        .await
        .unwrap()
}

async fn state(c: &Client, id: &str) -> State {
    c.read_state(Target::checkpoint(id), ReadFilter::default())
        .await
        .unwrap()
        .1
}

fn text(s: &State, key: &str) -> Option<String> {
    s.get(key).map(|v| String::from_utf8(v.to_vec()).unwrap())
}

async fn root(c: &Client, session: &str) -> Checkpoint {
    let base = State::from([
        ("a".to_owned(), Bytes::from_static(b"1")),
        ("b".to_owned(), Bytes::from_static(b"1")),
        ("c".to_owned(), Bytes::from_static(b"1")),
    ]);
    c.create(NewCheckpoint::full(session, base)).await.unwrap()
}

async fn branches_move_by_compare_and_swap_and_are_logged(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "s").await;
    let second = commit(c, "s", "main", &first, vec![put("a", "2")]).await;

    let side = c.create_branch("s", "side", &first.id).await.unwrap();
    assert_eq!(side.head, first.id);
    assert_eq!(
        c.create_branch("s", "side", &first.id)
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    assert_eq!(
        c.create_branch("s", "x", "01900000-0000-7000-8000-000000000000")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let on_side = commit(c, "s", "side", &first, vec![put("b", "side")]).await;
    let names: Vec<String> = c
        .list_branches("s")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, vec!["main", "side"]);

    // Rewind main to first: a compare-and-swap on the head.
    let err = c
        .reset_branch("s", "main", &first.id, &first.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(err.current_head(), Some(second.id.as_str()));
    let reset = c
        .reset_branch("s", "main", &first.id, &second.id)
        .await
        .unwrap();
    assert_eq!(reset.head, first.id);
    assert_eq!(
        c.read_state(Target::head("s"), ReadFilter::default())
            .await
            .unwrap()
            .0
            .id,
        first.id
    );
    // The rewound checkpoint is still there.
    assert_eq!(text(&state(c, &second.id).await, "a").as_deref(), Some("2"));

    let log = c.ref_log("s", "main", false, 10, "").await.unwrap().items;
    let ops: Vec<(&str, Option<&str>, Option<&str>)> = log
        .iter()
        .map(|e| {
            (
                e.operation.as_str(),
                e.old_head.as_deref(),
                e.new_head.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("reset", Some(second.id.as_str()), Some(first.id.as_str())),
            ("commit", Some(first.id.as_str()), Some(second.id.as_str())),
            ("commit", None, Some(first.id.as_str())),
        ]
    );

    // Deleting a branch keeps its checkpoints.
    assert_eq!(
        c.delete_branch("s", "side", Some(&first.id))
            .await
            .unwrap_err()
            .code(),
        Code::Aborted
    );
    c.delete_branch("s", "side", Some(&on_side.id))
        .await
        .unwrap();
    assert_eq!(
        c.get_branch("s", "side").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        text(&state(c, &on_side.id).await, "b").as_deref(),
        Some("side")
    );
    let log = c.ref_log("s", "side", false, 10, "").await.unwrap().items;
    assert_eq!(log[0].operation, "delete");
    assert_eq!(log.last().unwrap().operation, "create");
}

async fn tags_pin_and_move_only_explicitly(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "t").await;
    let second = commit(c, "t", "main", &first, vec![put("a", "2")]).await;
    let third = commit(c, "t", "main", &second, vec![put("a", "3")]).await;
    c.set_tag("t", "v1", &first.id, None).await.unwrap();
    assert_eq!(
        c.set_tag("t", "v1", &second.id, None)
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    assert_eq!(
        c.set_tag("t", "v1", &second.id, Some(&third.id))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let moved = c
        .set_tag("t", "v1", &second.id, Some(&first.id))
        .await
        .unwrap();
    assert_eq!(moved.checkpoint_id, second.id);
    // A tagged checkpoint cannot be deleted; untagged, it can.
    assert_eq!(
        c.delete_checkpoint(&second.id).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    c.delete_tag("t", "v1").await.unwrap();
    c.delete_checkpoint(&second.id).await.unwrap();
    assert_eq!(
        c.delete_tag("t", "v1").await.unwrap_err().code(),
        Code::NotFound
    );
    let ops: Vec<String> = c
        .ref_log("t", "v1", true, 10, "")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.operation)
        .collect();
    assert_eq!(ops, vec!["untag", "tag", "tag"]);
    assert!(c.list_tags("t").await.unwrap().is_empty());
    // History shows where a checkpoint was pruned: third's parent no longer loads.
    let history = c
        .history(Target::checkpoint(&third.id), true, 10, "")
        .await
        .unwrap()
        .items;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].parent_ids, vec![second.id.clone()]);
}

async fn a_fork_shares_data_and_lives_on_its_own(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let big = State::from([("blob".to_owned(), Bytes::from(noise(500_000, 4)))]);
    let source = c
        .create(NewCheckpoint::full("src", big.clone()))
        .await
        .unwrap();
    let fork = c
        .fork_session(&source.id, "fork", "try another way")
        .await
        .unwrap();
    assert_eq!(fork.summary.stored_bytes, 0, "a fork copies no data");
    assert!(fork.parent_ids.is_empty());
    assert_eq!(
        fork.metadata["forked_from"]["checkpoint_id"],
        source.id.as_str()
    );
    assert_eq!(state(c, &fork.id).await, big);
    assert_eq!(
        c.fork_session(&source.id, "fork", "")
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    c.delete_session("src").await.unwrap();
    assert_eq!(
        state(c, &fork.id).await,
        big,
        "the fork survives its source"
    );
    commit(c, "fork", "main", &fork, vec![put("more", "x")]).await;
}

async fn history_walks_first_parents_or_all_and_pages(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "h").await;
    let mut main = first.clone();
    for i in 0..4 {
        main = commit(c, "h", "main", &main, vec![put("a", &i.to_string())]).await;
    }
    c.create_branch("h", "side", &first.id).await.unwrap();
    let side = commit(c, "h", "side", &first, vec![put("z", "side")]).await;
    let merged = c
        .merge("h", "main", "side", true, MergeOptions::default())
        .await
        .unwrap()
        .checkpoint
        .unwrap();
    assert_eq!(merged.parent_ids, vec![main.id.clone(), side.id.clone()]);

    let first_parent = c
        .history(Target::head("h"), true, 100, "")
        .await
        .unwrap()
        .items;
    assert_eq!(first_parent.len(), 6, "merge, 4 on main, root");
    let all = c
        .history(Target::head("h"), false, 100, "")
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 7);
    assert!(all.iter().any(|cp| cp.id == side.id));
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .history(Target::head("h"), false, 3, &token)
            .await
            .unwrap();
        paged.extend(page.items.into_iter().map(|cp| cp.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        paged,
        all.iter().map(|cp| cp.id.clone()).collect::<Vec<_>>()
    );
    let mut line = Vec::new();
    let mut token = String::new();
    loop {
        let page = c.history(Target::head("h"), true, 2, &token).await.unwrap();
        assert!(page.items.len() <= 2);
        line.extend(page.items.into_iter().map(|cp| cp.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        line,
        first_parent
            .iter()
            .map(|cp| cp.id.clone())
            .collect::<Vec<_>>()
    );

    assert!(c.is_ancestor(&first.id, &merged.id).await.unwrap());
    assert!(c.is_ancestor(&side.id, &merged.id).await.unwrap());
    assert!(!c.is_ancestor(&merged.id, &side.id).await.unwrap());
    assert!(!c.is_ancestor(&side.id, &main.id).await.unwrap());
    assert_eq!(
        c.merge_base(&main.id, &side.id).await.unwrap(),
        vec![first.id.clone()]
    );
}

async fn diff_lists_each_change_with_sizes_hashes_and_values(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "d").await;
    let second = commit(
        c,
        "d",
        "main",
        &first,
        vec![put("a", "22"), Op::Delete("b".into()), put("n", "new")],
    )
    .await;
    let changes = c.diff_all(&first.id, &second.id, true).await.unwrap();
    let summary: Vec<(&str, DiffKind, u64, u64)> = changes
        .iter()
        .map(|d| (d.key.as_str(), d.kind, d.old_size, d.new_size))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a", DiffKind::Modified, 1, 2),
            ("b", DiffKind::Removed, 1, 0),
            ("n", DiffKind::Added, 0, 3)
        ]
    );
    assert_eq!(changes[0].new_value.as_deref(), Some(&b"22"[..]));
    assert_eq!(changes[1].old_value.as_deref(), Some(&b"1"[..]));
    assert!(!changes[0].old_hash.is_empty() && changes[0].old_hash != changes[0].new_hash);
    assert!(changes[1].new_hash.is_empty());
    assert!(
        c.diff_all(&first.id, &first.id, false)
            .await
            .unwrap()
            .is_empty()
    );
    // Across sessions, and paged.
    let other = c
        .create(NewCheckpoint::full(
            "other",
            (0..25)
                .map(|i| (format!("k{i:02}"), Bytes::from("v")))
                .collect(),
        ))
        .await
        .unwrap();
    let page = c.diff(&first.id, &other.id, false, 10, "").await.unwrap();
    assert_eq!(page.items.len(), 10);
    assert_eq!(
        c.diff_all(&first.id, &other.id, false).await.unwrap().len(),
        28
    );
}

async fn merges_fast_forward_combine_and_report_conflicts(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let base = root(c, "m").await;
    c.create_branch("m", "feature", &base.id).await.unwrap();

    // Fast-forward, then up to date.
    let f1 = commit(c, "m", "feature", &base, vec![put("f", "1")]).await;
    let ff = c
        .merge("m", "main", "feature", true, MergeOptions::default())
        .await
        .unwrap();
    assert_eq!(ff.outcome, MergeOutcome::FastForward);
    assert_eq!(ff.checkpoint.unwrap().id, f1.id);
    let same = c
        .merge("m", "main", "feature", true, MergeOptions::default())
        .await
        .unwrap();
    assert_eq!(same.outcome, MergeOutcome::UpToDate);

    // Diverge: disjoint changes plus every kind of conflict.
    let ours = commit(
        c,
        "m",
        "main",
        &f1,
        vec![
            put("o", "only-ours"),
            put("a", "ours"),
            put("b", "ours"),
            Op::Delete("c".into()),
            put("x", "ours"),
        ],
    )
    .await;
    let theirs = commit(
        c,
        "m",
        "feature",
        &f1,
        vec![
            put("t", "only-theirs"),
            put("a", "theirs"),
            Op::Delete("b".into()),
            put("c", "theirs"),
            put("x", "theirs"),
        ],
    )
    .await;
    let dry = c
        .merge("m", "main", "feature", true, MergeOptions::default())
        .await
        .unwrap();
    assert_eq!(dry.outcome, MergeOutcome::Conflicted);
    let kinds: Vec<(&str, ConflictKind)> = dry
        .conflicts
        .iter()
        .map(|k| (k.key.as_str(), k.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("a", ConflictKind::BothModified),
            ("b", ConflictKind::ModifiedDeleted),
            ("c", ConflictKind::DeletedModified),
            ("x", ConflictKind::BothAdded),
        ]
    );
    assert!(dry.checkpoint.is_none());
    assert_eq!(
        c.get_branch("m", "main").await.unwrap().head,
        ours.id,
        "a conflicted merge writes nothing"
    );
    let dry_theirs = c
        .merge(
            "m",
            "main",
            "feature",
            true,
            MergeOptions {
                strategy: MergeStrategy::Theirs,
                dry_run: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dry_theirs.outcome, MergeOutcome::Merged);
    assert_eq!(
        c.get_branch("m", "main").await.unwrap().head,
        ours.id,
        "a dry run writes nothing"
    );

    // Resolve per key (guarded by what the report said), the rest by strategy.
    let a = &dry.conflicts[0];
    let options = MergeOptions {
        strategy: MergeStrategy::Ours,
        resolutions: vec![
            (
                "a".into(),
                Resolution::Value(Bytes::from_static(b"both")),
                Some(a.ours_hash.clone()),
                Some(a.theirs_hash.clone()),
            ),
            ("c".into(), Resolution::Theirs, None, None),
        ],
        message: "merge feature".into(),
        ..Default::default()
    };
    let merged = c
        .merge("m", "main", "feature", true, options)
        .await
        .unwrap();
    assert_eq!(merged.outcome, MergeOutcome::Merged);
    let cp = merged.checkpoint.unwrap();
    assert_eq!(cp.parent_ids, vec![ours.id.clone(), theirs.id.clone()]);
    assert_eq!(cp.metadata["merge"]["resolutions"]["a"], "value");
    assert_eq!(cp.metadata["merge"]["resolutions"]["b"], "ours");
    let s = state(c, &cp.id).await;
    assert_eq!(text(&s, "a").as_deref(), Some("both"));
    assert_eq!(text(&s, "b").as_deref(), Some("ours"));
    assert_eq!(text(&s, "c").as_deref(), Some("theirs"));
    assert_eq!(text(&s, "x").as_deref(), Some("ours"));
    assert_eq!(text(&s, "o").as_deref(), Some("only-ours"));
    assert_eq!(text(&s, "t").as_deref(), Some("only-theirs"));

    // A stale guard is refused, and a resolution for a key that does not conflict is invalid.
    let again = commit(c, "m", "feature", &theirs, vec![put("a", "theirs-2")]).await;
    let stale = MergeOptions {
        resolutions: vec![(
            "a".into(),
            Resolution::Ours,
            None,
            Some(a.theirs_hash.clone()),
        )],
        ..Default::default()
    };
    let err = c
        .merge("m", "main", &again.id, false, stale)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let bogus = MergeOptions {
        resolutions: vec![("zzz".into(), Resolution::Ours, None, None)],
        ..Default::default()
    };
    assert_eq!(
        c.merge("m", "main", &again.id, false, bogus)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // The recursive strategy name is accepted as fail.
    let stale_head = MergeOptions {
        expected_target_head: Some(ours.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        c.merge("m", "main", &again.id, false, stale_head)
            .await
            .unwrap_err()
            .code(),
        Code::Aborted
    );
}

async fn a_change_both_sides_kept_survives_a_criss_cross_merge(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let base = root(c, "cc").await;
    c.create_branch("cc", "b", &base.id).await.unwrap();
    // Each side changes its own key.
    let a1 = commit(c, "cc", "main", &base, vec![put("a", "A")]).await;
    let b1 = commit(c, "cc", "b", &base, vec![put("b", "B")]).await;
    // Criss-cross: each merges the other's first commit.
    let a2 = c
        .merge("cc", "main", &b1.id, false, MergeOptions::default())
        .await
        .unwrap()
        .checkpoint
        .unwrap();
    let b2 = c
        .merge("cc", "b", &a1.id, false, MergeOptions::default())
        .await
        .unwrap()
        .checkpoint
        .unwrap();
    assert_eq!(text(&state(c, &a2.id).await, "b").as_deref(), Some("B"));
    assert_eq!(text(&state(c, &b2.id).await, "a").as_deref(), Some("A"));
    // Both sides keep the changes; main also edits c.
    let a3 = commit(c, "cc", "main", &a2, vec![put("c", "C")]).await;
    let bases = c.merge_base(&a3.id, &b2.id).await.unwrap();
    assert_eq!(bases.len(), 2, "criss-cross histories have two merge bases");

    let last = c
        .merge("cc", "main", "b", true, MergeOptions::default())
        .await
        .unwrap();
    assert_eq!(last.outcome, MergeOutcome::Merged, "{:?}", last.conflicts);
    let s = state(c, &last.checkpoint.unwrap().id).await;
    assert_eq!(
        text(&s, "a").as_deref(),
        Some("A"),
        "a change both sides kept must not be reverted"
    );
    assert_eq!(text(&s, "b").as_deref(), Some("B"));
    assert_eq!(text(&s, "c").as_deref(), Some("C"));
}

async fn list_filters_work_and_refuse_malformed_input(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "lf").await;
    let second = c
        .create(
            NewCheckpoint::incremental("lf", &first.id, vec![put("a", "2")])
                .message("Fixed the BUG")
                .metadata(serde_json::json!({"tool": "edit", "who": "o'brien"})),
        )
        .await
        .unwrap();
    let filter = ckpt_client::ListFilter {
        metadata_contains: Some(serde_json::json!({"who": "o'brien"})),
        message_contains: Some("bug".into()),
        ..Default::default()
    };
    let page = c
        .list_checkpoints_where("lf", &filter, 10, "")
        .await
        .unwrap();
    assert_eq!(
        page.items
            .iter()
            .map(|cp| cp.id.clone())
            .collect::<Vec<_>>(),
        vec![second.id.clone()]
    );

    let bad = [
        (
            ckpt_client::ListFilter {
                metadata_contains: Some(serde_json::json!([1])),
                ..Default::default()
            },
            "metadata_contains",
        ),
        (
            ckpt_client::ListFilter {
                tag: Some("bad tag".into()),
                ..Default::default()
            },
            "tag",
        ),
        (
            ckpt_client::ListFilter {
                branch: Some("no;pe".into()),
                ..Default::default()
            },
            "branch",
        ),
        (
            ckpt_client::ListFilter {
                created_after: Some(second.create_time),
                created_before: Some(first.create_time),
                ..Default::default()
            },
            "created_before",
        ),
    ];
    for (filter, field) in bad {
        let err = c
            .list_checkpoints_where("lf", &filter, 10, "")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

async fn search_finds_messages_metadata_keys_and_tags(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "s1").await;
    let edit = c
        .create(
            NewCheckpoint::incremental("s1", &first.id, vec![put("src/parser.rs", "fn")])
                .message("Fixed the tokenizer crash")
                .metadata(serde_json::json!({"tool": "str_replace_editor", "ticket": "BUG-42"})),
        )
        .await
        .unwrap();
    let other = c
        .create(NewCheckpoint::full("s2", State::new()).message("tokenizer benchmarks"))
        .await
        .unwrap();
    c.set_tag("s1", "release-1", &first.id, None).await.unwrap();
    let ids = |page: ckpt_client::Page<Checkpoint>| {
        page.items.into_iter().map(|cp| cp.id).collect::<Vec<_>>()
    };

    assert_eq!(
        ids(c.search(Some("s1"), "tokenizer", 10, "").await.unwrap()),
        vec![edit.id.clone()]
    );
    let everywhere = ids(c.search(None, "tokenizer", 10, "").await.unwrap());
    assert_eq!(everywhere.len(), 2);
    assert!(everywhere.contains(&other.id));
    assert_eq!(
        ids(c.search(None, "str_replace_editor", 10, "").await.unwrap()),
        vec![edit.id.clone()]
    );
    assert_eq!(
        ids(c.search(None, "BUG-42", 10, "").await.unwrap()),
        vec![edit.id.clone()]
    );
    assert_eq!(
        ids(c.search(None, "parser", 10, "").await.unwrap()),
        vec![edit.id.clone()],
        "written keys"
    );
    assert_eq!(
        ids(c.search(Some("s1"), "release-1", 10, "").await.unwrap()),
        vec![first.id.clone()],
        "tag names"
    );
    // Query syntax of either engine is just text.
    for odd in [
        "\"unbalanced",
        "a OR b",
        "x' OR 1=1 --",
        "NEAR(",
        "*",
        "ünï",
    ] {
        assert!(
            c.search(None, odd, 10, "").await.unwrap().items.is_empty(),
            "{odd}"
        );
    }
    assert_eq!(
        c.search(None, "  ", 10, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // An unknown session is NOT_FOUND, as for listing.
    let err = c
        .search(Some("nobody"), "tokenizer", 10, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Paging.
    let page = c.search(None, "tokenizer", 1, "").await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = c
        .search(None, "tokenizer", 1, &page.next_page_token)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].id, page.items[0].id);
}

/// Regression: deleting the fork point made the two sides look unrelated, and the merge
/// silently brought back a key one side had deleted.
async fn a_merge_whose_base_was_deleted_is_refused(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let c = &env.client;
    let first = root(c, "pruned").await;
    let fork = commit(c, "pruned", "main", &first, vec![put("a", "2")]).await;
    c.create_branch("pruned", "side", &fork.id).await.unwrap();
    commit(c, "pruned", "side", &fork, vec![put("k", "side")]).await;
    let ours = commit(c, "pruned", "main", &fork, vec![Op::Delete("b".into())]).await;
    c.delete_checkpoint(&fork.id).await.unwrap();

    let err = c
        .merge("pruned", "main", "side", true, MergeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.to_string().contains("deleted"), "{err}");
    let theirs = MergeOptions {
        strategy: MergeStrategy::Theirs,
        ..Default::default()
    };
    assert_eq!(
        c.merge("pruned", "main", "side", true, theirs)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        c.get_branch("pruned", "main").await.unwrap().head,
        ours.id,
        "nothing was written"
    );
    assert!(text(&state(c, &ours.id).await, "b").is_none());
}

on_every_setup!(
    a_merge_whose_base_was_deleted_is_refused,
    search_finds_messages_metadata_keys_and_tags,
    list_filters_work_and_refuse_malformed_input,
    branches_move_by_compare_and_swap_and_are_logged,
    tags_pin_and_move_only_explicitly,
    a_fork_shares_data_and_lives_on_its_own,
    history_walks_first_parents_or_all_and_pages,
    diff_lists_each_change_with_sizes_hashes_and_values,
    merges_fast_forward_combine_and_report_conflicts,
    a_change_both_sides_kept_survives_a_criss_cross_merge,
);
