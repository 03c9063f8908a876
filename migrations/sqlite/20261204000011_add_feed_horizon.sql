-- How far collection has pruned the change feed (see the Postgres migration of the same name).
CREATE TABLE feed_horizon (
    singleton      INTEGER PRIMARY KEY DEFAULT 1 CHECK (singleton = 1),
    pruned_through INTEGER NOT NULL
);

INSERT INTO feed_horizon (pruned_through) VALUES (0);

CREATE INDEX events_by_time ON events (created_at);
