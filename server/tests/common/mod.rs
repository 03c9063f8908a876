//! Test harness: a fresh Postgres database and object-store prefix per test, a real server on
//! `127.0.0.1:0`, and the real client.
//!
//! Needs `DATABASE_URL` (a role that may create databases); the S3 variants also need
//! `CKPT_TEST_S3_BUCKET` and the usual `AWS_*` variables pointing at an S3-compatible server.
//! `scripts/test.sh` provides all of them. A missing variable fails the test: never a skip.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use ckpt_client::Client;
use ckpt_server::blobs::BlobStore;
use ckpt_server::{Config, RunningServer};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The catalog and object store a test runs on: the three set-ups users run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The embedded default: a SQLite file and a local directory.
    Sqlite,
    /// Postgres and a local directory.
    Postgres,
    /// Postgres and an S3-compatible server over HTTP.
    PostgresS3,
}

/// Generates one test per set-up from an `async fn name(setup: Setup)`.
#[macro_export]
macro_rules! on_every_setup {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name($crate::common::Setup::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name($crate::common::Setup::Postgres).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres_s3() {
                super::$name($crate::common::Setup::PostgresS3).await;
            }
        }
    )*};
}

/// A direct connection to a test's catalog, for looking and tampering behind the server.
pub enum Db {
    Postgres(PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Db {
    pub async fn object_keys(&self) -> Vec<String> {
        let sql = "SELECT object_key FROM chunks WHERE object_key IS NOT NULL ORDER BY object_key";
        match self {
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .expect("listing object keys")
    }

    /// Overwrites every inline value chunk with `bytes`.
    /// Back-dates a session's checkpoints: the newest to `days_ago` days before now, each
    /// earlier one a further day back (by sequence).
    pub async fn backdate(&self, session: &str, days_ago: i64) {
        match self {
            Db::Postgres(pool) => sqlx::query(
                "UPDATE checkpoints c SET created_at = now() - make_interval(days => $2::int) \
                   - (s.last_seq - c.seq) * interval '1 day' \
                 FROM sessions s WHERE s.id = c.session_id AND s.name = $1",
            )
            .bind(session)
            .bind(days_ago)
            .execute(pool)
            .await
            .map(|_| ()),
            Db::Sqlite(pool) => sqlx::query(
                "UPDATE checkpoints SET created_at = ?2 - (?3 + \
                   (SELECT last_seq FROM sessions WHERE name = ?1) - seq) * 86400000000 \
                 WHERE session_id = (SELECT id FROM sessions WHERE name = ?1)",
            )
            .bind(session)
            .bind(chrono::Utc::now().timestamp_micros())
            .bind(days_ago)
            .execute(pool)
            .await
            .map(|_| ()),
        }
        .expect("back-dating checkpoints")
    }

    pub async fn damage_inline_chunks(&self, bytes: &[u8]) -> u64 {
        match self {
            Db::Postgres(pool) => {
                sqlx::query("UPDATE chunks SET data = $1 WHERE data IS NOT NULL AND kind = 0")
                    .bind(bytes)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            }
            Db::Sqlite(pool) => {
                sqlx::query("UPDATE chunks SET data = ?1 WHERE data IS NOT NULL AND kind = 0")
                    .bind(bytes)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            }
        }
        .expect("damaging chunks")
    }
}

pub struct TestEnv {
    pub server: Option<RunningServer>,
    pub client: Client,
    pub config: Config,
    pub db_url: String,
    pub blobs: BlobStore,
    _dir: tempfile::TempDir,
}

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite through scripts/test.sh, which starts what it needs"
        )
    })
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = required_env("DATABASE_URL");
    let name = format!("ckpt_t_{}", Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test database at DATABASE_URL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("creating a test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    format!("{base}/{name}")
}

/// A catalog of its own for one test.
pub async fn fresh_catalog(setup: Setup, dir: &std::path::Path) -> String {
    match setup {
        Setup::Sqlite => dir.join("catalog.db").to_string_lossy().into_owned(),
        Setup::Postgres | Setup::PostgresS3 => fresh_database().await,
    }
}

/// An object-store spec with a prefix of its own.
pub fn fresh_store(setup: Setup, dir: &std::path::Path) -> String {
    match setup {
        Setup::Sqlite | Setup::Postgres => dir.join("chunks").to_string_lossy().into_owned(),
        Setup::PostgresS3 => {
            let bucket = required_env("CKPT_TEST_S3_BUCKET");
            required_env("AWS_ENDPOINT");
            format!("s3://{bucket}/t-{}", Uuid::now_v7().simple())
        }
    }
}

impl TestEnv {
    pub async fn start(setup: Setup) -> Self {
        Self::start_with(setup, |_| {}).await
    }

    /// Starts with a configuration changed by `tweak`.
    pub async fn start_with(setup: Setup, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = fresh_catalog(setup, dir.path()).await;
        let spec = fresh_store(setup, dir.path());
        let mut config = Config::for_test(SocketAddr::from(([127, 0, 0, 1], 0)), &db_url, &spec);
        tweak(&mut config);
        let server = ckpt_server::start(config.clone())
            .await
            .expect("server starts");
        let client = Client::connect(server.url())
            .await
            .expect("client connects");
        let blobs = BlobStore::open(&spec).expect("object store opens");
        Self {
            server: Some(server),
            client,
            config,
            db_url,
            blobs,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("server running").url()
    }

    /// A connection to the test's catalog, for looking behind the server's back.
    pub async fn db(&self) -> Db {
        if self.db_url.starts_with("postgres") {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(&self.db_url)
                .await
                .expect("test pool");
            return Db::Postgres(pool);
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&self.db_url)
            .busy_timeout(std::time::Duration::from_secs(10));
        Db::Sqlite(
            sqlx::SqlitePool::connect_with(options)
                .await
                .expect("test sqlite pool"),
        )
    }

    /// Object keys of every blob stored outside the catalog.
    pub async fn object_keys(&self) -> Vec<String> {
        self.db().await.object_keys().await
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// A deterministic pseudo-random byte string (incompressible, so it exercises the object store).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Text that compresses like an agent transcript.
pub fn transcript(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "the",
        "agent",
        "ran",
        "cargo",
        "test",
        "and",
        "read",
        "src/lib.rs",
        "{\"role\":",
        "\"tool\"}",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x = seed | 1;
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// A `checkpointd` process started from the built binary; killed when dropped, so a failing
/// test leaves no server behind.
pub struct Process {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary on `port` and waits until it answers.
pub async fn spawn_server(db_url: &str, store: &str, port: u16) -> Process {
    spawn_server_with(db_url, store, port, &[]).await
}

/// Starts the real binary with extra flags.
pub async fn spawn_server_with(db_url: &str, store: &str, port: u16, extra: &[&str]) -> Process {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_checkpointd"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            db_url,
            "--store",
            store,
        ])
        .args(extra)
        .env("CKPT_LOG", "warn")
        .spawn()
        .expect("checkpointd starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if Client::connect(url.clone()).await.is_ok() {
            return Process { child, url };
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("checkpointd did not start listening on {port}");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
