-- Access control: collections with an owner, read grants to users and groups, and the request log.
-- A collection without an owner (a watched folder's, until an admin gives it one) is readable by
-- admins and by whoever is granted it. The group 'everyone' holds every user.
-- This file goes through str.format: literal braces are doubled.

CREATE TABLE collections (
    name       text PRIMARY KEY,
    owner_id   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_groups (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_name text NOT NULL,
    PRIMARY KEY (user_id, group_name)
);

CREATE TABLE collection_grants (
    id         bigserial PRIMARY KEY,
    collection text NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
    user_id    bigint REFERENCES users (id) ON DELETE CASCADE,
    group_name text,
    granted_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (group_name IS NULL))
);
CREATE UNIQUE INDEX collection_grants_user ON collection_grants (collection, user_id)
    WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX collection_grants_group ON collection_grants (collection, group_name)
    WHERE group_name IS NOT NULL;

-- every collection a document names exists as a row, whichever process wrote the document
INSERT INTO collections (name) SELECT DISTINCT collection FROM documents ON CONFLICT DO NOTHING;

CREATE FUNCTION documents_collection_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO collections (name) VALUES (NEW.collection) ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;

CREATE TRIGGER documents_collection_row BEFORE INSERT OR UPDATE OF collection ON documents
    FOR EACH ROW EXECUTE FUNCTION documents_collection_row();

-- what one user may read: owned, ownerless for admins, granted to them or to a group of theirs
CREATE FUNCTION readable_collections(uid bigint) RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT c.name FROM collections c JOIN users u ON u.id = uid
    WHERE NOT u.disabled AND (
        c.owner_id = uid
        OR (c.owner_id IS NULL AND u.role = 'admin')
        OR EXISTS (
            SELECT 1 FROM collection_grants g
            WHERE g.collection = c.name AND (
                g.user_id = uid
                OR g.group_name = 'everyone'
                OR g.group_name IN (SELECT group_name FROM user_groups WHERE user_id = uid)
            )
        )
    )
$$;

CREATE TABLE request_log (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    token_id          bigint,  -- the token's id, never the token
    user_id           bigint,
    method            text NOT NULL,
    route             text NOT NULL,
    model             text,
    status            integer NOT NULL,
    latency_ms        real NOT NULL,
    prompt_tokens     integer,
    completion_tokens integer,
    prompt            text,  -- only with LOG_CHAT_TEXT=true
    answer            text
);
CREATE INDEX request_log_at ON request_log (at);
