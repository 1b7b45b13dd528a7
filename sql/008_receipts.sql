-- Receipts (PROTOCOL.md 4): each member's delivered and read marks, the
-- privacy settings that govern receipts and presence, and when each
-- device last had the marks.

ALTER TABLE members
    ADD COLUMN IF NOT EXISTS delivered    bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS read         bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS delivered_at timestamptz,
    ADD COLUMN IF NOT EXISTS read_at      timestamptz;

ALTER TABLE users
    ADD COLUMN IF NOT EXISTS read_receipts boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS last_seen_to  text NOT NULL DEFAULT 'everyone'
        CHECK (last_seen_to IN ('everyone', 'contacts', 'nobody'));

-- the marks a device was last given (its sync, or its socket's close)
ALTER TABLE devices ADD COLUMN IF NOT EXISTS marks_seen timestamptz;

-- cursors.read (003) was never used: the read mark is the user's
ALTER TABLE cursors DROP COLUMN IF EXISTS read;


-- A member joins with both marks at the chat's last seq: what came before
-- was never theirs to receive, and "delivered to all" must not wait on
-- them.
CREATE OR REPLACE FUNCTION chat_member_marks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT last_seq INTO NEW.delivered FROM chats WHERE id = NEW.chat_id;
    NEW.delivered := coalesce(NEW.delivered, 0);
    NEW.read := NEW.delivered;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS members_marks ON members;
CREATE TRIGGER members_marks BEFORE INSERT ON members
    FOR EACH ROW EXECUTE FUNCTION chat_member_marks();


-- Who gets a receipt for user p_user's mark moving past p_from in
-- p_chat: in a group, the other members who wrote a message after p_from
-- (members.authored; the messages themselves may be gone); in a direct
-- chat, the other member. As "id,id,..." (NULL: nobody): a superset of
-- the authors of the range, as PROTOCOL.md allows. p_read: only those who
-- take read receipts.
CREATE OR REPLACE FUNCTION chat_mark_authors(p_chat bigint, p_user bigint,
                                             p_from bigint, p_read boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- PL/pgSQL, not SQL: its plan is made once per connection
    RETURN (SELECT string_agg(mb.user_id::text, ',')
            FROM members mb JOIN users u ON u.id = mb.user_id
            JOIN chats ch ON ch.id = mb.chat_id
            WHERE mb.chat_id = p_chat AND mb.user_id <> p_user
              AND (ch.type = 'direct' OR mb.authored > p_from)
              AND (NOT p_read OR u.read_receipts));
END
$$;


-- p_devices[i] acked p_chats[i] up to p_seqs[i]. A cursor moves forward
-- only, never past the chat's last seq; the users' delivered marks move
-- with them, and one row per mark moved comes back: chat, user, the new
-- mark, and the authors to tell (chat_mark_authors). Then every chat with
-- a cursor moved loses the messages no device is owed any more
-- (chat_trim's rule, with its per-chat lock, taken in chat id order so
-- that two batches never wait for each other in a circle). Cursor and
-- members rows are locked in key order first, for the same reason.
-- (An earlier draft of 007 made one returning a count.)
DROP FUNCTION IF EXISTS chat_ack_batch(bigint[], bigint[], bigint[]);

CREATE FUNCTION chat_ack_batch(p_devices bigint[], p_chats bigint[],
                               p_seqs bigint[])
RETURNS TABLE (out_chat bigint, out_user bigint, out_seq bigint,
               out_authors text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_kchats bigint[];
    v_kusers bigint[];
    v_kseqs  bigint[];
    v_chats  bigint[];
    v_upto   bigint[];
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
        RETURNING c.chat_id, c.device_id, c.acked
    ), k AS (
        SELECT m.chat_id, d.user_id, max(m.acked) AS acked
        FROM moved m JOIN devices d ON d.id = m.device_id
        GROUP BY m.chat_id, d.user_id
    )
    SELECT array_agg(chat_id ORDER BY chat_id, user_id),
           array_agg(user_id ORDER BY chat_id, user_id),
           array_agg(acked ORDER BY chat_id, user_id)
    INTO v_kchats, v_kusers, v_kseqs
    FROM k;

    IF v_kchats IS NULL THEN
        RETURN;
    END IF;

    SELECT array_agg(ch ORDER BY ch), array_agg(top ORDER BY ch)
    INTO v_chats, v_upto
    FROM (SELECT ch, max(s) AS top FROM unnest(v_kchats, v_kseqs) AS t(ch, s)
          GROUP BY ch) m;

    RETURN QUERY
    WITH old AS (
        SELECT mb.chat_id, mb.user_id, mb.delivered, k.acked
        FROM unnest(v_kchats, v_kusers, v_kseqs) AS k(chat_id, user_id, acked)
        JOIN members mb ON mb.chat_id = k.chat_id AND mb.user_id = k.user_id
        WHERE mb.delivered < k.acked
        ORDER BY mb.chat_id, mb.user_id
        FOR UPDATE OF mb
    ), raised AS (
        UPDATE members mb SET delivered = old.acked, delivered_at = now()
        FROM old
        WHERE mb.chat_id = old.chat_id AND mb.user_id = old.user_id
        RETURNING mb.chat_id, mb.user_id, old.delivered AS was,
                  old.acked AS now
    )
    SELECT r.chat_id, r.user_id, r.now,
           chat_mark_authors(r.chat_id, r.user_id, r.was, false)
    FROM raised r;

    PERFORM pg_advisory_xact_lock(1, (t.ch & x'7fffffff'::bigint)::integer)
    FROM unnest(v_chats) WITH ORDINALITY AS t(ch, n)
    ORDER BY t.n;

    DELETE FROM messages m
    USING unnest(v_chats, v_upto) AS t(ch, upto)
    WHERE m.chat_id = t.ch AND m.seq <= t.upto
      AND NOT EXISTS (SELECT 1 FROM cursors c
                      WHERE c.chat_id = m.chat_id AND c.acked < m.seq
                        AND c.device_id IS DISTINCT FROM m.sender_device);
END
$$;


-- "read": user p_user has read p_chat up to p_seq (at most its last
-- seq). Moves the read mark, and the delivered mark with it. Status 0:
-- a mark moved, 1: nothing moved, 2: not a member. out_read_authors:
-- whom to send the read receipt (NULL when the reader keeps them off).
CREATE OR REPLACE FUNCTION chat_read(p_user bigint, p_chat bigint,
                                     p_seq bigint,
                                     OUT out_status integer,
                                     OUT out_read bigint,
                                     OUT out_read_authors text,
                                     OUT out_delivered bigint,
                                     OUT out_delivered_authors text)
LANGUAGE plpgsql AS $$
DECLARE
    v_read      bigint;
    v_delivered bigint;
    v_last      bigint;
    v_receipts  boolean;
BEGIN
    SELECT mb.read, mb.delivered, c.last_seq
    INTO v_read, v_delivered, v_last
    FROM members mb JOIN chats c ON c.id = mb.chat_id
    WHERE mb.chat_id = p_chat AND mb.user_id = p_user
    FOR UPDATE OF mb;

    IF NOT FOUND THEN
        out_status := 2;
        RETURN;
    END IF;

    out_read := least(p_seq, v_last);

    IF out_read <= v_read THEN
        out_status := 1;
        RETURN;
    END IF;

    out_delivered := greatest(v_delivered, out_read);

    UPDATE members SET read = out_read, read_at = now(),
                       delivered = out_delivered,
                       delivered_at = CASE WHEN out_delivered > v_delivered
                                           THEN now() ELSE delivered_at END
    WHERE chat_id = p_chat AND user_id = p_user;

    SELECT read_receipts INTO v_receipts FROM users WHERE id = p_user;

    IF v_receipts THEN
        out_read_authors := chat_mark_authors(p_chat, p_user, v_read,
                                              true);
    END IF;

    IF out_delivered > v_delivered THEN
        out_delivered_authors := chat_mark_authors(p_chat, p_user,
                                                   v_delivered, false);
    ELSE
        out_delivered := NULL;
    END IF;

    out_status := 0;
END
$$;


-- The marks a device is to be told in its sync: in each of its user's
-- chats, every other member's delivered and read marks that moved since
-- the device last had them (all above 0 if it never had), read marks
-- only between users who both take read receipts, and its own user's
-- read mark. Then they count as had.
CREATE OR REPLACE FUNCTION chat_marks(p_device bigint)
RETURNS TABLE (out_chat bigint, out_user bigint, out_status text,
               out_seq bigint)
LANGUAGE plpgsql AS $$
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
    SELECT o.chat_id, o.user_id, 'delivered', o.delivered
    FROM members me JOIN members o ON o.chat_id = me.chat_id
    WHERE me.user_id = v_user AND o.user_id <> v_user AND o.delivered > 0
      AND (v_since IS NULL OR o.delivered_at > v_since)
    UNION ALL
    SELECT o.chat_id, o.user_id, 'read', o.read
    FROM members me JOIN members o ON o.chat_id = me.chat_id
    JOIN users u ON u.id = o.user_id
    WHERE me.user_id = v_user AND o.read > 0
      AND (v_since IS NULL OR o.read_at > v_since)
      AND (o.user_id = v_user OR (v_receipts AND u.read_receipts))
    ORDER BY 1, 2, 3;

    UPDATE devices SET marks_seen = now() WHERE id = p_device;
END
$$;
