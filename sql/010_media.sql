-- Media (PROTOCOL.md 3): what was uploaded, by whom, and the chats it was
-- sent in (which outlive the messages: members may fetch it as long as
-- the media is kept). The bytes are in the blob store, under the id.

CREATE TABLE IF NOT EXISTS media (
    id           text PRIMARY KEY,        -- 128 random bits, base64url
    owner        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content_type text NOT NULL,
    size         bigint NOT NULL CHECK (size > 0),
    sha256       text,                    -- as the uploader said
    created_at   timestamptz NOT NULL DEFAULT now(),
    uploaded_at  timestamptz              -- the blob store took the PUT
);

-- the sweep of asset_ttl goes by age
CREATE INDEX IF NOT EXISTS media_created_idx ON media (created_at);

CREATE TABLE IF NOT EXISTS media_chats (
    media_id text NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    chat_id  bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    PRIMARY KEY (media_id, chat_id)
);

CREATE INDEX IF NOT EXISTS media_chats_chat_idx ON media_chats (chat_id);


-- Media p_media as user p_user may see it: the uploader, and members of a
-- chat it was sent in; no row for anyone else (or no such media).
CREATE OR REPLACE FUNCTION media_get(p_user bigint, p_media text)
RETURNS TABLE (out_type text, out_size bigint)
LANGUAGE sql STABLE AS $$
    SELECT m.content_type, m.size
    FROM media m
    WHERE m.id = p_media
      AND (m.owner = p_user
           OR EXISTS (SELECT 1 FROM media_chats mc
                      JOIN members mb ON mb.chat_id = mc.chat_id
                      WHERE mc.media_id = m.id AND mb.user_id = p_user))
$$;
