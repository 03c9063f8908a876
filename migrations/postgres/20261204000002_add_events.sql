-- The change feed: every ref-log entry and every session deletion, in one table a watcher
-- reads by id. Rows are written by triggers, in the transaction that made the change, so no
-- write path can forget them and none can be seen before it commits.
--
-- Ids come from a sequence, so a transaction may take an id and commit after a later one is
-- already visible. `xid` lets a reader tell such a gap (its writer still running) from an id
-- whose transaction rolled back: see `core::watch`. The trigger runs after the ref-log row is
-- written, so the transaction already has its xid when it draws the event id.
--
-- Events name their session by name, not by row id: they outlive a deleted session.

CREATE TABLE events (
    id         BIGSERIAL   PRIMARY KEY,
    xid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    session    TEXT        NOT NULL,
    -- 0 = branch, 1 = tag (as in ref_log), 2 = the session itself.
    ref_kind   SMALLINT    NOT NULL,
    ref_name   TEXT        NOT NULL,
    old_head   UUID,
    new_head   UUID,
    -- The ref-log's op, or delete-session.
    op         TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);


CREATE FUNCTION ckpt_ref_log_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session, ref_kind, ref_name, old_head, new_head, op, created_at)
        SELECT s.name, NEW.ref_kind, NEW.ref_name, NEW.old_head, NEW.new_head, NEW.op,
               NEW.created_at
            FROM sessions s WHERE s.id = NEW.session_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ref_log_event AFTER INSERT ON ref_log
    FOR EACH ROW EXECUTE FUNCTION ckpt_ref_log_event();

CREATE FUNCTION ckpt_session_deleted_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (session, ref_kind, ref_name, op) VALUES (OLD.name, 2, '', 'delete-session');
    RETURN NULL;
END;
$$;

CREATE TRIGGER session_deleted_event AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION ckpt_session_deleted_event();
