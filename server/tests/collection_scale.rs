//! Collection at scale: many checkpoints aged over 90 days, collected under 60-, 30- and
//! 7-day rules, with a writer running during the first pass.
//!
//! CI runs it at 20,000 checkpoints on every set-up. The recorded run uses a million:
//!
//!     CKPT_SCALE_CHECKPOINTS=1000000 cargo test --release -p ckpt-server \
//!         --test collection_scale postgres:: -- --nocapture
//!
//! and prints the deletion rates, the bytes freed, and create latency with and without a pass
//! running (docs/benchmarks.md has the figures).

mod common;

use std::time::{Duration, Instant};

use ckpt_client::{
    Client, CollectOptions, CollectReport, NewCheckpoint, ReadFilter, State, Target,
};
use common::{Db, Setup, TestEnv, noise, transcript};

/// Checkpoints per session; sessions = total / this.
const PER_SESSION: u64 = 10_000;

fn total() -> u64 {
    std::env::var("CKPT_SCALE_CHECKPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Seeds `sessions` sessions of `per` checkpoints each, aged evenly from 90 days ago to now,
/// sharing the manifest roots of the template session's checkpoints, plus `garbage` registry
/// rows nothing references.
async fn seed(db: &Db, sessions: u64, per: u64, garbage: u64) {
    match db {
        Db::Postgres(pool) => {
            let statements = [
                "INSERT INTO sessions (name, last_seq, checkpoint_count) \
                 SELECT 'scale-' || s, $2, $2 FROM generate_series(1, $1) s",
                "INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, generation, \
                   created_at, metadata, message, manifest_root, entry_count, logical_bytes, \
                   stored_bytes, search_text) \
                 SELECT gen_random_uuid(), s.id, i, 'main', NULL, i, \
                   now() - make_interval(secs => ($2 - i)::float8 / $2 * 90 * 86400), '{}', 'step', \
                   t.manifest_root, t.entry_count, t.logical_bytes, 0, '' \
                 FROM sessions s CROSS JOIN generate_series(1, $2) i \
                 JOIN (SELECT row_number() OVER (ORDER BY c.seq) - 1 AS n, c.* FROM checkpoints c \
                       JOIN sessions ts ON ts.id = c.session_id WHERE ts.name = 'template') t \
                   ON t.n = i % 3 \
                 WHERE s.name LIKE 'scale-%' AND $1 > 0",
                "INSERT INTO branches (session_id, name, head) \
                 SELECT c.session_id, 'main', c.id FROM checkpoints c \
                 JOIN sessions s ON s.id = c.session_id \
                 WHERE s.name LIKE 'scale-%' AND c.seq = $2 AND $1 > 0",
                "INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data) \
                 SELECT decode(md5('g' || i) || md5('h' || i), 'hex'), 0, 0, 64, 64, \
                   decode(md5('d' || i) || md5('e' || i) || md5('f' || i) || md5('k' || i), 'hex') \
                 FROM generate_series(1, $3) i WHERE $1 > 0 AND $2 > 0",
                "ANALYZE",
            ];
            for sql in statements {
                let mut query = sqlx::query(sql);
                if sql.contains('$') {
                    query = query.bind(sessions as i64).bind(per as i64);
                    if sql.contains("$3") {
                        query = query.bind(garbage as i64);
                    }
                }
                query.execute(pool).await.expect(sql);
            }
        }
        Db::Sqlite(pool) => {
            let now = chrono::Utc::now().timestamp_micros();
            let statements = [
                "WITH RECURSIVE n(s) AS (SELECT 1 UNION ALL SELECT s + 1 FROM n WHERE s < ?1) \
                 INSERT INTO sessions (name, last_seq, checkpoint_count, created_at, updated_at) \
                 SELECT 'scale-' || s, ?2, ?2, ?3, ?3 FROM n",
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2), \
                   t AS (SELECT row_number() OVER (ORDER BY c.seq) - 1 AS k, c.* FROM checkpoints c \
                         JOIN sessions ts ON ts.id = c.session_id WHERE ts.name = 'template') \
                 INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, generation, \
                   created_at, metadata, message, manifest_root, entry_count, logical_bytes, \
                   stored_bytes, search_text) \
                 SELECT randomblob(16), s.id, n.i, 'main', NULL, n.i, \
                   ?3 - CAST((?2 - n.i) * 1.0 / ?2 * 90 * 86400 * 1000000 AS INTEGER), '{}', 'step', \
                   t.manifest_root, t.entry_count, t.logical_bytes, 0, '' \
                 FROM sessions s CROSS JOIN n JOIN t ON t.k = n.i % 3 \
                 WHERE s.name LIKE 'scale-%' AND ?1 > 0",
                "INSERT INTO branches (session_id, name, head, created_at, updated_at) \
                 SELECT c.session_id, 'main', c.id, ?3, ?3 FROM checkpoints c \
                 JOIN sessions s ON s.id = c.session_id \
                 WHERE s.name LIKE 'scale-%' AND c.seq = ?2 AND ?1 > 0",
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?4) \
                 INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data, created_at) \
                 SELECT randomblob(32), 0, 0, 64, 64, randomblob(64), ?3 FROM n \
                 WHERE ?1 > 0 AND ?2 > 0",
            ];
            for sql in statements {
                sqlx::query(sql)
                    .bind(sessions as i64)
                    .bind(per as i64)
                    .bind(now)
                    .bind(garbage as i64)
                    .execute(pool)
                    .await
                    .expect(sql);
            }
        }
    }
}

