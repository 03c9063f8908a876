-- Idempotent creates and write leases (see the Postgres migration of the same name for the
-- rules). The checks run in the commit's write transaction.

CREATE TABLE create_requests (
    session_id    INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    request_id    TEXT    NOT NULL,
    checkpoint_id BLOB    NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (session_id, request_id)
);

CREATE INDEX create_requests_by_checkpoint ON create_requests (checkpoint_id);

CREATE TABLE leases (
    session    TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    -- Microseconds since the Unix epoch, as every time in this catalog.
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (session, branch)
);
