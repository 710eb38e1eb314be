-- BM25 statistics per collection (issue 13, item 4). With 0003's global document frequencies and
-- corpus totals, a user could learn whether a word occurs in collections they cannot read by
-- watching the score of their own document move. Now each collection has its own df per lexeme,
-- chunk count and total length, and a search combines those of the collections its caller may
-- read (retrieval/hybrid.py), so a score depends only on what the caller can read.
--
-- Each chunk carries its document's collection (`chunks.collection`, kept equal to
-- `documents.collection` by the triggers below), so the statistics stay a function of the chunk
-- rows alone and the statement-level triggers of 0003 still see everything they need in their
-- transition tables: an ON DELETE CASCADE from documents has no document row left to look up, and
-- a move (documents.collection updated) becomes an UPDATE of its chunks, whose net change the
-- update trigger applies like any other.
-- This file goes through str.format: literal braces are doubled.

-- The backfill below must not run 0003's triggers (nor their global df table, now replaced).
DROP TRIGGER chunks_bm25_insert ON chunks;
DROP TRIGGER chunks_bm25_delete ON chunks;
DROP TRIGGER chunks_bm25_update ON chunks;
DROP TRIGGER chunks_bm25_truncate ON chunks;
DROP FUNCTION bm25_apply(bigint, bigint, text[], bigint[]);
DROP TABLE bm25_terms;

ALTER TABLE chunks ADD COLUMN collection text;
UPDATE chunks c SET collection = d.collection FROM documents d WHERE d.id = c.document_id;
ALTER TABLE chunks ALTER COLUMN collection SET NOT NULL;

