-- Accounts: a user is a verified mobile number; each of its devices holds a
-- bearer token, of which only the SHA-256 hash is stored.

CREATE TABLE IF NOT EXISTS users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mobile     text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS devices (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    added_at   timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz
);

-- A user's devices are listed, and deleted with the user, by user_id.
CREATE INDEX IF NOT EXISTS devices_user_id_idx ON devices (user_id);
