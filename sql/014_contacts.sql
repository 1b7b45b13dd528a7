-- Contacts (docs/protocol.md, "Presence"): `last_seen: "contacts"` shows
-- a user's last seen to the people they wrote to in a direct chat, not to
-- whoever opened one with them. members.wrote says that a member has sent
-- a message in the chat (messages are deleted once delivered; the fact
-- stays); a trigger sets it, once a statement, for what it inserted.

ALTER TABLE members ADD COLUMN IF NOT EXISTS wrote boolean NOT NULL
    DEFAULT false;

UPDATE members mb SET wrote = true
WHERE NOT mb.wrote
  AND (mb.authored > 0
       OR EXISTS (SELECT 1 FROM messages m
                  WHERE m.chat_id = mb.chat_id
                    AND m.sender_user = mb.user_id AND m.kind = 'text'));

CREATE OR REPLACE FUNCTION chat_members_wrote() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE members mb SET wrote = true
    FROM (SELECT DISTINCT chat_id, sender_user FROM inserted
          WHERE kind = 'text') w
    WHERE mb.chat_id = w.chat_id AND mb.user_id = w.sender_user
      AND NOT mb.wrote;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS messages_wrote ON messages;
CREATE TRIGGER messages_wrote AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION chat_members_wrote();


-- For user p_user asking to watch each of p_ids: whether they share a
-- chat (or it is p_user), and whether p_user may see their last_seen:
-- "everyone" shows it to every watcher, "contacts" to those the user
-- wrote to in a direct chat, "nobody" to none; and who hides theirs
-- ("nobody") sees nobody's.
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
           coalesce(me.last_seen_to <> 'nobody'
                    AND (t.id = p_user
                         OR u.last_seen_to = 'everyone'
                         OR (u.last_seen_to = 'contacts'
                             AND EXISTS (
                                 SELECT 1 FROM members a
                                 JOIN chats c ON c.id = a.chat_id
                                 JOIN members b ON b.chat_id = a.chat_id
                                 WHERE c.type = 'direct'
                                   AND a.user_id = t.id AND a.wrote
                                   AND b.user_id = p_user))),
                    false)
    FROM unnest(p_ids) WITH ORDINALITY AS t(id, n)
    LEFT JOIN users u ON u.id = t.id
    LEFT JOIN users me ON me.id = p_user
    ORDER BY t.n
$$;
