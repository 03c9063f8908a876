//! One conformance suite for every catalog: each behaviour the `Catalog` trait promises, run
//! against SQLite and Postgres. (The gRPC-level suites in checkpoints.rs and faults.rs run the
//! same promises through the real server, status codes included.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ckpt_server::catalog::{
    self, BlobKind, Catalog, CatalogError, CheckpointFilter, Location, NewApiKey, NewBlob,
    NewCheckpoint, Role,
};
use ckpt_server::core::codec::Codec;
use ckpt_server::core::hash::Hash;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn open(backend: Backend) -> (Arc<dyn Catalog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => dir.path().join("catalog.db").to_string_lossy().into_owned(),
        Backend::Postgres => common::fresh_database().await,
    };
    let catalog = catalog::open(&url, 8, Duration::from_secs(10))
        .await
        .expect("catalog opens");
    (catalog, dir)
}

fn new_cp(session: &str, branch: &str, parent: Option<Uuid>) -> NewCheckpoint {
    NewCheckpoint {
        id: Uuid::now_v7(),
        session: session.into(),
        branch: branch.into(),
        parent,
        merge_parent: None,
        metadata: r#"{"k":"v"}"#.into(),
        message: "msg".into(),
        manifest_root: None,
        entry_count: 0,
        logical_bytes: 0,
        blobs: Vec::new(),
        search_text: String::new(),
        reused: Vec::new(),
        source: None,
        request_id: None,
        lease: None,
    }
}

fn blob(content: &[u8], inline: bool) -> NewBlob {
    let hash = Hash::of(content);
    NewBlob {
        hash,
        kind: BlobKind::Chunk,
        codec: Codec::Raw,
        raw_len: content.len() as u64,
        stored_len: content.len() as u64,
        location: if inline {
            Location::Inline(Bytes::copy_from_slice(content))
        } else {
            Location::Object(format!("chunks/{}", hash.to_hex()))
        },
    }
}

async fn commits_create_sessions_branches_and_sequences(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let first = cat.commit(new_cp("s", "main", None)).await.unwrap();
    assert_eq!((first.seq, first.generation), (1, 1));
    assert!(first.parents.is_empty());
    assert_eq!(cat.branch_head("s", "main").await.unwrap(), Some(first.id));
    let second = cat
        .commit(new_cp("s", "main", Some(first.id)))
        .await
        .unwrap();
    assert_eq!((second.seq, second.generation), (2, 2));
    assert_eq!(second.parents, vec![first.id]);
    // A new branch forks from any checkpoint of the session.
    let side = cat
        .commit(new_cp("s", "side", Some(first.id)))
        .await
        .unwrap();
    assert_eq!((side.seq, side.generation), (3, 2));
    assert_eq!(cat.branch_head("s", "main").await.unwrap(), Some(second.id));
    assert_eq!(cat.branch_head("s", "side").await.unwrap(), Some(side.id));

    let stored = cat.checkpoint(second.id).await.unwrap().unwrap();
    assert_eq!(stored, second);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored.metadata).unwrap()["k"],
        "v"
    );
    let session = cat.session("s").await.unwrap().unwrap();
    assert_eq!(session.checkpoint_count, 3);
    assert!(cat.session("nope").await.unwrap().is_none());
    assert!(cat.checkpoint(Uuid::now_v7()).await.unwrap().is_none());
}

async fn a_stale_parent_is_head_moved_with_the_current_head(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let first = cat.commit(new_cp("s", "main", None)).await.unwrap();
    let second = cat
        .commit(new_cp("s", "main", Some(first.id)))
        .await
        .unwrap();
    for parent in [Some(first.id), None] {
        match cat.commit(new_cp("s", "main", parent)).await {
            Err(CatalogError::HeadMoved { branch, current }) => {
                assert_eq!(branch, "main");
                assert_eq!(current, Some(second.id));
            }
            other => panic!("expected HeadMoved, got {other:?}"),
        }
    }
    assert_eq!(cat.session("s").await.unwrap().unwrap().checkpoint_count, 2);
}

