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


-- Many sends in one statement, one transaction, one commit: p_sends is a
-- JSON array of [chat, user, device, client id, body], at most one send
-- of any one device (a device's sends are stored one at a time, in
-- order). They are stored in chat order, so that concurrent batches lock
-- chat rows in the same order and never deadlock; "i" is each send's
-- position in p_sends (from 1).
CREATE OR REPLACE FUNCTION chat_send_batch(p_sends jsonb)
RETURNS TABLE (i bigint, out_status integer, out_seq bigint,
               out_ts bigint, out_members text, out_json text)
LANGUAGE plpgsql AS $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT e.value AS s, e.ordinality AS n
             FROM jsonb_array_elements(p_sends) WITH ORDINALITY e
             ORDER BY (e.value->>0)::bigint, e.ordinality
    LOOP
        i := v.n;

        SELECT r.out_status, r.out_seq, r.out_ts, r.out_members, r.out_json
        INTO out_status, out_seq, out_ts, out_members, out_json
        FROM chat_send((v.s->>0)::bigint, (v.s->>1)::bigint,
                       (v.s->>2)::bigint, v.s->>3, v.s->4) r;

        RETURN NEXT;
    END LOOP;
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
