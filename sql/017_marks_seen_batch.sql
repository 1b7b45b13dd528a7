-- marks_seen for many devices in one statement (ngx_chat_receipt.c): a
-- worker gathers what its sockets wrote (at the end of a sync, when one
-- closes) so that thousands of sockets closing or syncing at once make a
-- few statements, not a query each. p_at[i] is a time in microseconds,
-- or 0 with p_ago[i]: the device last wrote that many ms ago. Rows are
-- locked in id order, so two workers' batches never wait in a circle.

CREATE OR REPLACE FUNCTION chat_marks_seen_batch(p_devices bigint[],
                                                 p_at bigint[],
                                                 p_ago bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    WITH x AS (
        SELECT t.dev,
               'epoch'::timestamptz
               + max(CASE WHEN t.at > 0 THEN t.at
                          ELSE chat_us(now()) - t.ago * 1000 END)
                 * interval '1 microsecond' AS seen
        FROM unnest(p_devices, p_at, p_ago) AS t(dev, at, ago)
        GROUP BY t.dev
    ), locked AS (
        SELECT d.id, x.seen FROM devices d JOIN x ON x.dev = d.id
        WHERE d.marks_seen IS NULL OR d.marks_seen < x.seen
        ORDER BY d.id
        FOR NO KEY UPDATE OF d
    )
    UPDATE devices d SET marks_seen = l.seen
    FROM locked l
    WHERE d.id = l.id;
END
$$;
