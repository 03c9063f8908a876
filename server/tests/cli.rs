//! The `checkpointd` binary's command line: precedence of flags, `CKPT_` variables and the
//! settings file, `--print-config`, and `checkpointd migrate` against a real PostgreSQL.

mod common;

use std::process::{Command, Output};

use sqlx::Connection;

fn checkpointd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_checkpointd"));
    command.args(args).env("CKPT_LOG", "warn");
    // The variables under test only; nothing the caller's environment happens to set.
    for (key, _) in std::env::vars() {
        if key.starts_with("CKPT_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("checkpointd runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "checkpointd failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn flags_beat_variables_which_beat_the_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpointd.toml");
    std::fs::write(
        &file,
        "zstd-level = 4\ndb-max-connections = 20\nshutdown-grace = \"9s\"\n",
    )
    .unwrap();

    let printed = stdout(&checkpointd(
        &["--print-config", "--zstd-level", "6"],
        &[
            ("CKPT_CONFIG", file.to_str().unwrap()),
            ("CKPT_ZSTD_LEVEL", "5"),
            ("CKPT_DB_MAX_CONNECTIONS", "30"),
            ("CKPT_DATABASE", "postgres://ckpt:s3cret@db.internal/ckpt"),
        ],
    ));

    assert!(printed.contains("zstd-level = 6  # flag\n"), "{printed}");
    assert!(
        printed.contains("db-max-connections = 30  # env CKPT_DB_MAX_CONNECTIONS\n"),
        "{printed}"
    );
    assert!(
        printed.contains("shutdown-grace = \"9s\"  # settings file\n"),
        "{printed}"
    );
    assert!(
        printed.contains("listen = \"127.0.0.1:7777\"  # default\n"),
        "{printed}"
    );
    assert!(
        printed.contains("postgres://ckpt:***@db.internal/ckpt"),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
}

#[test]
fn printed_configuration_reads_back_as_a_settings_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = stdout(&checkpointd(
        &[
            "--print-config",
            "--retention",
            "last=5",
            "--gc-interval",
            "10m",
        ],
        &[],
    ));
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &first).unwrap();

    let second = stdout(&checkpointd(
        &["--print-config", "--config", file.to_str().unwrap()],
        &[],
    ));

    let values = |text: &str| -> Vec<String> {
        text.lines()
            .map(|line| line.split("  #").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&first), values(&second));
    assert!(
        second.contains("retention = \"last=5\"  # settings file"),
        "{second}"
    );
}

#[test]
fn a_mistyped_setting_in_the_file_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nretension = \"last=5\"\n").unwrap();

    let output = checkpointd(&["--config", file.to_str().unwrap()], &[]);

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`retension`"), "{stderr}");
}

#[tokio::test]
async fn migrate_applies_every_migration_and_exits() {
    let database = common::fresh_database().await;
    let expected = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
    .count();

    // Twice: a second run finds nothing to do and succeeds.
    for _ in 0..2 {
        let output = checkpointd(&["migrate"], &[("CKPT_DATABASE", &database)]);
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut db = sqlx::PgConnection::connect(&database).await.unwrap();
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(applied as usize, expected);
    assert!(expected > 0);
}

#[test]
fn a_store_that_does_not_answer_stops_the_start() {
    // The S3-compatible test server, a bucket that does not exist on it.
    common::required_env("AWS_ENDPOINT");
    let dir = tempfile::tempdir().unwrap();

    let output = checkpointd(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--store",
            "s3://ckpt-no-such-bucket/chunks",
        ],
        &[],
    );

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the object store s3://ckpt-no-such-bucket/chunks does not answer"),
        "{stderr}"
    );
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");
}
