-- Idempotent creates and write leases.
--
-- A checkpoint keeps the client-chosen request id of the create that made it, unique within its
-- session, so a create retried after its reply was lost returns the first attempt's checkpoint
-- instead of making a second one, for as long as that checkpoint exists. A column rather than
-- a table of its own: one partial index entry per create, and nothing to expire.
--
-- leases fence a branch: while a lease is live, only writes carrying its token land. A token
-- only grows (every new holder gets the previous token + 1, the row outlives its holders), so
-- a holder that lost its lease can never write again with the token it had. Leases are keyed
-- by session name, not id: a lease may be taken before the session's first checkpoint.
--
-- ckpt_commit gains both checks, with two more error codes:
--   CKR01  the request id was committed before; DETAIL is that checkpoint's id
--   CKL01  a live lease refuses the write (no token, or not the current one); MESSAGE says why
-- The rest of the function is unchanged from 20261203000005_commit_function.sql, whose header
-- explains its locking.

ALTER TABLE checkpoints ADD COLUMN request_id TEXT;

CREATE UNIQUE INDEX checkpoints_by_request ON checkpoints (session_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE leases (
    session    TEXT        NOT NULL,
    branch     TEXT        NOT NULL,
    holder     TEXT        NOT NULL,
    token      BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session, branch)
);

DROP FUNCTION ckpt_commit(BIGINT, TEXT, TEXT, UUID, UUID, UUID, TEXT, TEXT, BYTEA, BIGINT, BIGINT,
                          TEXT, BYTEA[], INT2[], INT2[], INT8[], INT8[], BYTEA[], TEXT[], BYTEA[],
                          UUID, TEXT);

