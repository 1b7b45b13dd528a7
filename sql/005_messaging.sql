-- Sending, syncing and acknowledging messages. One round trip each.

-- A text message from p_device of p_user: stored with the next seq unless
-- this device sent this client id already (then that message's seq).
-- out_status: 0 stored, 1 a resend, 2 the user is not a member.
-- For a new message, out_members are the users to publish to and out_json
-- what to publish.
CREATE OR REPLACE FUNCTION chat_send(p_chat bigint, p_user bigint,
                                     p_device bigint, p_client text,
                                     p_body jsonb,
                                     OUT out_status integer,
                                     OUT out_seq bigint, OUT out_ts bigint,
                                     OUT out_members text,
                                     OUT out_json text)
LANGUAGE plpgsql AS $$
DECLARE
    v_msg messages;
BEGIN
    PERFORM 1 FROM members WHERE chat_id = p_chat AND user_id = p_user;

    IF NOT FOUND THEN
        out_status := 2;
        RETURN;
    END IF;

    SELECT seq, chat_ms(created_at) INTO out_seq, out_ts
    FROM messages WHERE sender_device = p_device AND client_id = p_client;

    IF FOUND THEN
        out_status := 1;
        RETURN;
    END IF;

    BEGIN
        SELECT a.out_seq INTO out_seq
        FROM chat_append(p_chat, p_user, p_device, p_client, 'text',
                         p_body) a;
    EXCEPTION WHEN unique_violation THEN
        -- the same id, sent at the same time on another connection
        SELECT seq, chat_ms(created_at) INTO STRICT out_seq, out_ts
        FROM messages
        WHERE sender_device = p_device AND client_id = p_client;
        out_status := 1;
        RETURN;
    END;

    SELECT * INTO STRICT v_msg FROM messages
    WHERE chat_id = p_chat AND seq = out_seq;

    out_status := 0;
    out_ts := chat_ms(v_msg.created_at);
    out_json := chat_msg_json(v_msg);

    SELECT string_agg(user_id::text, ',') INTO out_members
    FROM members WHERE chat_id = p_chat;
END
$$;


-- Many sends in one transaction and one commit, set-based: p_sends is a
-- JSON array of [chat, user, device, client id, body], at most one send
-- of any one device (a device's sends are stored one at a time, in
-- order). The chats are locked first, in id order, so concurrent batches
-- never deadlock; each chat's last_seq moves once, by the number of its
-- new messages, which take the seqs in array order. Rows come back with
-- "i", each send's position in p_sends (from 1), and chat_send()'s
-- status: 0 stored, 1 a resend, 2 not a member.
CREATE OR REPLACE FUNCTION chat_send_batch(p_sends jsonb)
RETURNS TABLE (i bigint, out_status integer, out_seq bigint,
               out_ts bigint, out_members text, out_json text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM chats
    WHERE id IN (SELECT (e->>0)::bigint FROM jsonb_array_elements(p_sends) e)
    ORDER BY id
    FOR UPDATE;

    RETURN QUERY
    WITH s AS (
        SELECT e.ordinality AS n, (e.value->>0)::bigint AS chat,
               (e.value->>1)::bigint AS usr, (e.value->>2)::bigint AS dev,
               e.value->>3 AS cid, e.value->4 AS body
        FROM jsonb_array_elements(p_sends) WITH ORDINALITY e
    ), c AS (
        SELECT s.*,
               EXISTS (SELECT 1 FROM members m
                       WHERE m.chat_id = s.chat AND m.user_id = s.usr)
                   AS member,
               old.seq AS old_seq, chat_ms(old.created_at) AS old_ts
        FROM s
        LEFT JOIN messages old
               ON old.sender_device = s.dev AND old.client_id = s.cid
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


-- The cursors of a device: where each of its chats stands, and the
-- highest seq of each that expired.
CREATE OR REPLACE FUNCTION chat_cursors(p_device bigint)
RETURNS TABLE (chat_id bigint, acked bigint, expired_seq bigint)
LANGUAGE sql STABLE AS $$
    SELECT c.chat_id, c.acked, ch.expired_seq
    FROM cursors c JOIN chats ch ON ch.id = c.chat_id
    WHERE c.device_id = p_device
$$;


-- Up to p_limit messages owed to p_device after (p_chat, p_seq), in
-- (chat, seq) order: one page of a sync. The device's own messages are
-- included (the session counts them as delivered without sending them),
-- and with each row the chat's expired_seq, to tell an expired range.
CREATE OR REPLACE FUNCTION chat_owed(p_device bigint, p_chat bigint,
                                     p_seq bigint, p_limit integer)
RETURNS TABLE (chat_id bigint, seq bigint, own boolean, json text,
               expired_seq bigint)
LANGUAGE sql STABLE AS $$
    SELECT m.chat_id, m.seq, m.sender_device IS NOT DISTINCT FROM p_device,
           chat_msg_json(m), ch.expired_seq
    FROM cursors c
    JOIN messages m ON m.chat_id = c.chat_id AND m.seq > c.acked
    JOIN chats ch ON ch.id = c.chat_id
    WHERE c.device_id = p_device AND (m.chat_id, m.seq) > (p_chat, p_seq)
    ORDER BY m.chat_id, m.seq
    LIMIT p_limit
$$;


-- Messages of one chat after p_seq that p_device is owed: a gap fill.
CREATE OR REPLACE FUNCTION chat_fill(p_device bigint, p_chat bigint,
                                     p_seq bigint, p_limit integer)
RETURNS TABLE (chat_id bigint, seq bigint, own boolean, json text,
               expired_seq bigint)
LANGUAGE sql STABLE AS $$
    SELECT m.chat_id, m.seq, m.sender_device IS NOT DISTINCT FROM p_device,
           chat_msg_json(m), ch.expired_seq
    FROM cursors c
    JOIN messages m ON m.chat_id = c.chat_id
                   AND m.seq > greatest(c.acked, p_seq)
    JOIN chats ch ON ch.id = c.chat_id
    WHERE c.device_id = p_device AND c.chat_id = p_chat
    ORDER BY m.seq
    LIMIT p_limit
$$;


-- A cumulative ack: the cursor moves forward (never past the chat's
-- last seq), then the messages no device is owed any more are deleted.
-- Returns how many messages were deleted.
CREATE OR REPLACE FUNCTION chat_ack(p_device bigint, p_chat bigint,
                                    p_seq bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cursors c SET acked = p_seq
    FROM chats ch
    WHERE c.device_id = p_device AND c.chat_id = p_chat
      AND ch.id = p_chat AND c.acked < p_seq AND p_seq <= ch.last_seq;

    IF NOT FOUND THEN
        RETURN 0;
    END IF;

    RETURN chat_trim(p_chat, p_seq);
END
$$;


-- Expiry (chat_message_ttl): deletes up to p_limit messages older than
-- p_ttl seconds, and raises each chat's expired_seq, which syncs use to
-- tell devices what they will never get. Returns how many went.
CREATE OR REPLACE FUNCTION chat_expire(p_ttl bigint, p_limit integer)
RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM messages
        WHERE (chat_id, seq) IN (
            SELECT chat_id, seq FROM messages
            WHERE created_at < now() - make_interval(secs => p_ttl)
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        RETURNING chat_id, seq
    ), raised AS (
        UPDATE chats c SET expired_seq = greatest(c.expired_seq, g.top)
        FROM (SELECT chat_id, max(seq) AS top FROM gone GROUP BY chat_id) g
        WHERE c.id = g.chat_id
    )
    SELECT count(*)::integer FROM gone
$$;
