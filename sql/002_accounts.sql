-- Accounts over HTTP: each call that writes is one statement, so one round
-- trip, and all or nothing.

-- Unix epoch milliseconds, as the API shows times.
CREATE OR REPLACE FUNCTION chat_ms(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT floor(extract(epoch FROM t) * 1000)::bigint
$$;


-- A device for user p_user, with the SHA-256 of its token, unless the user
-- has p_max devices already. Returns the new device's id, 0 when the user
-- has no room, NULL when there is no such user.
CREATE OR REPLACE FUNCTION chat_add_device(p_user bigint, p_name text,
                                           p_hash bytea, p_max integer)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_count  integer;
    v_device bigint;
BEGIN
    -- The user's row lock serialises the additions of its devices, so two
    -- links at once cannot both take the last place.
    PERFORM 1 FROM users WHERE id = p_user FOR UPDATE;

    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    SELECT count(*) INTO v_count FROM devices WHERE user_id = p_user;

    IF v_count >= p_max THEN
        RETURN 0;
    END IF;

    INSERT INTO devices (user_id, name, token_hash)
    VALUES (p_user, p_name, p_hash)
    RETURNING id INTO v_device;

    RETURN v_device;
END
$$;


-- A verified mobile number: its user, created on the first verify, and a
-- new device of it (0: the user has p_max devices; nothing is written).
CREATE OR REPLACE FUNCTION chat_verify(p_mobile text, p_name text,
                                       p_hash bytea, p_max integer,
                                       OUT out_user bigint,
                                       OUT out_device bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT id INTO out_user FROM users WHERE mobile = p_mobile;

    IF NOT FOUND THEN
        INSERT INTO users (mobile) VALUES (p_mobile)
        ON CONFLICT (mobile) DO NOTHING
        RETURNING id INTO out_user;

        -- a concurrent verify of the same number created it first
        IF out_user IS NULL THEN
            SELECT id INTO STRICT out_user FROM users
            WHERE mobile = p_mobile;
        END IF;
    END IF;

    -- 0 for a user who has no room: then nothing was written, since only
    -- a user who exists already can be full
    out_device := chat_add_device(out_user, p_name, p_hash, p_max);
END
$$;