/// Creates 10 KB checkpoints for `window`, returning each call's latency.
async fn create_latencies(client: &Client, session: &str, window: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut head: Option<String> = None;
    let until = Instant::now() + window;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let state: State = [("k".to_string(), noise(10_000, n).into())].into();
        let mut new = NewCheckpoint::full(session.to_owned(), state);
        new.parent_id = head.clone();
        let started = Instant::now();
        let cp = client.create(new).await.expect("create during collection");
        latencies.push(started.elapsed());
        head = Some(cp.id);
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!(
        "{} creates, p50 {:?}, p99 {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    )
}

async fn collect_with_policy(
    client: &Client,
    sessions: u64,
    policy: &str,
) -> (CollectReport, Duration) {
    for s in 1..=sessions {
        client
            .set_retention_policy(&format!("scale-{s}"), None, policy)
            .await
            .unwrap();
    }
    let started = Instant::now();
    let report = client
        .collect(&CollectOptions::default())
        .await
        .expect("collection")
        .report;
    (report, started.elapsed())
}

async fn aged_checkpoints_are_collected_under_60_30_and_7_day_rules(setup: Setup) {
    let env = TestEnv::start(setup).await;
    let client = &env.client;
    let per = PER_SESSION.min(total());
    let sessions = (total() / per).max(1);
    let garbage = sessions * per;

    // Three real states the seeded checkpoints share.
    let mut template = Vec::new();
    for i in 0..3u64 {
        let state: State = [
            ("big".to_string(), noise(30_000, i).into()),
            ("log".to_string(), transcript(4_000, i).into()),
        ]
        .into();
        let mut new = NewCheckpoint::full("template", state.clone());
        new.parent_id = template.last().map(|(id, _): &(String, State)| id.clone());
        template.push((client.create(new).await.unwrap().id, state));
    }
    let seeding = Instant::now();
    // One session more than the passes use: deleting it exercises batched session deletes.
    seed(&env.db().await, sessions + 1, per, garbage).await;
    eprintln!(
        "seeded {} checkpoints and {garbage} garbage blobs in {:?}",
        (sessions + 1) * per,
        seeding.elapsed()
    );
    let deleting = Instant::now();
    let extra = format!("scale-{}", sessions + 1);
    assert_eq!(client.delete_session(&extra).await.unwrap(), per);
    eprintln!(
        "deleted a session of {per} checkpoints in {:?}",
        deleting.elapsed()
    );
    assert!(matches!(
        client.get_session(&extra).await,
        Err(ckpt_client::Error::NotFound(_))
    ));

    // Create latency with no pass running, then during the 60-day pass.
    let quiet = create_latencies(client, "writer-quiet", Duration::from_secs(2)).await;
    let busy_client = client.clone();
    let busy = tokio::spawn(async move {
        create_latencies(&busy_client, "writer-busy", Duration::from_secs(4)).await
    });
    let mut expected_left = sessions * per;
    for (days, policy) in [
        (60, "within=60days"),
        (30, "within=30days"),
        (7, "within=7days"),
    ] {
        let (report, took) = collect_with_policy(client, sessions, policy).await;
        // Ages step 90 days / per; within D days of the newest keeps D/90 of each session
        // (the newest always), give or take one at the boundary.
        let kept_per_session = per * days / 90;
        let expected_deleted = expected_left - sessions * kept_per_session;
        let slack = 2 * sessions;
        assert!(
            report.checkpoints_deleted + slack >= expected_deleted
                && report.checkpoints_deleted <= expected_deleted + slack,
            "{policy}: deleted {} of the {expected_deleted} expected",
            report.checkpoints_deleted
        );
        expected_left -= report.checkpoints_deleted;
        let secs = took.as_secs_f64().max(1e-9);
        eprintln!(
            "{policy}: {} checkpoints deleted in {took:?} ({:.0}/s; retention {:?}), \
             {} chunks + {} pages deleted ({:.0} blobs/s over the sweep's {:?}), {} bytes freed",
            report.checkpoints_deleted,
            report.checkpoints_deleted as f64 / secs,
            report.retain,
            report.chunks_deleted,
            report.pages_deleted,
            (report.chunks_deleted + report.pages_deleted) as f64
                / report.sweep.as_secs_f64().max(1e-3),
            report.sweep,
            report.bytes_freed,
        );
        if days == 60 {
            assert!(report.chunks_deleted >= garbage, "{report:?}");
        }
    }
    eprintln!("creates, no collection:     {}", summary(quiet));
    eprintln!(
        "creates, during collection: {}",
        summary(busy.await.unwrap())
    );

    // Everything kept loads: the template and the seeded heads share its manifests.
    for (id, state) in &template {
        let (_, loaded) = client
            .read_state(Target::checkpoint(id), ReadFilter::default())
            .await
            .unwrap();
        assert_eq!(&loaded, state);
    }
    let (head, _) = client
        .read_state(Target::head("scale-1"), ReadFilter::default())
        .await
        .unwrap();
    assert_eq!(head.session_id, "scale-1");
    let verify = client
        .verify_all(Some("template"), 100, false)
        .await
        .unwrap();
    assert!(verify.problems.is_empty(), "{:?}", verify.problems);
}

on_every_setup!(aged_checkpoints_are_collected_under_60_30_and_7_day_rules);
