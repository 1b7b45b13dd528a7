-- Acks of many devices and chats in one statement, one transaction and
-- one commit (the pending acks of a worker's pass of its event loop), and
-- generic plans for the statements of every send and ack.

-- The hot functions are called with new values every time; left to
-- themselves, PL/pgSQL's plan cache keeps planning their statements anew
-- (custom plans look cheaper for the values at hand), which cost more
-- than running them. Their statements are all keyed lookups of a few
-- rows: sequential scans are off for them, since the statistics of
-- tables that churn as fast as messages and cursors (a row in, a row out)
-- say "empty" as often as not, and a plan made on that reads every dead
-- row on every call.
ALTER FUNCTION chat_trim(bigint, bigint)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION chat_trim(bigint, bigint) SET enable_seqscan = off;


-- The seq of each member's latest message in a group: whom a receipt is
-- for, once the messages are gone (receipts, 008). Not kept in direct
-- chats, where it is the other member.
ALTER TABLE members ADD COLUMN IF NOT EXISTS authored bigint NOT NULL
    DEFAULT 0;


-- chat_send_batch (005), with every lookup per send made through its
-- index (LATERAL), so that no plan hashes a whole table per batch, and
-- members.authored moved.
CREATE OR REPLACE FUNCTION chat_send_batch(p_sends jsonb)
RETURNS TABLE (i bigint, out_status integer, out_seq bigint,
               out_ts bigint, out_members text, out_json text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM 1 FROM chats
    WHERE id = ANY (ARRAY(SELECT (e->>0)::bigint
                          FROM jsonb_array_elements(p_sends) e))
    ORDER BY id
    FOR UPDATE;

    -- the senders' members rows in groups (authored moves), in the order
    -- the ack batches lock members rows in (marks, 008), so neither waits
    -- for the other in a circle
    PERFORM 1 FROM members m JOIN chats ch ON ch.id = m.chat_id
    WHERE (m.chat_id, m.user_id) IN
          (SELECT (e->>0)::bigint, (e->>1)::bigint
           FROM jsonb_array_elements(p_sends) e)
      AND ch.type = 'group'
    ORDER BY m.chat_id, m.user_id
    FOR NO KEY UPDATE OF m;

    RETURN QUERY
    WITH s AS (
        SELECT e.ordinality AS n, (e.value->>0)::bigint AS chat,
               (e.value->>1)::bigint AS usr, (e.value->>2)::bigint AS dev,
               e.value->>3 AS cid, e.value->4 AS body
        FROM jsonb_array_elements(p_sends) WITH ORDINALITY e
    ), c AS (
        SELECT s.*, mem.member IS NOT NULL AS member,
               old.seq AS old_seq, chat_ms(old.created_at) AS old_ts
        FROM s
        LEFT JOIN LATERAL (SELECT true AS member FROM members m
                           WHERE m.chat_id = s.chat AND m.user_id = s.usr)
                  mem ON true
        LEFT JOIN LATERAL (SELECT o.seq, o.created_at FROM messages o
                           WHERE o.sender_device = s.dev
                             AND o.client_id = s.cid)
                  old ON true
    ), fresh AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.chat ORDER BY c.n) AS k
        FROM c
        WHERE c.member AND c.old_seq IS NULL
    ), bump AS (
        UPDATE chats ch SET last_seq = ch.last_seq + x.cnt
        FROM (SELECT chat, count(*) AS cnt FROM fresh GROUP BY chat) x
        WHERE ch.id = x.chat
        RETURNING ch.id, ch.last_seq - x.cnt AS base
    ), ins AS (
        INSERT INTO messages (chat_id, seq, sender_user, sender_device,
                              client_id, kind, body, created_at)
        SELECT f.chat, b.base + f.k, f.usr, f.dev, f.cid, 'text', f.body,
               clock_timestamp()
        FROM fresh f JOIN bump b ON b.id = f.chat
        RETURNING *
    ), authored AS (
        UPDATE members mb SET authored = x.top
        FROM (SELECT i.chat_id, i.sender_user, max(i.seq) AS top
              FROM ins i JOIN chats ch ON ch.id = i.chat_id
              WHERE ch.type = 'group'
              GROUP BY i.chat_id, i.sender_user) x
        WHERE mb.chat_id = x.chat_id AND mb.user_id = x.sender_user
          AND mb.authored < x.top
    )
    SELECT c.n,
           CASE WHEN NOT c.member THEN 2
                WHEN c.old_seq IS NOT NULL THEN 1
                ELSE 0 END,
           coalesce(c.old_seq, ins.seq),
           coalesce(c.old_ts, chat_ms(ins.created_at)),
           CASE WHEN ins.seq IS NOT NULL THEN
               (SELECT string_agg(m.user_id::text, ',') FROM members m
                WHERE m.chat_id = c.chat)
           END,
           CASE WHEN ins.seq IS NOT NULL THEN
               chat_msg_json(ROW(ins.*)::messages)
           END
    FROM c
    LEFT JOIN ins ON ins.sender_device = c.dev AND ins.client_id = c.cid
    ORDER BY c.n;
END
$$;


-- p_devices[i] acked p_chats[i] up to p_seqs[i]. A cursor moves forward
-- only, never past the chat's last seq; then every chat with a cursor
-- moved loses the messages no device is owed any more (chat_trim's rule,
-- with its per-chat lock, taken in chat id order so that two batches
-- never wait for each other in a circle). The cursor rows are locked in
-- (device, chat) order first, for the same reason. Returns how many
-- messages were deleted.
CREATE OR REPLACE FUNCTION chat_ack_batch(p_devices bigint[],
                                          p_chats bigint[],
                                          p_seqs bigint[])
RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_chats   bigint[];
    v_upto    bigint[];
    v_deleted integer;
BEGIN
    PERFORM 1 FROM cursors c
    WHERE (c.device_id, c.chat_id) IN
          (SELECT * FROM unnest(p_devices, p_chats))
    ORDER BY c.device_id, c.chat_id
    FOR UPDATE;

    WITH a AS (
        SELECT d, ch, max(s) AS s
        FROM unnest(p_devices, p_chats, p_seqs) AS u(d, ch, s)
        GROUP BY d, ch
    ), moved AS (
        UPDATE cursors c SET acked = a.s
        FROM a, chats t
        WHERE c.device_id = a.d AND c.chat_id = a.ch AND t.id = a.ch
          AND c.acked < a.s AND a.s <= t.last_seq
        RETURNING c.chat_id, c.acked
    )
    SELECT array_agg(chat_id ORDER BY chat_id),
           array_agg(top ORDER BY chat_id)
    INTO v_chats, v_upto
    FROM (SELECT chat_id, max(acked) AS top FROM moved GROUP BY chat_id) m;

    IF v_chats IS NULL THEN
        RETURN 0;
    END IF;

    PERFORM pg_advisory_xact_lock(1, (t.ch & x'7fffffff'::bigint)::integer)
    FROM unnest(v_chats) WITH ORDINALITY AS t(ch, n)
    ORDER BY t.n;

    DELETE FROM messages m
    USING unnest(v_chats, v_upto) AS t(ch, upto)
    WHERE m.chat_id = t.ch AND m.seq <= t.upto
      AND NOT EXISTS (SELECT 1 FROM cursors c
                      WHERE c.chat_id = m.chat_id AND c.acked < m.seq
                        AND c.device_id IS DISTINCT FROM m.sender_device);

    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    RETURN v_deleted;
END
$$;


-- chat_ack (005) is replaced by chat_ack_batch.
DROP FUNCTION IF EXISTS chat_ack(bigint, bigint, bigint);
