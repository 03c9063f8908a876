-- Full-text search over checkpoints: the message, metadata values and the keys a checkpoint
-- wrote, gathered at commit into one column and indexed with the 'simple' configuration
-- (no stemming or stop words: agent transcripts mix code, paths and many languages).

ALTER TABLE checkpoints ADD COLUMN search_text TEXT NOT NULL DEFAULT '';

CREATE INDEX checkpoints_search ON checkpoints USING GIN (to_tsvector('simple', search_text));
