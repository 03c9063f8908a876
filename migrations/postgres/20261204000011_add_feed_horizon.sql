-- How far collection has pruned the change feed: every event up to `pruned_through` may be
-- gone, so a watcher resuming from an older cursor is told it missed events rather than
-- silently skipping them.
CREATE TABLE feed_horizon (
    singleton      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    pruned_through BIGINT  NOT NULL
);

INSERT INTO feed_horizon (pruned_through) VALUES (0);

CREATE INDEX events_by_time ON events (created_at);
