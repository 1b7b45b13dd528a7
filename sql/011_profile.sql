-- Profiles and group metadata (docs/protocol.md "Profile", "Group
-- icon"): a user's "about" line, and a group's icon, which is a media of
-- the asset module. Members of a group may fetch its icon for as long as
-- it is the icon, and the asset_ttl sweep keeps a media while it is one.

-- NULL: none (PATCH /v1/me {"about":""} clears it)
ALTER TABLE users ADD COLUMN IF NOT EXISTS about text
    CHECK (char_length(about) BETWEEN 1 AND 140);

-- A media that goes (its owner does) takes the icon with it.
ALTER TABLE chats ADD COLUMN IF NOT EXISTS icon text
    REFERENCES media (id) ON DELETE SET NULL;

-- media_get() and the sweep look chats up by icon, and so does every
-- delete of a media (the reference)
CREATE INDEX IF NOT EXISTS chats_icon_idx ON chats (icon)
    WHERE icon IS NOT NULL;


-- chat_json (004), with the icon: {"chat_id","type","title","icon",
-- "members":[{"user_id","role"}],"last_seq","created_at"}.
CREATE OR REPLACE FUNCTION chat_json(p_chat bigint) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'chat_id', c.id::text,
        'type', c.type,
        'title', c.title,
        'icon', c.icon,
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


-- media_get (010), and members of a chat whose icon the media is, for as
-- long as it is.
CREATE OR REPLACE FUNCTION media_get(p_user bigint, p_media text)
RETURNS TABLE (out_type text, out_size bigint)
LANGUAGE sql STABLE AS $$
    SELECT m.content_type, m.size
    FROM media m
    WHERE m.id = p_media
      AND (m.owner = p_user
           OR EXISTS (SELECT 1 FROM media_chats mc
                      JOIN members mb ON mb.chat_id = mc.chat_id
                      WHERE mc.media_id = m.id AND mb.user_id = p_user)
           OR EXISTS (SELECT 1 FROM chats c
                      JOIN members mb ON mb.chat_id = c.id
                      WHERE c.icon = m.id AND mb.user_id = p_user))
$$;


-- asset_expire (010), sparing the current icons of chats. (A sweep that
-- began before an icon was set may still take that media, if it is past
-- its TTL: the reference then removes the icon, so none dangles.)
CREATE OR REPLACE FUNCTION asset_expire(p_ttl bigint, p_limit integer)
RETURNS TABLE (out_id text)
LANGUAGE sql AS $$
    DELETE FROM media d
    WHERE d.id IN (
        SELECT x.id FROM media x
        WHERE x.created_at < now() - make_interval(secs => p_ttl)
          AND NOT EXISTS (
              SELECT 1 FROM media_chats mc
              JOIN messages m ON m.chat_id = mc.chat_id
              WHERE mc.media_id = x.id
                AND m.body->'media' @> jsonb_build_array(
                                           jsonb_build_object('media_id',
                                                              x.id)))
          AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.icon = x.id)
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED)
    RETURNING d.id
$$;


-- PATCH /v1/chats/{id}: group p_chat gets title p_title (NULL: as it is)
-- and, if p_set_icon, icon p_icon (NULL: none); admins only. The icon
-- must be an uploaded media that p_user may fetch (media_get), else
-- 'no_media' and nothing changes. Each change appends its own system
-- message, "renamed" before "icon_changed"; a value as it was appends
-- nothing. The columns of 004's writers, one row per message appended
-- (each with the chat as it is after both), or one row without one.
-- (chat_rename, of 004, is no longer called: hosts still running the
-- previous module use it until they are upgraded.)
CREATE OR REPLACE FUNCTION chat_update(p_chat bigint, p_user bigint,
                                       p_device bigint, p_title text,
                                       p_set_icon boolean, p_icon text)
RETURNS TABLE (out_status text, out_chat_id bigint, out_chat json,
               out_seq bigint, out_msg text, out_users text)
LANGUAGE plpgsql AS $$
DECLARE
    v_type  text;
    v_role  text;
    v_seqs  bigint[] := '{}';
    v_msgs  text[] := '{}';
    v_sys   record;
BEGIN
    SELECT l.out_type, l.out_role INTO v_type, v_role
    FROM chat_lock_member(p_chat, p_user) l;

    out_status := CASE WHEN v_role IS NULL THEN 'no_chat'
                       WHEN v_type = 'direct' THEN 'direct'
                       WHEN v_role <> 'admin' THEN 'forbidden'
                  END;

    IF out_status IS NULL AND p_set_icon AND p_icon IS NOT NULL THEN

        -- locked, so that the sweep (which skips locked media) does not
        -- take it before the icon is committed
        PERFORM 1 FROM media m
        WHERE m.id = p_icon AND m.uploaded_at IS NOT NULL
          AND EXISTS (SELECT 1 FROM media_get(p_user, p_icon))
        FOR KEY SHARE OF m;

        IF NOT FOUND THEN
            out_status := 'no_media';
        END IF;
    END IF;

    IF out_status IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;

    IF p_title IS NOT NULL THEN
        UPDATE chats SET title = p_title
        WHERE id = p_chat AND title IS DISTINCT FROM p_title;

        IF FOUND THEN
            SELECT s.out_seq, s.out_msg, s.out_users INTO v_sys
            FROM chat_system(p_chat, p_user, p_device,
                             jsonb_build_object('event', 'renamed',
                                                'title', p_title)) s;

            v_seqs := v_seqs || v_sys.out_seq;
            v_msgs := v_msgs || v_sys.out_msg;
            out_users := v_sys.out_users;
        END IF;
    END IF;

    IF p_set_icon THEN
        UPDATE chats SET icon = p_icon
        WHERE id = p_chat AND icon IS DISTINCT FROM p_icon;

        IF FOUND THEN
            SELECT s.out_seq, s.out_msg, s.out_users INTO v_sys
            FROM chat_system(p_chat, p_user, p_device,
                             jsonb_build_object('event', 'icon_changed',
                                                'icon', p_icon)) s;

            v_seqs := v_seqs || v_sys.out_seq;
            v_msgs := v_msgs || v_sys.out_msg;
            out_users := v_sys.out_users;
        END IF;
    END IF;

    out_status := 'ok';
    out_chat_id := p_chat;
    out_chat := chat_json(p_chat);

    IF cardinality(v_seqs) = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;

    FOR i IN 1 .. cardinality(v_seqs) LOOP
        out_seq := v_seqs[i];
        out_msg := v_msgs[i];
        RETURN NEXT;
    END LOOP;
END
$$;
