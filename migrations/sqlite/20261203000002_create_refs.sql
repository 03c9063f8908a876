-- Tags, and the ref-log: every move of a branch head or a tag, recorded in the same
-- transaction as the move.

CREATE TABLE tags (
    session_id    INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    checkpoint_id BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE INDEX tags_by_checkpoint ON tags (checkpoint_id);

CREATE TABLE ref_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    ref_kind   INTEGER NOT NULL,
    ref_name   TEXT    NOT NULL,
    old_head   BLOB,
    new_head   BLOB,
    op         TEXT    NOT NULL,
    actor      TEXT,
    created_at INTEGER NOT NULL
);

CREATE INDEX ref_log_by_ref ON ref_log (session_id, ref_kind, ref_name, id);
