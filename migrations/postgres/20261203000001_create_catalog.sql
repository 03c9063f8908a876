-- The catalog: sessions, branches, checkpoints and the chunk registry.
-- Object-store bytes are immutable; everything that changes lives here.

CREATE TABLE sessions (
    -- Surrogate key: a deleted session's name can be reused by a new, unrelated session.
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT        NOT NULL UNIQUE,
    -- The sequence number of the session's latest checkpoint (0 = none yet).
    last_seq    BIGINT      NOT NULL DEFAULT 0,
    -- Live checkpoints, kept in step with inserts and deletes.
    checkpoint_count BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE checkpoints (
    id              UUID        PRIMARY KEY,
    session_id      BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq             BIGINT      NOT NULL,
    branch          TEXT        NOT NULL,
    parent_id       UUID,
    merge_parent_id UUID,
    generation      BIGINT      NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    metadata        JSONB       NOT NULL,
    message         TEXT        NOT NULL,
    -- BLAKE3 hash of the manifest's root page; NULL for an empty state.
    manifest_root   BYTEA,
    entry_count     BIGINT      NOT NULL,
    logical_bytes   BIGINT      NOT NULL,
    stored_bytes    BIGINT      NOT NULL,
    UNIQUE (session_id, seq)
);

CREATE INDEX checkpoints_by_branch ON checkpoints (session_id, branch, seq);

CREATE TABLE branches (
    session_id  BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name        TEXT        NOT NULL,
    head        UUID        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, name)
);

-- Content-addressed blobs: value chunks (kind 0) and manifest pages (kind 1).
-- Small blobs live inline in `data`; larger ones in the object store under `object_key`.
CREATE TABLE chunks (
    hash        BYTEA       PRIMARY KEY,
    kind        SMALLINT    NOT NULL,
    -- 0 = stored as is, 1 = zstd.
    codec       SMALLINT    NOT NULL,
    raw_len     BIGINT      NOT NULL,
    stored_len  BIGINT      NOT NULL,
    data        BYTEA,
    object_key  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((data IS NULL) <> (object_key IS NULL))
);