-- A chunk's collection is its document's, whatever a writer sent. The document row is read FOR
-- SHARE: a move of that document (below) waits for this chunk write to commit and then moves
-- these chunks too, or this write waits for the move and reads the collection it committed.
-- (Hearth's own writers hold the document row already; this covers any other INSERT/COPY.)
CREATE FUNCTION chunks_collection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT d.collection INTO NEW.collection FROM documents d WHERE d.id = NEW.document_id
        FOR SHARE;
    IF NOT FOUND THEN
        NEW.collection := '';  -- no such document: the foreign key check reports it
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER chunks_collection BEFORE INSERT OR UPDATE OF document_id, collection ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_collection();

-- A document moved to another collection takes its chunks along (one UPDATE; the chunks'
-- statement trigger moves their contributions from the old collection to the new one).
CREATE FUNCTION documents_move_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE chunks SET collection = NEW.collection WHERE document_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER documents_move_chunks AFTER UPDATE OF collection ON documents
    FOR EACH ROW WHEN (OLD.collection IS DISTINCT FROM NEW.collection)
    EXECUTE FUNCTION documents_move_chunks();

CREATE TABLE bm25_collection_stats (
    collection text COLLATE "C" PRIMARY KEY,
    n          bigint NOT NULL,  -- chunks
    total_len  bigint NOT NULL   -- sum of tsv_len
);

-- Keyed by lexeme first: a query reads its lexemes' rows and sums those of the readable
-- collections (all of them for an unrestricted search).
CREATE TABLE bm25_collection_terms (
    lexeme     text COLLATE "C",
    collection text COLLATE "C",
    df         bigint NOT NULL,  -- chunks of the collection whose tsv contains the lexeme
    PRIMARY KEY (lexeme, collection)
);

-- Apply signed chunk rows (collection, tsvector, length, +1 added / -1 removed) to the statistics.
-- Lock order as in 0003: the global `bm25_stats` row first, always, held to commit, so every
-- transaction that writes chunks queues there before it touches any per-collection row and
-- concurrent ingests cannot deadlock on them (the upserts are sorted as well). `bm25_stats` keeps
-- the whole index's totals (what `hearth eval` and the benchmarks report); nothing scores with it.
CREATE FUNCTION bm25_apply_rows(colls text[], tsvs tsvector[], lens integer[], signs integer[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c_coll text[];
    c_n bigint[];
    c_len bigint[];
    t_lex text[];
    t_coll text[];
    t_df bigint[];
BEGIN
    SELECT array_agg(g.c ORDER BY g.c), array_agg(g.n ORDER BY g.c), array_agg(g.len ORDER BY g.c)
        INTO c_coll, c_n, c_len
        FROM (SELECT x.c, sum(x.s)::bigint AS n, sum(x.s * x.l)::bigint AS len
              FROM unnest(colls, lens, signs) AS x(c, l, s)
              GROUP BY x.c HAVING sum(x.s) <> 0 OR sum(x.s * x.l) <> 0) g;
    SELECT array_agg(g.lexeme ORDER BY g.lexeme, g.c), array_agg(g.c ORDER BY g.lexeme, g.c),
           array_agg(g.df ORDER BY g.lexeme, g.c)
        INTO t_lex, t_coll, t_df
        FROM (SELECT u.lexeme, x.c, sum(x.s)::bigint AS df
              FROM unnest(colls, tsvs, signs) AS x(c, v, s), unnest(x.v) u
              GROUP BY u.lexeme, x.c HAVING sum(x.s) <> 0) g;
    IF c_coll IS NULL AND t_lex IS NULL THEN
        RETURN;
    END IF;
    UPDATE bm25_stats SET n = n + coalesce((SELECT sum(v) FROM unnest(c_n) v), 0),
                          total_len = total_len + coalesce((SELECT sum(v) FROM unnest(c_len) v), 0);
    INSERT INTO bm25_collection_stats AS s (collection, n, total_len)
        SELECT x.c, x.n, x.len FROM unnest(c_coll, c_n, c_len) AS x(c, n, len)
        ORDER BY x.c COLLATE "C"
        ON CONFLICT (collection) DO UPDATE
            SET n = s.n + EXCLUDED.n, total_len = s.total_len + EXCLUDED.total_len;
    DELETE FROM bm25_collection_stats
        WHERE collection = ANY(c_coll) AND n = 0 AND total_len = 0;
    INSERT INTO bm25_collection_terms AS t (lexeme, collection, df)
        SELECT x.lexeme, x.c, x.df FROM unnest(t_lex, t_coll, t_df) AS x(lexeme, c, df)
        ORDER BY x.lexeme COLLATE "C", x.c COLLATE "C"
        ON CONFLICT (lexeme, collection) DO UPDATE SET df = t.df + EXCLUDED.df;
    DELETE FROM bm25_collection_terms t
        USING unnest(t_lex, t_coll) AS x(lexeme, c)
        WHERE t.lexeme = x.lexeme AND t.collection = x.c AND t.df <= 0;
END
$$;

CREATE OR REPLACE FUNCTION bm25_chunks_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_apply_rows(array_agg(r.collection), array_agg(r.tsv), array_agg(r.tsv_len),
                            array_agg(1))
        FROM new_rows r;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bm25_chunks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_apply_rows(array_agg(r.collection), array_agg(r.tsv), array_agg(r.tsv_len),
                            array_agg(-1))
        FROM old_rows r;
    RETURN NULL;
END
$$;

-- The net change: every old row out, every new row in, except the rows whose collection and
-- text did not change (re-embedding updates every chunk and changes neither).
CREATE OR REPLACE FUNCTION bm25_chunks_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_apply_rows(array_agg(d.collection), array_agg(d.tsv), array_agg(d.tsv_len),
                            array_agg(d.sign))
        FROM (SELECT o.collection, o.tsv, o.tsv_len, -1 AS sign FROM old_rows o
              WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id
                                AND n.collection = o.collection AND n.tsv = o.tsv
                                AND n.tsv_len = o.tsv_len)
              UNION ALL
              SELECT n.collection, n.tsv, n.tsv_len, 1 FROM new_rows n
              WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.id = n.id
                                AND o.collection = n.collection AND o.tsv = n.tsv
                                AND o.tsv_len = n.tsv_len)) d;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bm25_chunks_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bm25_stats SET n = 0, total_len = 0;
    DELETE FROM bm25_collection_stats;
    DELETE FROM bm25_collection_terms;
    RETURN NULL;
END
$$;

CREATE TRIGGER chunks_bm25_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_inserted();
CREATE TRIGGER chunks_bm25_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_deleted();
CREATE TRIGGER chunks_bm25_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_updated();
CREATE TRIGGER chunks_bm25_truncate AFTER TRUNCATE ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION bm25_chunks_truncated();

-- Recompute everything from the chunks (the backfill below; a repair tool if ever needed).
CREATE OR REPLACE FUNCTION bm25_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE chunks IN SHARE MODE;  -- no chunk writes meanwhile
    UPDATE bm25_stats SET n = s.n, total_len = s.total_len
        FROM (SELECT count(*) AS n, coalesce(sum(tsv_len), 0) AS total_len FROM chunks) s;
    DELETE FROM bm25_collection_stats;
    INSERT INTO bm25_collection_stats (collection, n, total_len)
        SELECT collection, count(*), coalesce(sum(tsv_len), 0) FROM chunks GROUP BY collection;
    DELETE FROM bm25_collection_terms;
    INSERT INTO bm25_collection_terms (lexeme, collection, df)
        SELECT u.lexeme, c.collection, count(*) FROM chunks c, unnest(c.tsv) u
        GROUP BY u.lexeme, c.collection;
END
$$;

SELECT bm25_rebuild();
