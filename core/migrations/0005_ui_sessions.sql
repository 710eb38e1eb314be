-- Browser sessions of the built-in chat UI: a token is exchanged once for a random session id,
-- kept in an httpOnly cookie. Only the id's SHA-256 is stored. A session lives no longer than the
-- token it was opened with: revoking or expiring the token ends it (see api/store/sessions.py).
-- This file goes through str.format: literal braces are doubled.
CREATE TABLE ui_sessions (
    id           bigserial PRIMARY KEY,
    session_hash text NOT NULL UNIQUE,  -- SHA-256 hex of the cookie's value
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_id     bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ui_sessions_user ON ui_sessions (user_id);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
