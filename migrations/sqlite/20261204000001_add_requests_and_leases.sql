-- Idempotent creates and write leases (see the Postgres migration of the same name for the
-- rules). The checks run in the commit's write transaction.

ALTER TABLE checkpoints ADD COLUMN request_id TEXT;

CREATE UNIQUE INDEX checkpoints_by_request ON checkpoints (session_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE leases (
    session    TEXT    NOT NULL,
    branch     TEXT    NOT NULL,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    -- Microseconds since the Unix epoch, as every time in this catalog.
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (session, branch)
);