async fn unknown_or_foreign_parents_are_not_found(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let other = cat.commit(new_cp("other", "main", None)).await.unwrap();
    let err = cat
        .commit(new_cp("s", "main", Some(Uuid::now_v7())))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::NotFound(_)), "{err:?}");
    cat.commit(new_cp("s", "main", None)).await.unwrap();
    let err = cat
        .commit(new_cp("s", "b2", Some(other.id)))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::NotFound(_)), "{err:?}");
}

async fn concurrent_head_moves_let_exactly_one_writer_win(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let base = cat.commit(new_cp("race", "main", None)).await.unwrap();
    let attempts = (0..16).map(|_| {
        let cat = Arc::clone(&cat);
        tokio::spawn(async move { cat.commit(new_cp("race", "main", Some(base.id))).await })
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<Uuid> = results
        .iter()
        .filter_map(|r| r.as_ref().unwrap().as_ref().ok().map(|cp| cp.id))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one commit on the same head wins");
    for result in results {
        if let Err(err) = result.unwrap() {
            match err {
                CatalogError::HeadMoved { current, .. } => assert_eq!(current, Some(winners[0])),
                other => panic!("losers must see HeadMoved, got {other:?}"),
            }
        }
    }
    assert_eq!(
        cat.branch_head("race", "main").await.unwrap(),
        Some(winners[0])
    );
    assert_eq!(
        cat.session("race").await.unwrap().unwrap().checkpoint_count,
        2
    );
}

async fn blobs_register_once_and_count_as_stored_once(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let small = blob(b"inline bytes", true);
    let large = blob(b"bytes kept in the object store", false);
    let mut cp = new_cp("b", "main", None);
    cp.blobs = vec![small.clone(), large.clone()];
    let first = cat.commit(cp).await.unwrap();
    assert_eq!(first.stored_bytes, small.stored_len + large.stored_len);

    let mut cp = new_cp("b2", "main", None);
    cp.blobs = vec![small.clone(), blob(b"new", true)];
    let second = cat.commit(cp).await.unwrap();
    assert_eq!(second.stored_bytes, 3, "only the new blob counts");

    let unknown = Hash::of(b"never stored");
    let existing = cat
        .existing_blobs(&[small.hash, large.hash, unknown])
        .await
        .unwrap();
    assert!(existing.contains(&small.hash) && existing.contains(&large.hash));
    assert!(!existing.contains(&unknown));
    let mut records = cat.blobs(&[large.hash, small.hash, unknown]).await.unwrap();
    records.sort_by_key(|r| r.raw_len);
    assert_eq!(records.len(), 2);
    assert!(matches!(&records[0].location, Location::Inline(b) if b.as_ref() == b"inline bytes"));
    assert!(matches!(&records[1].location, Location::Object(k) if k.starts_with("chunks/")));
    assert!(cat.existing_blobs(&[]).await.unwrap().is_empty());
}

async fn many_blobs_fit_one_commit(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let mut cp = new_cp("many", "main", None);
    cp.blobs = (0..40_000u32)
        .map(|i| blob(&i.to_le_bytes(), true))
        .collect();
    let committed = cat.commit(cp).await.unwrap();
    assert_eq!(committed.stored_bytes, 4 * 40_000);
    let hashes: Vec<Hash> = (0..40_000u32).map(|i| Hash::of(&i.to_le_bytes())).collect();
    assert_eq!(cat.existing_blobs(&hashes).await.unwrap().len(), 40_000);
}

async fn listing_is_newest_first_paged_and_filtered(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let mut main_head = None;
    let mut side_head = None;
    for i in 0..10 {
        if i % 3 == 0 && i > 0 {
            side_head = Some(
                cat.commit(new_cp("l", "side", side_head.or(main_head)))
                    .await
                    .unwrap()
                    .id,
            );
        } else {
            main_head = Some(cat.commit(new_cp("l", "main", main_head)).await.unwrap().id);
        }
    }
    let all = cat
        .list_checkpoints("l", &CheckpointFilter::default(), None, 100)
        .await
        .unwrap();
    let seqs: Vec<u64> = all.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=10).rev().collect::<Vec<_>>());
    let page = cat
        .list_checkpoints("l", &CheckpointFilter::default(), Some(6), 3)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![5, 4, 3]
    );
    let side = cat
        .list_checkpoints(
            "l",
            &CheckpointFilter {
                branch: Some("side".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        side.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![10, 7, 4]
    );
    assert!(
        cat.list_checkpoints("none", &CheckpointFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    for name in ["c", "a", "b/x", "b"] {
        cat.commit(new_cp(name, "main", None)).await.unwrap();
    }
    let first = cat.list_sessions(None, 3).await.unwrap();
    let names: Vec<&str> = first.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b", "b/x"]);
    let rest = cat.list_sessions(Some("b/x"), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["c", "l"]
    );
}

async fn deletes_keep_heads_and_free_names(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let first = cat.commit(new_cp("d", "main", None)).await.unwrap();
    let second = cat
        .commit(new_cp("d", "main", Some(first.id)))
        .await
        .unwrap();
    assert!(matches!(
        cat.delete_checkpoint(second.id).await,
        Err(CatalogError::FailedPrecondition(_))
    ));
    cat.delete_checkpoint(first.id).await.unwrap();
    assert!(matches!(
        cat.delete_checkpoint(first.id).await,
        Err(CatalogError::NotFound(_))
    ));
    // The child keeps its parent link: history shows where a checkpoint was pruned.
    assert_eq!(
        cat.checkpoint(second.id).await.unwrap().unwrap().parents,
        vec![first.id]
    );
    assert_eq!(cat.session("d").await.unwrap().unwrap().checkpoint_count, 1);

    assert_eq!(cat.delete_session("d").await.unwrap(), 1);
    assert!(matches!(
        cat.delete_session("d").await,
        Err(CatalogError::NotFound(_))
    ));
    assert!(cat.checkpoint(second.id).await.unwrap().is_none());
    assert!(cat.branch_head("d", "main").await.unwrap().is_none());
    let err = cat
        .commit(new_cp("d", "main", Some(second.id)))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::NotFound(_)), "{err:?}");
    let fresh = cat.commit(new_cp("d", "main", None)).await.unwrap();
    assert_eq!((fresh.seq, fresh.generation), (1, 1));
}

async fn text_is_stored_verbatim(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let mut cp = new_cp("q'uote\"s;--", "br/anch", None);
    cp.message = "'; DROP TABLE checkpoints; -- ünï 🙂".into();
    cp.metadata = r#"{"a.b":"x'y","κ":[1,2]}"#.into();
    let committed = cat.commit(cp.clone()).await.unwrap();
    let loaded = cat.checkpoint(committed.id).await.unwrap().unwrap();
    assert_eq!(loaded.session, cp.session);
    assert_eq!(loaded.branch, cp.branch);
    assert_eq!(loaded.message, cp.message);
    let meta: serde_json::Value = serde_json::from_str(&loaded.metadata).unwrap();
    assert_eq!(meta, serde_json::json!({"a.b": "x'y", "κ": [1, 2]}));
}

async fn listings_filter_by_tag_metadata_time_and_message(backend: Backend) {
    let (cat, _dir) = open(backend).await;
    let metas = [
        r#"{"tool":"bash","step":1,"tags":["a","b"]}"#,
        r#"{"tool":"edit","step":2,"nested":{"k":"v","n":[1,2]}}"#,
        r#"{"tool":"bash","step":3,"q":"it's \"quoted\"; DROP TABLE x"}"#,
        r#"{"tool":"ünï.code","step":4}"#,
    ];
    let messages = [
        "Ran Tests",
        "edited src/main.rs",
        "ran tests again",
        "100% done_",
    ];
    let mut ids = Vec::new();
    let mut parent = None;
    for (meta, message) in metas.iter().zip(messages) {
        let mut cp = new_cp("f", "main", parent);
        cp.metadata = serde_json::from_str::<serde_json::Value>(meta)
            .unwrap()
            .to_string();
        cp.message = message.into();
        let committed = cat.commit(cp).await.unwrap();
        parent = Some(committed.id);
        ids.push(committed.id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cat.set_tag("f", "v1", ids[1], None).await.unwrap();
    let seqs = |filter: CheckpointFilter| {
        let cat = Arc::clone(&cat);
        async move {
            let rows = cat.list_checkpoints("f", &filter, None, 100).await.unwrap();
            rows.iter().map(|r| r.seq).collect::<Vec<_>>()
        }
    };
    let meta = |v: serde_json::Value| CheckpointFilter {
        metadata: Some(v),
        ..Default::default()
    };
    assert_eq!(
        seqs(meta(serde_json::json!({"tool": "bash"}))).await,
        vec![3, 1]
    );
    assert_eq!(
        seqs(meta(serde_json::json!({"tool": "bash", "step": 3}))).await,
        vec![3]
    );
    assert_eq!(
        seqs(meta(serde_json::json!({"nested": {"n": [2]}}))).await,
        vec![2]
    );
    assert_eq!(
        seqs(meta(serde_json::json!({"tags": ["b"]}))).await,
        vec![1]
    );
    assert_eq!(
        seqs(meta(
            serde_json::json!({"q": "it's \"quoted\"; DROP TABLE x"})
        ))
        .await,
        vec![3]
    );
    assert_eq!(
        seqs(meta(serde_json::json!({"tool": "ünï.code"}))).await,
        vec![4]
    );
    assert_eq!(
        seqs(meta(serde_json::json!({"tool": "none"}))).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        seqs(meta(serde_json::json!({"step": 2.0}))).await,
        vec![2],
        "numbers compare by value"
    );

    let text = |t: &str| CheckpointFilter {
        message: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(
        seqs(text("ran tests")).await,
        vec![3, 1],
        "case-insensitive"
    );
    assert_eq!(seqs(text("%")).await, vec![4], "wildcards are plain text");
    assert_eq!(seqs(text("_")).await, vec![4]);
    let tag = CheckpointFilter {
        tag: Some("v1".into()),
        ..Default::default()
    };
    assert_eq!(seqs(tag).await, vec![2]);

    let second = cat.checkpoint(ids[1]).await.unwrap().unwrap().created_at;
    let fourth = cat.checkpoint(ids[3]).await.unwrap().unwrap().created_at;
    let window = CheckpointFilter {
        created_after: Some(second),
        created_before: Some(fourth),
        ..Default::default()
    };
    assert_eq!(seqs(window).await, vec![3, 2]);
    let combined = CheckpointFilter {
        metadata: Some(serde_json::json!({"tool": "bash"})),
        message: Some("again".into()),
        branch: Some("main".into()),
        ..Default::default()
    };
    assert_eq!(seqs(combined).await, vec![3]);
    // Paging with a metadata filter keeps going past non-matching rows.
    let page = cat
        .list_checkpoints("f", &meta(serde_json::json!({"tool": "bash"})), None, 1)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    let next = cat
        .list_checkpoints("f", &meta(serde_json::json!({"tool": "bash"})), Some(3), 1)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
}

async fn api_keys_are_stored_found_listed_and_revoked(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => dir.path().join("catalog.db").to_string_lossy().into_owned(),
        Backend::Postgres => common::fresh_database().await,
    };
    let (_, keys) = catalog::open_with_keys(&url, 8, Duration::from_secs(10))
        .await
        .expect("catalog opens");
    let new_key = |id: &str, role| NewApiKey {
        id: id.into(),
        tenant: "acme".into(),
        role,
        secret_hash: [7; 32],
        name: format!("key {id}"),
    };

    let created = keys.create_key(new_key("a1", Role::Write)).await.unwrap();
    assert_eq!((created.role, created.revoked_at), (Role::Write, None));
    assert_eq!(created.secret_hash, [7; 32]);
    let taken = keys
        .create_key(new_key("a1", Role::Read))
        .await
        .unwrap_err();
    assert!(matches!(taken, CatalogError::AlreadyExists(_)), "{taken:?}");
    keys.create_key(new_key("b2", Role::Admin)).await.unwrap();

    assert_eq!(keys.key("a1").await.unwrap(), Some(created.clone()));
    assert_eq!(keys.key("zz").await.unwrap(), None);
    let listed: Vec<String> = keys
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, ["a1", "b2"]);

    // Revocation is seen by the next lookup, and a second one keeps the first time.
    let revoked = keys.revoke_key("a1").await.unwrap();
    let when = revoked.revoked_at.expect("revocation time");
    assert_eq!(
        keys.key("a1").await.unwrap().unwrap().revoked_at,
        Some(when)
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(keys.revoke_key("a1").await.unwrap().revoked_at, Some(when));
    let missing = keys.revoke_key("zz").await.unwrap_err();
    assert!(matches!(missing, CatalogError::NotFound(_)), "{missing:?}");
}

macro_rules! on_every_catalog {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_every_catalog!(
    commits_create_sessions_branches_and_sequences,
    a_stale_parent_is_head_moved_with_the_current_head,
    unknown_or_foreign_parents_are_not_found,
    concurrent_head_moves_let_exactly_one_writer_win,
    blobs_register_once_and_count_as_stored_once,
    many_blobs_fit_one_commit,
    listing_is_newest_first_paged_and_filtered,
    deletes_keep_heads_and_free_names,
    text_is_stored_verbatim,
    listings_filter_by_tag_metadata_time_and_message,
    api_keys_are_stored_found_listed_and_revoked,
);

/// Regression: the commit looked its parent up by id *and* session. Under a generic plan (the
/// plan a pooled connection settles on after five calls) PostgreSQL served that from the
/// (session_id, branch, seq) index, reading every checkpoint of the session, so each create
/// cost more than the one before (466 creates/s fell from 950 on a session of a few thousand).
/// Generic plans are forced here so the test does not depend on the planner's statistics.
#[tokio::test(flavor = "multi_thread")]
async fn commits_and_ref_moves_do_not_scan_the_session_under_generic_plans() {
    let url = common::fresh_database().await;
    let name = url.rsplit_once('/').unwrap().1.to_owned();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET plan_cache_mode = force_generic_plan"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let cat = catalog::open(&url, 2, Duration::from_secs(10))
        .await
        .unwrap();

    const CREATES: usize = 200;
    let mut parent = None;
    for _ in 0..CREATES {
        parent = Some(cat.commit(new_cp("long", "main", parent)).await.unwrap().id);
    }
    let head = parent.unwrap();
    for i in 0..20 {
        cat.create_branch("long", &format!("b{i}"), head)
            .await
            .unwrap();
        cat.set_tag("long", &format!("t{i}"), head, None)
            .await
            .unwrap();
    }
    drop(cat);

    // Backends report their statistics when they exit: wait for the pool's to go.
    let mut exited = false;
    for _ in 0..100 {
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if live == 0 {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited, "the catalog's connections did not close");
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut admin)
        .await
        .unwrap();
    let (scans, read): (i64, i64) = sqlx::query_as(
        "SELECT idx_scan, idx_tup_read FROM pg_stat_user_indexes \
         WHERE indexrelname = 'checkpoints_by_branch'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    // Scanning the session once per call would read about CREATES^2 / 2 = 20,000 entries.
    assert!(
        read < CREATES as i64,
        "{read} index entries read in {scans} scans of checkpoints_by_branch"
    );
    // The pkey lookups did happen, so the statistics were reported at all.
    let by_id: i64 = sqlx::query_scalar(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'checkpoints_pkey'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(by_id >= CREATES as i64 - 1, "{by_id} lookups by id");
}
