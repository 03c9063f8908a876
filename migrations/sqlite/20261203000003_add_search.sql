-- Full-text search over checkpoints: the message, metadata values and the keys a checkpoint
-- wrote, gathered at commit into one column and indexed by FTS5, kept in step by triggers.

ALTER TABLE checkpoints ADD COLUMN search_text TEXT NOT NULL DEFAULT '';

CREATE VIRTUAL TABLE checkpoint_search USING fts5 (
    search_text,
    content = 'checkpoints',
    content_rowid = 'rowid',
    tokenize = 'unicode61'
);

CREATE TRIGGER checkpoints_search_insert AFTER INSERT ON checkpoints BEGIN
    INSERT INTO checkpoint_search (rowid, search_text) VALUES (new.rowid, new.search_text);
END;

CREATE TRIGGER checkpoints_search_delete AFTER DELETE ON checkpoints BEGIN
    INSERT INTO checkpoint_search (checkpoint_search, rowid, search_text)
    VALUES ('delete', old.rowid, old.search_text);
END;
