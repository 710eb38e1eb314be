-- Collections exist only when created explicitly (README "Users, tokens and access"):
--  * `default` here, and every watched root's by `hearth up`/`hearth migrate`/the API's start-up,
--    owned by nobody (the admins);
--  * a user's personal collection with the user (the trigger below, whatever path creates them);
--  * by an admin (admin API, `hearth collection create`), or by a user when COLLECTION_CREATORS
--    lets users create shared collections: one INSERT ... ON CONFLICT DO NOTHING decides who won;
--  * by a trusted writer (the folder worker, `hearth ingest`) for a collection its configuration
--    names, ownerless; never by a document that came from a user's upload.
-- A document's collection always exists (the foreign key), so no name can be taken over together
-- with documents already filed under it. This file goes through str.format: braces doubled.

DROP TRIGGER documents_collection_row ON documents;
DROP FUNCTION documents_collection_row();

ALTER TABLE collections ADD COLUMN personal boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX collections_personal ON collections (owner_id) WHERE personal;

INSERT INTO collections (name) VALUES ('default') ON CONFLICT DO NOTHING;
-- `default` is the household's: an owner it got from the first upload (issue 13) is dropped;
-- an admin who meant it hands it over again with `hearth collection owner default USER`
UPDATE collections SET owner_id = NULL WHERE name = 'default';
INSERT INTO collections (name) SELECT DISTINCT collection FROM documents ON CONFLICT DO NOTHING;
ALTER TABLE documents ADD CONSTRAINT documents_collection_fkey
    FOREIGN KEY (collection) REFERENCES collections (name);

-- `user-<name>`: the name with anything but letters, digits, `_ . -` made `-`, at most 64 long
CREATE FUNCTION personal_collection_name(uname text, uid bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT left('user-' || coalesce(
        nullif(btrim(regexp_replace(uname, '[^A-Za-z0-9_.-]+', '-', 'g'), '-.'), ''),
        uid::text), 64)
$$;

-- the user's personal collection, created (owned by them) if they have none: `user-<name>`, or,
-- when that name is taken (an older collection, another name that maps to the same), the same
-- with the user's id, then with a random suffix. Safe to call concurrently.
CREATE FUNCTION create_personal_collection(uid bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    uname text;
    base text;
    candidate text;
    got text;
BEGIN
    SELECT u.name INTO uname FROM users u WHERE u.id = uid;
    IF uname IS NULL THEN
        RETURN NULL;
    END IF;
    base := personal_collection_name(uname, uid);
    FOR attempt IN 0..20 LOOP
        SELECT c.name INTO got FROM collections c WHERE c.owner_id = uid AND c.personal;
        IF got IS NOT NULL THEN
            RETURN got;
        END IF;
        candidate := CASE
            WHEN attempt = 0 THEN base
            WHEN attempt = 1 THEN left(base, 63 - length(uid::text)) || '-' || uid
            ELSE left(base, 54 - length(uid::text)) || '-' || uid || '-'
                 || substr(md5(random()::text), 1, 8)
        END;
        INSERT INTO collections (name, owner_id, personal) VALUES (candidate, uid, true)
            ON CONFLICT DO NOTHING RETURNING name INTO got;
        IF got IS NOT NULL THEN
            RETURN got;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'no free name for the personal collection of user %', uid;
END $$;

CREATE FUNCTION users_personal_collection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM create_personal_collection(NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER users_personal_collection AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION users_personal_collection();

-- existing users: the `user-<name>` they already own is their personal collection; the others
-- get one now (a `user-<name>` someone else took first stays theirs, but is nobody's personal one)
UPDATE collections c SET personal = true FROM users u
    WHERE c.owner_id = u.id AND c.name = personal_collection_name(u.name, u.id);
SELECT create_personal_collection(id) FROM users ORDER BY id;

-- Where an upload by `uid` goes, decided in one statement: the collection named `wanted` (NULL:
-- `default` for admins, the uploader's personal collection for others) and a verdict:
--   'created'   it did not exist and the uploader may create collections: it is now theirs
--               (an admin's: ownerless); of two racing uploads exactly one gets this;
--   'ok'        it exists and they may write to it (owner; admins: any);
--   'forbidden' they may read it but not write to it;
--   'missing'   it does not exist, or they cannot read it: the same answer either way.
-- `user-...` names are never created here: they belong to users who may not exist yet.
CREATE FUNCTION upload_collection(uid bigint, wanted text, users_create boolean)
RETURNS TABLE (collection text, verdict text) LANGUAGE plpgsql AS $$
DECLARE
    is_admin boolean;
    target text := wanted;
    made text;
    owner bigint;
BEGIN
    SELECT u.role = 'admin' INTO is_admin FROM users u WHERE u.id = uid AND NOT u.disabled;
    IF is_admin IS NULL THEN
        RETURN QUERY SELECT wanted, 'missing'::text;
        RETURN;
    END IF;
    IF target IS NULL THEN
        target := CASE WHEN is_admin THEN 'default' ELSE create_personal_collection(uid) END;
    END IF;
    IF (is_admin OR users_create) AND left(target, 5) <> 'user-' THEN
        INSERT INTO collections (name, owner_id)
            VALUES (target, CASE WHEN is_admin THEN NULL ELSE uid END)
            ON CONFLICT DO NOTHING RETURNING name INTO made;
        IF made IS NOT NULL THEN
            RETURN QUERY SELECT target, 'created'::text;
            RETURN;
        END IF;
    END IF;
    IF is_admin THEN  -- admins write to every collection and may know that any exists
        RETURN QUERY SELECT target,
            CASE WHEN EXISTS (SELECT 1 FROM collections c WHERE c.name = target)
                 THEN 'ok' ELSE 'missing' END;
        RETURN;
    END IF;
    SELECT c.owner_id INTO owner FROM collections c
        WHERE c.name = target AND c.name IN (SELECT readable_collections(uid));
    IF NOT FOUND THEN
        RETURN QUERY SELECT target, 'missing'::text;
    ELSIF owner = uid THEN
        RETURN QUERY SELECT target, 'ok'::text;
    ELSE
        RETURN QUERY SELECT target, 'forbidden'::text;
    END IF;
END $$;
