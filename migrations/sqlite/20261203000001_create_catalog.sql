-- The catalog on SQLite: the same tables and rules as migrations/postgres, in SQLite's dialect.
-- Times are microseconds since the Unix epoch (UTC); ids and hashes are BLOBs.

CREATE TABLE sessions (
    -- AUTOINCREMENT: a deleted session's row id is never handed to a new session.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT    NOT NULL UNIQUE,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    checkpoint_count INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE checkpoints (
    id              BLOB    PRIMARY KEY,
    session_id      INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    branch          TEXT    NOT NULL,
    parent_id       BLOB,
    merge_parent_id BLOB,
    generation      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    metadata        TEXT    NOT NULL,
    message         TEXT    NOT NULL,
    manifest_root   BLOB,
    entry_count     INTEGER NOT NULL,
    logical_bytes   INTEGER NOT NULL,
    stored_bytes    INTEGER NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE INDEX checkpoints_by_branch ON checkpoints (session_id, branch, seq);

CREATE TABLE branches (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    head       BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE chunks (
    hash       BLOB    PRIMARY KEY,
    kind       INTEGER NOT NULL,
    codec      INTEGER NOT NULL,
    raw_len    INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    data       BLOB,
    object_key TEXT,
    created_at INTEGER NOT NULL,
    CHECK ((data IS NULL) <> (object_key IS NULL))
) WITHOUT ROWID;
