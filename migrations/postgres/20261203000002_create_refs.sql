-- Tags, and the ref-log: every move of a branch head or a tag, recorded in the same
-- transaction as the move.

CREATE TABLE tags (
    session_id    BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name          TEXT        NOT NULL,
    checkpoint_id UUID        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, name)
);

CREATE INDEX tags_by_checkpoint ON tags (checkpoint_id);

CREATE TABLE ref_log (
    id         BIGSERIAL   PRIMARY KEY,
    session_id BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- 0 = branch, 1 = tag.
    ref_kind   SMALLINT    NOT NULL,
    ref_name   TEXT        NOT NULL,
    -- NULL when the ref was created (old) or removed (new).
    old_head   UUID,
    new_head   UUID,
    -- commit, merge, create, reset, fast-forward, delete, import, fork, tag, untag.
    op         TEXT        NOT NULL,
    actor      TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX ref_log_by_ref ON ref_log (session_id, ref_kind, ref_name, id);
