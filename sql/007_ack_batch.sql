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


-- chat_send_batch gets the same settings with its new version (010).


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
