//! The reference's collection scenario: 1,000 small checkpoints in 10 sessions, aged over 90
//! days, collected under 7-, 30- and 60-day retention.
//!
//! The API never lets a client choose a checkpoint's time, so ages are written into the
//! catalog directly (`--database`): checkpoint k of a session's 100 is made 90 - 89k/99 days
//! old, so each session spans 1 to 90 days. Each policy gets a fresh set of sessions, set as
//! that session's retention policy, and one store-wide `Collect` call is timed.

use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use ckpt_client::{Client, CollectOptions, NewCheckpoint, State};

use super::row;

const SESSIONS: usize = 10;
const PER_SESSION: usize = 100;

/// Where the catalog is, for back-dating.
#[derive(Debug)]
pub(super) enum Catalog {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Catalog {
    /// `postgres://…`, or a SQLite database file (the server's `--data-dir`/catalog.db).
    pub(super) async fn open(spec: &str) -> anyhow::Result<Self> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(spec)
                .await
                .with_context(|| format!("cannot connect to {spec}"))?;
            return Ok(Self::Postgres(pool));
        }
        let path = spec.strip_prefix("sqlite://").unwrap_or(spec);
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open {path}"))?;
        Ok(Self::Sqlite(pool))
    }

    /// Spreads a session's checkpoints evenly from 90 days old (the first) to 1 day old.
    async fn age(&self, session: &str) -> anyhow::Result<()> {
        let span = PER_SESSION as i64 - 1;
        match self {
            Catalog::Postgres(pool) => sqlx::query(
                "UPDATE checkpoints c SET created_at = now() - interval '1 day' \
                   - (s.last_seq - c.seq) * interval '1 day' * 89 / $2 \
                 FROM sessions s WHERE s.id = c.session_id AND s.name = $1",
            )
            .bind(session)
            .bind(span)
            .execute(pool)
            .await
            .map(drop),
            Catalog::Sqlite(pool) => sqlx::query(
                "UPDATE checkpoints SET created_at = ?2 - 86400000000 \
                   - ((SELECT last_seq FROM sessions WHERE name = ?1) - seq) * 86400000000 * 89 / ?3 \
                 WHERE session_id = (SELECT id FROM sessions WHERE name = ?1)",
            )
            .bind(session)
            .bind(chrono::Utc::now().timestamp_micros())
            .bind(span)
            .execute(pool)
            .await
            .map(drop),
        }
        .with_context(|| format!("back-dating session {session}"))
    }
}

pub(super) async fn collection(
    client: &Client,
    run_id: &str,
    catalog: &Catalog,
) -> anyhow::Result<()> {
    // What earlier scenarios (and rounds) deleted is swept first, untimed, so each timed pass
    // does only its own retention and the sweep of what that retention frees.
    client.collect(&CollectOptions::default()).await?;
    for (days, bar) in [(7u32, 100.0), (30, 0.0), (60, 0.0)] {
        let sessions: Vec<String> = (0..SESSIONS)
            .map(|i| format!("bench/gc/{run_id}/{days}d/{i}"))
            .collect();
        let writers = sessions.iter().map(|session| fill(client, session));
        futures::future::try_join_all(writers).await?;
        for session in &sessions {
            catalog.age(session).await?;
            client
                .set_retention_policy(session, None, &format!("within={days}d"))
                .await?;
        }
        let started = Instant::now();
        let collection = client.collect(&CollectOptions::default()).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let deleted = collection.report.checkpoints_deleted;
        // Kept: each session's checkpoints no older than `days` before its newest (1 day old).
        let per_session_kept = (0..PER_SESSION)
            .filter(|&k| {
                89.0 * (PER_SESSION - 1 - k) as f64 / (PER_SESSION - 1) as f64 <= f64::from(days)
            })
            .count();
        let expected = (SESSIONS * (PER_SESSION - per_session_kept)) as u64;
        anyhow::ensure!(
            deleted == expected,
            "{days}-day retention deleted {deleted} checkpoints, expected {expected}"
        );
        let rate = deleted as f64 / elapsed;
        let label = format!("collect, {days}-day retention");
        if bar > 0.0 {
            row(&label, rate, "/s", bar, true);
        } else {
            println!("{label:<34} {rate:>9.1} /s   (no bar)");
        }
        println!(
            "{:<34} {deleted} of {} deleted in {:.1} ms",
            "",
            SESSIONS * PER_SESSION,
            elapsed * 1000.0
        );
        for session in &sessions {
            client.delete_session(session).await?;
        }
        client.collect(&CollectOptions::default()).await?;
    }
    Ok(())
}

/// Writes a session's 100 checkpoints, each a tiny state as the reference's are.
async fn fill(client: &Client, session: &str) -> anyhow::Result<()> {
    let mut parent: Option<String> = None;
    for k in 0..PER_SESSION {
        let state: State = [(
            "data".to_owned(),
            Bytes::from(format!("checkpoint-{session}-{k}")),
        )]
        .into_iter()
        .collect();
        let mut new = NewCheckpoint::full(session, state);
        if let Some(parent) = &parent {
            new = new.parent(parent);
        }
        parent = Some(client.create(new).await?.id);
    }
    Ok(())
}
