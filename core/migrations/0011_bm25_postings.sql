-- BM25 postings (issue 15, item 1): one row per (lexeme, chunk) with the chunk's own tf and
-- length, ordered inside each (lexeme, collection) by a fixed reference impact, so a lexical
-- search reads only the best N postings of each query lexeme in each collection it may read
-- (impact-ordered pruning) instead of scoring every chunk that holds any query word.
--
-- Nothing in a posting depends on any other chunk: no idf, no average length. The search
-- multiplies in its scope's idf and average length at query time (retrieval/hybrid.py), so the
-- scores stay those of issue 13 item 4 (statistics of the readable collections only) and are
-- exact BM25 for every posting read; the only approximation is which postings are read (the top
-- N by the reference order when a lexeme occurs in more than N chunks of one collection).
-- Maintained by the statement triggers of 0008 (every write path; a bulk import adds its own
-- rows, never rewrites the table). This file goes through str.format: literal braces doubled.

-- The order within a (lexeme, collection): BM25's saturation term at k1 = 0.9, b = 0.4 and a
-- fixed reference length of 128 lexemes, a function of the posting alone. Any k1, b or average
-- length a search uses orders postings almost the same way (higher tf first, shorter first).
CREATE FUNCTION bm25_rank(tf integer, len integer) RETURNS real
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (tf * 1.9 / (tf + 0.9 * (0.6 + 0.4 * len / 128.0)))::real;

CREATE TABLE bm25_postings (
    lexeme     text COLLATE "C" NOT NULL,
    collection text COLLATE "C" NOT NULL,
    rank       real NOT NULL,      -- bm25_rank(tf, len)
    chunk_id   bigint NOT NULL,
    tf         integer NOT NULL,   -- positions of the lexeme in the chunk's tsvector
    len        integer NOT NULL    -- the chunk's tsv_len
);

-- Index-only scans read the top N of a (lexeme, collection). Deletes find a chunk's postings by
-- its id: a join on the first index's whole key let the planner look up by lexeme alone and
-- filter, which reads every posting of a common word.
CREATE INDEX bm25_postings_top ON bm25_postings (lexeme, collection, rank DESC, chunk_id)
    INCLUDE (tf, len);
CREATE INDEX bm25_postings_chunk ON bm25_postings (chunk_id);

CREATE OR REPLACE FUNCTION bm25_chunks_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_apply_rows(array_agg(r.collection), array_agg(r.tsv), array_agg(r.tsv_len),
                            array_agg(1))
        FROM new_rows r;
    INSERT INTO bm25_postings (lexeme, collection, rank, chunk_id, tf, len)
        SELECT u.lexeme, r.collection, bm25_rank(cardinality(u.positions), r.tsv_len), r.id,
               cardinality(u.positions), r.tsv_len
        FROM new_rows r, unnest(r.tsv) u;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bm25_chunks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bm25_apply_rows(array_agg(r.collection), array_agg(r.tsv), array_agg(r.tsv_len),
                            array_agg(-1))
        FROM old_rows r;
    DELETE FROM bm25_postings
        WHERE chunk_id = ANY((SELECT array_agg(r.id) FROM old_rows r)::bigint[]);
    RETURN NULL;
END
$$;

-- The net change, as in 0008 (rows whose id, collection and text did not change, as in
-- re-embedding, keep their postings), in one statement.
CREATE OR REPLACE FUNCTION bm25_chunks_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    done integer;
BEGIN
    WITH d AS MATERIALIZED (
        SELECT o.id, o.collection, o.tsv, o.tsv_len, -1 AS sign FROM old_rows o
        WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id
                          AND n.collection = o.collection AND n.tsv = o.tsv
                          AND n.tsv_len = o.tsv_len)
        UNION ALL
        SELECT n.id, n.collection, n.tsv, n.tsv_len, 1 FROM new_rows n
        WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.id = n.id
                          AND o.collection = n.collection AND o.tsv = n.tsv
                          AND o.tsv_len = n.tsv_len)
    ),
    gone AS (  -- a changed chunk's old postings, all of them (its id is unchanged or gone)
        DELETE FROM bm25_postings
            WHERE chunk_id = ANY((SELECT array_agg(d.id) FROM d WHERE d.sign < 0)::bigint[])
            RETURNING 1
    ),
    added AS (
        INSERT INTO bm25_postings (lexeme, collection, rank, chunk_id, tf, len)
            SELECT u.lexeme, d.collection, bm25_rank(cardinality(u.positions), d.tsv_len), d.id,
                   cardinality(u.positions), d.tsv_len
            FROM d, unnest(d.tsv) u WHERE d.sign > 0
            RETURNING 1
    )
    SELECT 1 INTO done
        FROM (SELECT bm25_apply_rows(array_agg(d.collection), array_agg(d.tsv),
                                     array_agg(d.tsv_len), array_agg(d.sign)) FROM d) s,
             (SELECT count(*) FROM gone) g, (SELECT count(*) FROM added) a;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bm25_chunks_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bm25_stats SET n = 0, total_len = 0;
    DELETE FROM bm25_collection_stats;
    DELETE FROM bm25_collection_terms;
    TRUNCATE bm25_postings;
    RETURN NULL;
END
$$;

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
    TRUNCATE bm25_postings;
    INSERT INTO bm25_postings (lexeme, collection, rank, chunk_id, tf, len)
        SELECT u.lexeme, c.collection, bm25_rank(cardinality(u.positions), c.tsv_len), c.id,
               cardinality(u.positions), c.tsv_len
        FROM chunks c, unnest(c.tsv) u;
END
$$;

SELECT bm25_rebuild();
ANALYZE bm25_postings;