CREATE FUNCTION ckpt_commit(
    p_lock_key       BIGINT,
    p_session        TEXT,
    p_branch         TEXT,
    p_id             UUID,
    p_parent         UUID,
    p_merge_parent   UUID,
    p_metadata       TEXT,
    p_message        TEXT,
    p_manifest_root  BYTEA,
    p_entry_count    BIGINT,
    p_logical_bytes  BIGINT,
    p_search_text    TEXT,
    p_hashes         BYTEA[],
    p_kinds          INT2[],
    p_codecs         INT2[],
    p_raw_lens       INT8[],
    p_stored_lens    INT8[],
    p_datas          BYTEA[],
    p_object_keys    TEXT[],
    p_reused         BYTEA[],
    p_source         UUID,
    p_op             TEXT,
    p_request_id     TEXT,
    p_lease_token    BIGINT,
    OUT seq          BIGINT,
    OUT generation   BIGINT,
    OUT created_at   TIMESTAMPTZ,
    OUT stored_bytes BIGINT
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_epoch      BIGINT;
    v_session_id BIGINT;
    v_head       UUID;
    v_parent     UUID;
    v_parent_gen BIGINT;
    v_parent_session BIGINT;
    v_present    BIGINT;
    v_reused     INT;
    v_replayed   UUID;
    v_lease      leases%ROWTYPE;
BEGIN
    -- Join the collection epoch: the shared lock waits out a collector's raise, and the epoch
    -- is read by the next statement, with a snapshot taken after the lock was granted.
    PERFORM pg_advisory_xact_lock_shared(p_lock_key);
    SELECT g.epoch INTO STRICT v_epoch FROM gc_state g WHERE g.id = 1;

    -- The session row lock orders this commit against every other write to the session.
    SELECT s.id INTO v_session_id FROM sessions s WHERE s.name = p_session FOR UPDATE;
    IF v_session_id IS NULL THEN
        IF p_parent IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'CKN01',
                MESSAGE = format('parent checkpoint %s in session %s', p_parent, p_session);
        END IF;
        INSERT INTO sessions (name) VALUES (p_session)
            ON CONFLICT (name) DO NOTHING RETURNING id INTO v_session_id;
        IF v_session_id IS NULL THEN
            -- Another writer created it first and has committed: lock that row.
            SELECT s.id INTO v_session_id FROM sessions s WHERE s.name = p_session FOR UPDATE;
            IF v_session_id IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'CKU01',
                    MESSAGE = format('session %s is being deleted', p_session);
            END IF;
        END IF;
    END IF;

    -- A retried create: the checkpoint its first attempt made is the answer, not a conflict.
    IF p_request_id IS NOT NULL THEN
        SELECT c.id INTO v_replayed FROM checkpoints c
            WHERE c.session_id = v_session_id AND c.request_id = p_request_id;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'CKR01',
                MESSAGE = format('request %s was committed', p_request_id),
                DETAIL = v_replayed::text;
        END IF;
    END IF;

    -- A live lease admits only writes carrying its token. FOR SHARE holds the lease row, so
    -- a takeover waits for this commit and the next holder's token fences every later one.
    SELECT * INTO v_lease FROM leases l
        WHERE l.session = p_session AND l.branch = p_branch FOR SHARE;
    IF p_lease_token IS NOT NULL THEN
        IF v_lease.token IS DISTINCT FROM p_lease_token OR v_lease.expires_at <= now() THEN
            RAISE EXCEPTION USING ERRCODE = 'CKL01',
                MESSAGE = format('lease token %s on branch %s is not current', p_lease_token,
                                 p_branch);
        END IF;
    ELSIF v_lease.expires_at > now() THEN
        RAISE EXCEPTION USING ERRCODE = 'CKL01',
            MESSAGE = format('branch %s is leased by %s until %s; writes must carry its token',
                             p_branch, v_lease.holder, v_lease.expires_at);
    END IF;

    SELECT b.head INTO v_head FROM branches b
        WHERE b.session_id = v_session_id AND b.name = p_branch;
    IF v_head IS NOT NULL AND v_head IS DISTINCT FROM p_parent THEN
        RAISE EXCEPTION USING ERRCODE = 'CKH01',
            MESSAGE = format('branch %s has moved', p_branch), DETAIL = v_head::text;
    END IF;

    generation := 1;
    FOREACH v_parent IN ARRAY ARRAY[p_parent, p_merge_parent] LOOP
        CONTINUE WHEN v_parent IS NULL;
        -- By id alone, the session compared after: with the session in the WHERE clause, a
        -- generic plan cached while the table was small scans the whole session by the
        -- (session_id, branch, seq) index, a cost that grew with every checkpoint.
        SELECT c.generation, c.session_id INTO v_parent_gen, v_parent_session FROM checkpoints c
            WHERE c.id = v_parent;
        IF NOT FOUND OR v_parent_session <> v_session_id THEN
            RAISE EXCEPTION USING ERRCODE = 'CKN01',
                MESSAGE = format('parent checkpoint %s in session %s', v_parent, p_session);
        END IF;
        generation := greatest(generation, v_parent_gen + 1);
    END LOOP;

    UPDATE sessions s SET last_seq = s.last_seq + 1, checkpoint_count = s.checkpoint_count + 1,
                          updated_at = now()
        WHERE s.id = v_session_id RETURNING s.last_seq INTO seq;

    -- New blobs, stamped with the epoch. A row already there is stamped instead (its row lock
    -- orders this commit against a sweep deleting it); `xmax = 0` tells an inserted row from
    -- an updated one, and only inserted rows count as stored.
    WITH written AS (
        INSERT INTO chunks (hash, kind, codec, raw_len, stored_len, data, object_key,
                            touched_epoch)
        SELECT h, k, c, r, s, d, o, v_epoch
            FROM UNNEST(p_hashes, p_kinds, p_codecs, p_raw_lens, p_stored_lens, p_datas,
                        p_object_keys) AS u(h, k, c, r, s, d, o)
        ON CONFLICT (hash) DO UPDATE SET touched_epoch = EXCLUDED.touched_epoch
            WHERE chunks.touched_epoch < EXCLUDED.touched_epoch
        RETURNING chunks.stored_len, xmax = 0 AS inserted)
    SELECT COALESCE(SUM(w.stored_len) FILTER (WHERE w.inserted), 0)::int8 INTO stored_bytes
        FROM written w;

    -- Blobs deduplicated against the registry: stamp them, and fail when a sweep removed any
    -- since they were looked up. Rows already stamped with this epoch are only counted.
    v_reused := coalesce(cardinality(p_reused), 0);
    IF v_reused > 0 THEN
        WITH stamped AS (
            UPDATE chunks ch SET touched_epoch = v_epoch
                WHERE ch.hash = ANY(p_reused) AND ch.touched_epoch < v_epoch RETURNING 1)
        SELECT (SELECT count(*) FROM stamped)
             + (SELECT count(*) FROM chunks ch
                    WHERE ch.hash = ANY(p_reused) AND ch.touched_epoch >= v_epoch)
            INTO v_present;
        IF v_present <> v_reused THEN
            RAISE EXCEPTION USING ERRCODE = 'CKA01',
                MESSAGE = 'reused blobs were collected', DETAIL = (v_reused - v_present)::text;
        END IF;
    END IF;

    -- A fork holds its source checkpoint against deletion until this commit ends.
    IF p_source IS NOT NULL THEN
        PERFORM 1 FROM checkpoints c WHERE c.id = p_source FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'CKN01',
                MESSAGE = format('checkpoint %s', p_source);
        END IF;
    END IF;

    INSERT INTO checkpoints (id, session_id, seq, branch, parent_id, merge_parent_id,
                             generation, metadata, message, manifest_root, entry_count,
                             logical_bytes, stored_bytes, search_text, request_id)
        VALUES (p_id, v_session_id, seq, p_branch, p_parent, p_merge_parent, generation,
                p_metadata::jsonb, p_message, p_manifest_root, p_entry_count, p_logical_bytes,
                stored_bytes, p_search_text, p_request_id)
        RETURNING checkpoints.created_at INTO created_at;

    INSERT INTO branches (session_id, name, head) VALUES (v_session_id, p_branch, p_id)
        ON CONFLICT (session_id, name) DO UPDATE SET head = EXCLUDED.head, updated_at = now();

    INSERT INTO ref_log (session_id, ref_kind, ref_name, old_head, new_head, op)
        VALUES (v_session_id, 0, p_branch, p_parent, p_id, p_op);
END;
$$;
