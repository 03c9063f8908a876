-- Seeds a PostgreSQL catalog with 1,000,000 checkpoints (50 sessions of 20,000) for read
-- benchmarks at scale: listing, filtered listing and search. The checkpoints have metadata,
-- messages and search text but empty states, so only catalog reads are meaningful.
--
--   psql postgres://…/ckpt_million -f benches/scripts/seed-million.sql     (about 20 s)
--
-- Run it on a database the server has already migrated (start checkpointd on it once).
INSERT INTO sessions (name, last_seq, checkpoint_count)
SELECT 'big-' || s, 20000, 20000 FROM generate_series(0, 49) s;

INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, generation, created_at, metadata,
                         message, manifest_root, entry_count, logical_bytes, stored_bytes, search_text)
SELECT gen_random_uuid(), s.id, i, 'main', NULL, i, now() - ((20000 - i) || ' seconds')::interval,
       jsonb_build_object('tool', 'tool-' || (i % 10), 'step', i, 'tag', 'tag-' || (i % 10)),
       'step ' || i || ' ran test-' || i || CASE WHEN i % 1000 = 0 THEN ' tokenizer fix' ELSE '' END,
       NULL, 0, 0, 0,
       'step ' || i || ' ran test ' || i || CASE WHEN i % 1000 = 0 THEN ' tokenizer fix' ELSE '' END
           || ' tool ' || (i % 10) || ' ' || i || ' tag ' || (i % 10)
FROM sessions s, generate_series(1, 20000) i
WHERE s.name LIKE 'big-%';

ANALYZE;
