-- Marks are seen once written (docs/protocol.md, "Receipts"): chat_marks
-- (008) counted the marks it read as had by the device at once, so marks
-- that a socket never wrote (it closed first, a long-poll had no room)
-- were lost. chat_marks_since reads them, oldest first, each with the
-- time it moved (out_ts) and the time of the read (out_at), in
-- microseconds since the epoch; the session calls chat_marks_seen with
-- the time up to which it wrote them all.

CREATE OR REPLACE FUNCTION chat_marks_since(p_device bigint)
RETURNS TABLE (out_chat bigint, out_user bigint, out_status text,
               out_seq bigint, out_ts bigint, out_at bigint)
LANGUAGE plpgsql STABLE
SET jit = off
AS $$
DECLARE
    v_user     bigint;
    v_since    timestamptz;
    v_receipts boolean;
BEGIN
    SELECT d.user_id, d.marks_seen, u.read_receipts
    INTO v_user, v_since, v_receipts
    FROM devices d JOIN users u ON u.id = d.user_id
    WHERE d.id = p_device;

    IF NOT FOUND THEN
        RETURN;
    END IF;

    RETURN QUERY
    SELECT x.chat_id, x.user_id, x.status, x.seq, chat_us(x.at),
           chat_us(now())
    FROM (
        SELECT o.chat_id, o.user_id, 'delivered' AS status,
               o.delivered AS seq, o.delivered_at AS at
        FROM members me JOIN members o ON o.chat_id = me.chat_id
        WHERE me.user_id = v_user AND o.user_id <> v_user
          AND o.delivered > 0
          AND (v_since IS NULL OR o.delivered_at > v_since)
        UNION ALL
        SELECT o.chat_id, o.user_id, 'read', o.read, o.read_at
        FROM members me JOIN members o ON o.chat_id = me.chat_id
        JOIN users u ON u.id = o.user_id
        WHERE me.user_id = v_user AND o.read > 0
          AND (v_since IS NULL OR o.read_at > v_since)
          AND (o.user_id = v_user OR (v_receipts AND u.read_receipts))
    ) x
    ORDER BY x.at, 1, 2, 3;
END
$$;


-- A time in microseconds since the epoch, and back: exact both ways.
CREATE OR REPLACE FUNCTION chat_us(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM t) * 1000000)::bigint
$$;


-- The marks that moved up to p_at (microseconds) are the device's:
-- marks_seen moves there, never back.
CREATE OR REPLACE FUNCTION chat_marks_seen(p_device bigint, p_at bigint)
RETURNS void
LANGUAGE sql AS $$
    UPDATE devices
    SET marks_seen = 'epoch'::timestamptz + p_at * interval '1 microsecond'
    WHERE id = p_device
      AND (marks_seen IS NULL
           OR marks_seen < 'epoch'::timestamptz
                           + p_at * interval '1 microsecond')
$$;
