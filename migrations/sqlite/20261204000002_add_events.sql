-- The change feed (see the Postgres migration of the same name). SQLite has one writer at a
-- time, so ids are handed out in commit order and a reader never sees a gap it must wait on.

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session    TEXT    NOT NULL,
    -- 0 = branch, 1 = tag (as in ref_log), 2 = the session itself.
    ref_kind   INTEGER NOT NULL,
    ref_name   TEXT    NOT NULL,
    old_head   BLOB,
    new_head   BLOB,
    op         TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);


CREATE TRIGGER ref_log_event AFTER INSERT ON ref_log
BEGIN
    INSERT INTO events (session, ref_kind, ref_name, old_head, new_head, op, created_at)
        SELECT s.name, NEW.ref_kind, NEW.ref_name, NEW.old_head, NEW.new_head, NEW.op,
               NEW.created_at
            FROM sessions s WHERE s.id = NEW.session_id;
END;

CREATE TRIGGER session_deleted_event AFTER DELETE ON sessions
BEGIN
    INSERT INTO events (session, ref_kind, ref_name, op, created_at)
        VALUES (OLD.name, 2, '', 'delete-session',
                CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END;
