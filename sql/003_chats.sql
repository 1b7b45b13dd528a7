-- Chats, their members, the messages not yet delivered everywhere, and a
-- cursor per device and chat.
--
-- A message is owed to a device while its seq is above the device's
-- cursor (acked) in that chat; every device of every member has a cursor
-- row, created when the device is linked or its user joins, at the chat's
-- last_seq of that moment: devices linked later and members added later
-- start from there. Every query on messages is keyed by chat_id, so the
-- table can be distributed by chat later.

CREATE TABLE IF NOT EXISTS chats (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('direct', 'group')),
    title       text,
    -- direct chats: "<smaller user id>:<larger user id>", one per pair
    direct_key  text UNIQUE,
    last_seq    bigint NOT NULL DEFAULT 0,
    -- the highest seq removed by expiry (chat_message_ttl), for notices
    expired_seq bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS members (
    chat_id    bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'member'
               CHECK (role IN ('admin', 'member')),
    joined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, user_id)
);

CREATE INDEX IF NOT EXISTS members_user_id_idx ON members (user_id);

CREATE TABLE IF NOT EXISTS messages (
    chat_id       bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    sender_user   bigint,
    sender_device bigint,                 -- the acting device for system
                                          -- messages: it is not sent them
    client_id     text,                   -- the sender's "id"
    kind          text NOT NULL CHECK (kind IN ('text', 'system')),
    body          jsonb NOT NULL,         -- {"text","media"} or {"event",...}
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, seq)
);

-- idempotent send: one message per (device, client id) while it is stored
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_idx
    ON messages (sender_device, client_id) WHERE client_id IS NOT NULL;

-- expiry sweeps by age
CREATE INDEX IF NOT EXISTS messages_created_idx ON messages (created_at);

CREATE TABLE IF NOT EXISTS cursors (
    device_id  bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    chat_id    bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    acked      bigint NOT NULL,           -- everything up to it received
    read       bigint NOT NULL DEFAULT 0, -- the user read up to it
    PRIMARY KEY (device_id, chat_id)
);

-- deletion after the last ack looks for the lowest cursor of a chat
CREATE INDEX IF NOT EXISTS cursors_chat_idx ON cursors (chat_id, acked);


-- Cursors for every device of p_user in chat p_chat, starting after the
-- chat's current last_seq (a member added now is owed what comes next).
CREATE OR REPLACE FUNCTION chat_join_cursors(p_chat bigint, p_user bigint)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO cursors (device_id, chat_id, acked)
    SELECT d.id, c.id, c.last_seq
    FROM devices d, chats c
    WHERE d.user_id = p_user AND c.id = p_chat
    ON CONFLICT (device_id, chat_id) DO NOTHING
$$;


-- A device linked now starts in each of its user's chats after the
-- chat's current last_seq (PROTOCOL.md 5.6).
CREATE OR REPLACE FUNCTION chat_device_cursors() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cursors (device_id, chat_id, acked)
    SELECT NEW.id, c.id, c.last_seq
    FROM members m JOIN chats c ON c.id = m.chat_id
    WHERE m.user_id = NEW.user_id;

    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS devices_cursors ON devices;
CREATE TRIGGER devices_cursors AFTER INSERT ON devices
    FOR EACH ROW EXECUTE FUNCTION chat_device_cursors();


-- Appends a message to a chat: the next seq is taken under the chat row's
-- lock, in the transaction that stores the message, so seqs are dense.
-- Returns the seq and the time (epoch ms).
CREATE OR REPLACE FUNCTION chat_append(p_chat bigint, p_user bigint,
                                       p_device bigint, p_client text,
                                       p_kind text, p_body jsonb,
                                       OUT out_seq bigint, OUT out_ts bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    UPDATE chats SET last_seq = last_seq + 1 WHERE id = p_chat
    RETURNING last_seq INTO out_seq;

    INSERT INTO messages (chat_id, seq, sender_user, sender_device,
                          client_id, kind, body, created_at)
    VALUES (p_chat, out_seq, p_user, p_device, p_client, p_kind, p_body,
            v_now);

    out_ts := chat_ms(v_now);
END
$$;


-- A stored message as the client sees it (PROTOCOL.md section 4, "msg"):
-- the body's fields ("text", "media", or "event" and its fields) at the
-- top level.
CREATE OR REPLACE FUNCTION chat_msg_json(m messages) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT (jsonb_build_object(
                'type', 'msg',
                'chat_id', m.chat_id::text,
                'seq', m.seq,
                'from', m.sender_user::text,
                'from_device', m.sender_device::text,
                'id', m.client_id,
                'ts', chat_ms(m.created_at),
                'kind', m.kind)
            || m.body)::text
$$;


-- Deletes the messages of p_chat up to p_upto that no device is owed any
-- more: every cursor of the chat is past them, but for the device that
-- sent each one (PROTOCOL.md 5.5). Called after an ack moves a cursor and
-- after a member leaves with cursors that held messages back.
CREATE OR REPLACE FUNCTION chat_trim(p_chat bigint, p_upto bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_deleted integer;
BEGIN
    DELETE FROM messages m
    WHERE m.chat_id = p_chat AND m.seq <= p_upto
      AND NOT EXISTS (SELECT 1 FROM cursors c
                      WHERE c.chat_id = p_chat AND c.acked < m.seq
                        AND c.device_id IS DISTINCT FROM m.sender_device);

    GET DIAGNOSTICS v_deleted = ROW_COUNT;

    RETURN v_deleted;
END
$$;
