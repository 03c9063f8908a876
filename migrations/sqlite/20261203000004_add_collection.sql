-- Collection: the same tables as migrations/postgres, in SQLite's dialect.

ALTER TABLE chunks ADD COLUMN touched_epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE gc_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    epoch       INTEGER NOT NULL DEFAULT 1,
    holder      TEXT,
    lease_until INTEGER
);

INSERT INTO gc_state (id) VALUES (1);

CREATE TABLE gc_pending_deletes (
    object_key TEXT    PRIMARY KEY,
    queued_at  INTEGER NOT NULL
);

CREATE TABLE gc_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    dry_run     INTEGER NOT NULL,
    report      TEXT    NOT NULL
);

CREATE TABLE retention_policies (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    branch     TEXT    NOT NULL,
    policy     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, branch)
);
