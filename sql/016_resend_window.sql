-- Resends outlive deletion (docs/protocol.md, "Messages"). A sender
-- whose "sent" was lost resends by the same id; if every recipient acked
-- the message meanwhile it is deleted, and the resend was stored anew
-- under a new seq: the same message twice for every client that trusts
-- seqs. Each deleted message now leaves (sender device, client id) ->
-- (chat, seq, created_at) in sent_ids, without its body, for
-- chat_resend_window; the send batch answers a resend found there with
-- the original seq and ts, as it does for a stored one.
--
-- A resend of a message still stored is published again. Its first
-- "sent" may never have been answered: the statement timed out or
-- PostgreSQL went down after the commit, so the worker answered
-- "unavailable" and published nothing, and the recipients would get the
-- message only at their next sync or gap fill. The batch answers such a
-- resend with the message and its members, as for a new one; devices
-- that have it drop it by its seq. A resend of a deleted message has
-- nothing to publish: every device acked it.
--
-- One trigger on messages catches every way a message goes (trim after
-- acks and reads, expiry, a chat removed), so no deleting function has to
-- remember it. It is a statement trigger over the transition table: one
-- INSERT a DELETE, however many rows it took. The expiry sweep forgets
-- rows past the window (chat_forget_sent), in batches, oldest first; a
-- BRIN index on gone_at serves it, as rows arrive in gone_at order.

CREATE TABLE IF NOT EXISTS sent_ids (
    sender_device bigint NOT NULL,
    client_id     text NOT NULL,
    chat_id       bigint NOT NULL,
    seq           bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    gone_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender_device, client_id)
);

CREATE INDEX IF NOT EXISTS sent_ids_gone_idx
    ON sent_ids USING brin (gone_at);


CREATE OR REPLACE FUNCTION chat_keep_sent() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sent_ids (sender_device, client_id, chat_id, seq,
                          created_at)
    SELECT g.sender_device, g.client_id, g.chat_id, g.seq, g.created_at
    FROM gone g
    WHERE g.client_id IS NOT NULL AND g.sender_device IS NOT NULL
    ON CONFLICT (sender_device, client_id) DO UPDATE
        SET chat_id = excluded.chat_id, seq = excluded.seq,
            created_at = excluded.created_at, gone_at = excluded.gone_at;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS messages_keep_sent ON messages;
CREATE TRIGGER messages_keep_sent
    AFTER DELETE ON messages
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION chat_keep_sent();


-- the message a device sent under p_client: stored, or deleted within
-- the window; its chat, seq and time, and whether it is still stored
CREATE OR REPLACE FUNCTION chat_sent_earlier(p_device bigint, p_client text)
RETURNS TABLE (chat_id bigint, seq bigint, created_at timestamptz,
               stored boolean)
LANGUAGE sql STABLE AS $$
    (SELECT o.chat_id, o.seq, o.created_at, true FROM messages o
     WHERE o.sender_device = p_device AND o.client_id = p_client)
    UNION ALL
    (SELECT g.chat_id, g.seq, g.created_at, false FROM sent_ids g
     WHERE g.sender_device = p_device AND g.client_id = p_client)
    LIMIT 1
$$;


-- forgets up to p_limit ids deleted more than p_window seconds ago;
-- returns how many went
CREATE OR REPLACE FUNCTION chat_forget_sent(p_window bigint,
                                            p_limit integer)
RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM sent_ids
        WHERE ctid IN (
            SELECT ctid FROM sent_ids
            WHERE gone_at < now() - make_interval(secs => p_window)
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$$;


-- chat_send_batch as in 012, the earlier send looked up by
-- chat_sent_earlier(), which also says whether it is still stored; and
-- the members rows a first message sets "wrote" on are locked with the
-- others, in order (PostgreSQL logged deadlocks with the ack batches under
-- load: the trigger updated them in the order the messages came)

CREATE OR REPLACE FUNCTION chat_send_batch(p_sends jsonb)
RETURNS TABLE (i bigint, out_status integer, out_seq bigint,
               out_ts bigint, out_members text, out_json text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    -- the senders' devices: an unlink waits for this transaction, or this
    -- one sees the device gone
    PERFORM 1 FROM devices
    WHERE id = ANY (ARRAY(SELECT (e->>2)::bigint
                          FROM jsonb_array_elements(p_sends) e))
    ORDER BY id
    FOR KEY SHARE;

    PERFORM 1 FROM chats
    WHERE id = ANY (ARRAY(SELECT (e->>0)::bigint
                          FROM jsonb_array_elements(p_sends) e))
    ORDER BY id
    FOR UPDATE;

    -- the senders' members rows that the batch updates: in groups
    -- (authored moves), and wherever it is their first message (wrote,
    -- the trigger of 014), in the order the ack batches lock members rows
    -- in (marks, 008), so neither waits for the other in a circle
    PERFORM 1 FROM members m JOIN chats ch ON ch.id = m.chat_id
    WHERE (m.chat_id, m.user_id) IN
          (SELECT (e->>0)::bigint, (e->>1)::bigint
           FROM jsonb_array_elements(p_sends) e)
      AND (ch.type = 'group' OR NOT m.wrote)
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
               EXISTS (SELECT 1 FROM devices d
                       WHERE d.id = s.dev AND d.user_id = s.usr) AS linked,
               old.seq AS old_seq, chat_ms(old.created_at) AS old_ts,
               old.chat_id AS old_chat, old.stored AS old_stored,
               md.ok AS media_ok, md.list AS media
        FROM s
        -- LIMIT 1: not flattened into a join, but an index lookup a send
        LEFT JOIN LATERAL (SELECT true AS member FROM members m
                           WHERE m.chat_id = s.chat AND m.user_id = s.usr
                           LIMIT 1)
                  mem ON true
        LEFT JOIN LATERAL chat_sent_earlier(s.dev, s.cid) old ON true
        LEFT JOIN LATERAL (
            SELECT count(x.id) = count(*) AS ok,
                   jsonb_agg(jsonb_build_object('media_id', x.id,
                                                'content_type',
                                                x.content_type,
                                                'size', x.size)
                             ORDER BY l.n) AS list
            FROM jsonb_array_elements_text(s.body->'media')
                 WITH ORDINALITY AS l(id, n)
            LEFT JOIN LATERAL (
                SELECT d.id, d.content_type, d.size FROM media d
                WHERE d.id = l.id AND d.uploaded_at IS NOT NULL
                  AND (d.owner = s.usr
                       OR EXISTS (SELECT 1 FROM media_chats mc
                                  JOIN members mb ON mb.chat_id = mc.chat_id
                                  WHERE mc.media_id = d.id
                                    AND mb.user_id = s.usr))) x ON true
            WHERE s.body ? 'media')
                  md ON true
    ), fresh AS (
        SELECT c.*, row_number() OVER (PARTITION BY c.chat ORDER BY c.n) AS k
        FROM c
        WHERE c.linked AND c.member AND c.old_seq IS NULL
          AND coalesce(c.media_ok, true)
    ), bump AS (
        UPDATE chats ch SET last_seq = ch.last_seq + x.cnt
        FROM (SELECT chat, count(*) AS cnt FROM fresh GROUP BY chat) x
        WHERE ch.id = x.chat
        RETURNING ch.id, ch.last_seq - x.cnt AS base
    ), ins AS (
        INSERT INTO messages (chat_id, seq, sender_user, sender_device,
                              client_id, kind, body, created_at)
        SELECT f.chat, b.base + f.k, f.usr, f.dev, f.cid, 'text',
               CASE WHEN f.media IS NULL THEN f.body
                    ELSE f.body || jsonb_build_object('media', f.media) END,
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
    ), shared AS (
        INSERT INTO media_chats (media_id, chat_id)
        SELECT DISTINCT x->>'media_id', i.chat_id
        FROM ins i, jsonb_array_elements(i.body->'media') x
        WHERE i.body ? 'media'
        ON CONFLICT DO NOTHING
    )
    SELECT c.n,
           CASE WHEN NOT c.linked THEN 4
                WHEN NOT c.member THEN 2
                WHEN c.old_seq IS NOT NULL THEN 1
                WHEN NOT coalesce(c.media_ok, true) THEN 3
                ELSE 0 END,
           coalesce(c.old_seq, ins.seq),
           coalesce(c.old_ts, chat_ms(ins.created_at)),
           CASE WHEN ins.seq IS NOT NULL
                     OR (c.old_stored AND c.old_chat = c.chat) THEN
               (SELECT string_agg(m.user_id::text, ',') FROM members m
                WHERE m.chat_id = coalesce(c.old_chat, c.chat))
           END,
           CASE WHEN ins.seq IS NOT NULL THEN
               chat_msg_json(ROW(ins.*)::messages)
                WHEN c.old_stored AND c.old_chat = c.chat THEN
               (SELECT chat_msg_json(o) FROM messages o
                WHERE o.chat_id = c.old_chat AND o.seq = c.old_seq)
           END
    FROM c
    LEFT JOIN ins ON ins.sender_device = c.dev AND ins.client_id = c.cid
    ORDER BY c.n;
END
$$;
