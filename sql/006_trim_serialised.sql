-- chat_trim, serialised per chat.
--
-- Two devices acking the same message at once each update their own
-- cursor, then each look for messages no cursor still waits for. Under
-- READ COMMITTED neither sees the other's uncommitted cursor, so both
-- keep the message and it stays until it expires. A transaction-scoped
-- advisory lock per chat, taken after the caller moved or dropped its
-- cursor and before the DELETE takes its snapshot, makes the later of two
-- trims wait for the earlier one's commit and see its cursor. Sends do
-- not take it, so acks never wait for sends.
--
-- Advisory key space: (1, chat id's low 32 bits) is this lock; collisions
-- between chats only make two trims wait for each other.

CREATE OR REPLACE FUNCTION chat_trim(p_chat bigint, p_upto bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_deleted integer;
BEGIN
    PERFORM pg_advisory_xact_lock(1, (p_chat & x'7fffffff'::bigint)::integer);

    DELETE FROM messages m
    WHERE m.chat_id = p_chat AND m.seq <= p_upto
      AND NOT EXISTS (SELECT 1 FROM cursors c
                      WHERE c.chat_id = p_chat AND c.acked < m.seq
                        AND c.device_id IS DISTINCT FROM m.sender_device);

    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    RETURN v_deleted;
END
$$;
