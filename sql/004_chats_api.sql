-- Chats over HTTP (PROTOCOL.md section 2): each call that writes is one
-- function, so one round trip, and all or nothing.
--
-- A change to an existing chat first takes the chat's row lock, the lock
-- chat_append() takes to number a message: membership changes are
-- serialised with each other and with the messages around them, so a
-- member added gets cursors at exactly the seq before the system message
-- announcing it, and a member removed is owed nothing stored after it.
--
-- The writers answer with the same columns:
--   out_status   'ok', or why nothing was done: 'self', 'no_user',
--                'no_chat', 'no_member', 'direct', 'forbidden', 'full'
--   out_chat_id  the chat
--   out_chat     the chat as the API shows it (chat_json), after the call
--   out_seq, out_msg
--                the seq of the system message appended, if one was (else
--                NULL), and the "msg" to publish (chat_msg_json, of
--                005_messaging.sql: what a device's sync would send)
--   out_users    the members to publish it to, "id,id,..."


-- A chat as the API shows it: {"chat_id","type","title","members":
-- [{"user_id","role"}],"last_seq","created_at"}, members in the order they
-- joined (ties, as among a group's founders, by user id).
CREATE OR REPLACE FUNCTION chat_json(p_chat bigint) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'chat_id', c.id::text,
        'type', c.type,
        'title', c.title,
        'members', (SELECT coalesce(json_agg(json_build_object(
                                        'user_id', m.user_id::text,
                                        'role', m.role)
                                    ORDER BY m.joined_at, m.user_id),
                                    '[]'::json)
                    FROM members m WHERE m.chat_id = c.id),
        'last_seq', c.last_seq,
        'created_at', chat_ms(c.created_at))
    FROM chats c
    WHERE c.id = p_chat
$$;


-- Locks chat p_chat (for the rest of the transaction) and returns its
-- type and p_user's role in it; the role is NULL when there is no such
-- chat or p_user is not a member, which callers answer alike.
CREATE OR REPLACE FUNCTION chat_lock_member(p_chat bigint, p_user bigint,
                                            OUT out_type text,
                                            OUT out_role text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT type INTO out_type FROM chats WHERE id = p_chat FOR UPDATE;

    SELECT role INTO out_role FROM members
    WHERE chat_id = p_chat AND user_id = p_user;
END
$$;


-- A system message (kind 'system', no client id) about what p_user did:
-- appended after the change it reports; its "msg", and the members it goes
-- to: everyone who is a member now. No socket sent it, so every device of
-- every member is sent it, the acting one too (PROTOCOL.md section 2):
-- it has no sender device (p_device is kept for the callers' symmetry).
CREATE OR REPLACE FUNCTION chat_system(p_chat bigint, p_user bigint,
                                       p_device bigint, p_body jsonb,
                                       OUT out_seq bigint,
                                       OUT out_msg text,
                                       OUT out_users text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.out_seq INTO out_seq
    FROM chat_append(p_chat, p_user, NULL, NULL, 'system', p_body) a;

    SELECT chat_msg_json(m) INTO STRICT out_msg
    FROM messages m WHERE m.chat_id = p_chat AND m.seq = out_seq;

    SELECT string_agg(user_id::text, ',' ORDER BY user_id) INTO out_users
    FROM members WHERE chat_id = p_chat;
END
$$;


-- The direct chat of p_user and p_peer, created on first use; no system
-- message. Two users asking for it at once get the same chat: the second
-- insert waits for the first and then finds its row.
CREATE OR REPLACE FUNCTION chat_create_direct(p_user bigint, p_peer bigint,
                                              OUT out_status text,
                                              OUT out_chat_id bigint,
                                              OUT out_chat json)
LANGUAGE plpgsql AS $$
DECLARE
    v_key text := least(p_user, p_peer) || ':' || greatest(p_user, p_peer);
BEGIN
    IF p_peer = p_user THEN
        out_status := 'self';
        RETURN;
    END IF;

    PERFORM 1 FROM users WHERE id = p_peer;

    IF NOT FOUND THEN
        out_status := 'no_user';
        RETURN;
    END IF;

    INSERT INTO chats (type, direct_key) VALUES ('direct', v_key)
    ON CONFLICT (direct_key) DO NOTHING
    RETURNING id INTO out_chat_id;

    IF out_chat_id IS NULL THEN
        SELECT id INTO STRICT out_chat_id FROM chats WHERE direct_key = v_key;

    ELSE
        INSERT INTO members (chat_id, user_id)
        VALUES (out_chat_id, p_user), (out_chat_id, p_peer);

        PERFORM chat_join_cursors(out_chat_id, p_user);
        PERFORM chat_join_cursors(out_chat_id, p_peer);
    END IF;

    out_status := 'ok';
    out_chat := chat_json(out_chat_id);
END
$$;


-- A group titled p_title of p_user (its admin) and p_members (duplicates
-- and p_user among them ignored), at most p_max in all; then the
-- "created" message, after the cursors, so every member is owed it.
CREATE OR REPLACE FUNCTION chat_create_group(p_user bigint, p_device bigint,
                                             p_title text,
                                             p_members bigint[],
                                             p_max bigint,
                                             OUT out_status text,
                                             OUT out_chat_id bigint,
                                             OUT out_chat json,
                                             OUT out_seq bigint,
                                             OUT out_msg text,
                                             OUT out_users text)
LANGUAGE plpgsql AS $$
DECLARE
    v_members bigint[];
BEGIN
    SELECT array_agg(DISTINCT u) INTO v_members
    FROM unnest(p_members || p_user) u;

    IF cardinality(v_members) > p_max THEN
        out_status := 'full';
        RETURN;
    END IF;

    IF (SELECT count(*) FROM users WHERE id = ANY (v_members))
       < cardinality(v_members)
    THEN
        out_status := 'no_user';
        RETURN;
    END IF;

    INSERT INTO chats (type, title) VALUES ('group', p_title)
    RETURNING id INTO out_chat_id;

    INSERT INTO members (chat_id, user_id, role)
    SELECT out_chat_id, u,
           CASE WHEN u = p_user THEN 'admin' ELSE 'member' END
    FROM unnest(v_members) u;

    PERFORM chat_join_cursors(out_chat_id, u) FROM unnest(v_members) u;

    SELECT s.out_seq, s.out_msg, s.out_users INTO out_seq, out_msg, out_users
    FROM chat_system(out_chat_id, p_user, p_device,
                     jsonb_build_object('event', 'created',
                                        'title', p_title)) s;

    out_status := 'ok';
    out_chat := chat_json(out_chat_id);
END
$$;


-- Renames group p_chat (admins only); the same title again changes
-- nothing and appends nothing.
CREATE OR REPLACE FUNCTION chat_rename(p_chat bigint, p_user bigint,
                                       p_device bigint, p_title text,
                                       OUT out_status text,
                                       OUT out_chat_id bigint,
                                       OUT out_chat json,
                                       OUT out_seq bigint,
                                       OUT out_msg text,
                                       OUT out_users text)
LANGUAGE plpgsql AS $$
DECLARE
    v_type  text;
    v_role  text;
BEGIN
    SELECT l.out_type, l.out_role INTO v_type, v_role
    FROM chat_lock_member(p_chat, p_user) l;

    out_status := CASE WHEN v_role IS NULL THEN 'no_chat'
                       WHEN v_type = 'direct' THEN 'direct'
                       WHEN v_role <> 'admin' THEN 'forbidden'
                  END;

    IF out_status IS NOT NULL THEN
        RETURN;
    END IF;

    UPDATE chats SET title = p_title
    WHERE id = p_chat AND title IS DISTINCT FROM p_title;

    IF FOUND THEN
        SELECT s.out_seq, s.out_msg, s.out_users
        INTO out_seq, out_msg, out_users
        FROM chat_system(p_chat, p_user, p_device,
                         jsonb_build_object('event', 'renamed',
                                            'title', p_title)) s;
    END IF;

    out_status := 'ok';
    out_chat_id := p_chat;
    out_chat := chat_json(p_chat);
END
$$;


-- Adds p_member to group p_chat (admins only), unless the group holds
-- p_max members; a member already changes nothing. The new member's
-- devices get cursors at the current last_seq, then "member_added" is
-- appended: it is the first message they are owed.
CREATE OR REPLACE FUNCTION chat_add_member(p_chat bigint, p_user bigint,
                                           p_device bigint,
                                           p_member bigint,
                                           p_max bigint,
                                           OUT out_status text,
                                           OUT out_chat_id bigint,
                                           OUT out_chat json,
                                           OUT out_seq bigint,
                                           OUT out_msg text,
                                           OUT out_users text)
LANGUAGE plpgsql AS $$
DECLARE
    v_type  text;
    v_role  text;
BEGIN
    SELECT l.out_type, l.out_role INTO v_type, v_role
    FROM chat_lock_member(p_chat, p_user) l;

    out_status := CASE WHEN v_role IS NULL THEN 'no_chat'
                       WHEN v_type = 'direct' THEN 'direct'
                       WHEN v_role <> 'admin' THEN 'forbidden'
                  END;

    IF out_status IS NOT NULL THEN
        RETURN;
    END IF;

    PERFORM 1 FROM users WHERE id = p_member;

    IF NOT FOUND THEN
        out_status := 'no_user';
        RETURN;
    END IF;

    out_chat_id := p_chat;

    PERFORM 1 FROM members WHERE chat_id = p_chat AND user_id = p_member;

    IF FOUND THEN
        out_status := 'ok';
        out_chat := chat_json(p_chat);
        RETURN;
    END IF;

    IF (SELECT count(*) FROM members WHERE chat_id = p_chat) >= p_max THEN
        out_status := 'full';
        RETURN;
    END IF;

    INSERT INTO members (chat_id, user_id) VALUES (p_chat, p_member);

    PERFORM chat_join_cursors(p_chat, p_member);

    SELECT s.out_seq, s.out_msg, s.out_users INTO out_seq, out_msg, out_users
    FROM chat_system(p_chat, p_user, p_device,
                     jsonb_build_object('event', 'member_added',
                                        'user_id', p_member::text,
                                        'by', p_user::text)) s;

    out_status := 'ok';
    out_chat := chat_json(p_chat);
END
$$;


-- Removes p_member from group p_chat: an admin may remove anyone, a
-- member only themselves. The member's cursors go first (they are owed
-- nothing more, PROTOCOL.md 5.1), then "member_removed" is appended for
-- those who stay. A group left without an admin gets its longest-standing
-- member as admin; a group left empty is deleted with its messages.
CREATE OR REPLACE FUNCTION chat_remove_member(p_chat bigint, p_user bigint,
                                              p_device bigint,
                                              p_member bigint,
                                              OUT out_status text,
                                              OUT out_chat_id bigint,
                                              OUT out_chat json,
                                              OUT out_seq bigint,
                                              OUT out_msg text,
                                              OUT out_users text)
LANGUAGE plpgsql AS $$
DECLARE
    v_type     text;
    v_role     text;
    v_removed  text;
BEGIN
    SELECT l.out_type, l.out_role INTO v_type, v_role
    FROM chat_lock_member(p_chat, p_user) l;

    out_status := CASE WHEN v_role IS NULL THEN 'no_chat'
                       WHEN v_type = 'direct' THEN 'direct'
                       WHEN v_role <> 'admin' AND p_member <> p_user
                           THEN 'forbidden'
                  END;

    IF out_status IS NOT NULL THEN
        RETURN;
    END IF;

    DELETE FROM members WHERE chat_id = p_chat AND user_id = p_member
    RETURNING role INTO v_removed;

    IF NOT FOUND THEN
        out_status := 'no_member';
        RETURN;
    END IF;

    DELETE FROM cursors c USING devices d
    WHERE c.chat_id = p_chat AND c.device_id = d.id
          AND d.user_id = p_member;

    -- what only the leaver was still owed goes now
    PERFORM chat_trim(p_chat, (SELECT last_seq FROM chats WHERE id = p_chat));

    out_status := 'ok';
    out_chat_id := p_chat;

    IF NOT EXISTS (SELECT 1 FROM members WHERE chat_id = p_chat) THEN
        DELETE FROM chats WHERE id = p_chat;
        RETURN;
    END IF;

    IF v_removed = 'admin'
       AND NOT EXISTS (SELECT 1 FROM members
                       WHERE chat_id = p_chat AND role = 'admin')
    THEN
        UPDATE members SET role = 'admin'
        WHERE chat_id = p_chat
              AND user_id = (SELECT user_id FROM members
                             WHERE chat_id = p_chat
                             ORDER BY joined_at, user_id
                             LIMIT 1);
    END IF;

    SELECT s.out_seq, s.out_msg, s.out_users INTO out_seq, out_msg, out_users
    FROM chat_system(p_chat, p_user, p_device,
                     jsonb_build_object('event', 'member_removed',
                                        'user_id', p_member::text,
                                        'by', p_user::text)) s;

    out_chat := chat_json(p_chat);
END
$$;
