-- Presence (PROTOCOL.md 4): who may watch whom, and what they see.

-- For user p_user asking to watch each of p_ids: whether they share a
-- chat (or it is p_user), and whether p_user may see their last_seen:
-- not when either of the two hides theirs ("nobody"; "contacts" is
-- everyone who shares a chat, which every watcher does).
CREATE OR REPLACE FUNCTION chat_presence_peers(p_user bigint,
                                               p_ids bigint[])
RETURNS TABLE (out_user bigint, out_shares boolean, out_last_seen boolean)
LANGUAGE sql STABLE AS $$
    SELECT t.id,
           u.id IS NOT NULL
           AND (t.id = p_user
                OR EXISTS (SELECT 1 FROM members a
                           JOIN members b ON b.chat_id = a.chat_id
                           WHERE a.user_id = p_user AND b.user_id = t.id)),
           coalesce(u.last_seen_to <> 'nobody'
                    AND me.last_seen_to <> 'nobody', false)
    FROM unnest(p_ids) WITH ORDINALITY AS t(id, n)
    LEFT JOIN users u ON u.id = t.id
    LEFT JOIN users me ON me.id = p_user
    ORDER BY t.n
$$;
