-- A watch of a user whose last seen is for "contacts" is decided when it
-- begins (chat_presence_peers, 014); the user's first message in a direct
-- chat makes a contact of the other member, whose watch must learn it.
-- chat_send_contacts() is chat_send_batch() that also names, for each
-- message stored, the sender when that message may be their first in a
-- direct chat and they show last seen to "contacts": the session then
-- asks the sender's watchers to check again (docs/protocol.md,
-- "Presence").  wrote only goes from false to true, so reading it before
-- the batch may name a sender twice, never miss one.

CREATE OR REPLACE FUNCTION chat_send_contacts(p_sends jsonb)
RETURNS TABLE (i bigint, out_status integer, out_seq bigint,
               out_ts bigint, out_members text, out_json text,
               out_contact text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
DECLARE
    v_first bigint[];
BEGIN
    SELECT array_agg(e.n) INTO v_first
    FROM jsonb_array_elements(p_sends) WITH ORDINALITY AS e(v, n)
    JOIN members m ON m.chat_id = (e.v->>0)::bigint
                  AND m.user_id = (e.v->>1)::bigint
    JOIN chats c ON c.id = m.chat_id
    JOIN users u ON u.id = m.user_id
    WHERE NOT m.wrote AND c.type = 'direct'
      AND u.last_seen_to = 'contacts';

    RETURN QUERY
    SELECT b.i, b.out_status, b.out_seq, b.out_ts, b.out_members,
           b.out_json,
           CASE WHEN b.out_status = 0 AND b.i = ANY (v_first)
                THEN p_sends->(b.i::int - 1)->>1 END
    FROM chat_send_batch(p_sends) b;
END
$$;
