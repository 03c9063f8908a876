-- Collection: retention overrides, the collector's lease and epoch, deletions waiting for the
-- object store, and the reports of past passes.

-- The collection epoch in which a commit last reused this blob (see docs/architecture.md,
-- "Collection"). A pass that began at epoch E deletes only unmarked blobs stamped before E.
ALTER TABLE chunks ADD COLUMN touched_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE gc_state (
    id          SMALLINT    PRIMARY KEY CHECK (id = 1),
    -- Raised by every collection pass before it marks.
    epoch       BIGINT      NOT NULL DEFAULT 1,
    -- The collector running now, if any, and until when its lease holds.
    holder      TEXT,
    lease_until TIMESTAMPTZ
);

INSERT INTO gc_state (id) VALUES (1);

-- Objects whose catalog rows are gone, queued in the same transaction as the row delete so a
-- crash between the two never leaks the object.
CREATE TABLE gc_pending_deletes (
    object_key TEXT        PRIMARY KEY,
    queued_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE gc_runs (
    id          BIGSERIAL   PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    dry_run     BOOLEAN     NOT NULL,
    -- The pass's report as JSON: counts, bytes freed, errors.
    report      TEXT        NOT NULL
);

-- Retention overrides: for a whole session (branch = '') or for one branch of it.
CREATE TABLE retention_policies (
    session_id BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    branch     TEXT        NOT NULL,
    -- The compact form, e.g. 'last=10,within=7days,daily=7'.
    policy     TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, branch)
);
