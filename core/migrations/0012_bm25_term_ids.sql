-- BM25 postings keyed by an integer term id (issue 15, item 1). 0011 stored the lexeme and the
-- collection as text in every posting and again in its index (~122 bytes a posting, ~1 GB per
-- 100k chunks). A term is a (lexeme, collection) pair, which bm25_collection_terms already holds
-- once with its df: it now carries an integer id too, and a posting is (chunk_id, term_id, rank,
-- len, tf), 48 bytes of heap tuple and 32 of index tuple, the lexeme and collection read from the
-- term row. A search looks up its lexemes' term rows in scope (it needs their df anyway) and reads
-- the best N postings of each term id.
--
-- A term row exists exactly while some chunk of its collection holds the lexeme (df > 0; 0008),
-- so it outlives every posting that names it. Ids come from a sequence and are never reused; only
-- a term that is new takes one (an upsert would draw one for every row it proposes). 2^31 term
-- creations exhaust it (by far more than any library's churn): `SELECT bm25_rebuild()` numbers
-- the terms afresh.
-- Maintained by the statement triggers (every write path; a bulk import appends its own rows).
-- This file goes through str.format: literal braces doubled.

CREATE SEQUENCE bm25_term_ids AS integer;
ALTER TABLE bm25_collection_terms ADD COLUMN id integer;
UPDATE bm25_collection_terms SET id = nextval('bm25_term_ids');
ALTER TABLE bm25_collection_terms
    ALTER COLUMN id SET DEFAULT nextval('bm25_term_ids'),
    ALTER COLUMN id SET NOT NULL,
    ADD CONSTRAINT bm25_collection_terms_id UNIQUE (id);
ALTER SEQUENCE bm25_term_ids OWNED BY bm25_collection_terms.id;

-- Columns in an order that packs without padding: 8 + 4 + 4 + 4 + 2 bytes. tf fits a smallint:
-- a tsvector keeps at most 256 positions of a lexeme.
CREATE TABLE bm25_term_postings (
    chunk_id bigint NOT NULL,
    term_id  integer NOT NULL,   -- bm25_collection_terms.id
    rank     real NOT NULL,      -- bm25_rank(tf, len), 0011
    len      integer NOT NULL,   -- the chunk's tsv_len
    tf       smallint NOT NULL   -- positions of the lexeme in the chunk's tsvector
);
INSERT INTO bm25_term_postings (chunk_id, term_id, rank, len, tf)
    SELECT p.chunk_id, t.id, p.rank, p.len, p.tf
    FROM bm25_postings p
    JOIN bm25_collection_terms t ON t.lexeme = p.lexeme AND t.collection = p.collection;
DROP TABLE bm25_postings;
ALTER TABLE bm25_term_postings RENAME TO bm25_postings;

-- Index-only scans read the top N of a term; deletes find a chunk's postings by its id.
CREATE INDEX bm25_postings_top ON bm25_postings (term_id, rank DESC, chunk_id) INCLUDE (tf, len);
CREATE INDEX bm25_postings_chunk ON bm25_postings (chunk_id);

-- As in 0008, but an existing term's df is updated and only a new term is inserted (taking an id).
-- Every writer holds the `bm25_stats` row first (updated before any term row), so no other writer
-- can insert the same term between the two statements.
CREATE OR REPLACE FUNCTION bm25_apply_rows(colls text[], tsvs tsvector[], lens integer[],
                                           signs integer[])
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
    UPDATE bm25_collection_terms t SET df = t.df + x.df
        FROM unnest(t_lex, t_coll, t_df) AS x(lexeme, c, df)
        WHERE t.lexeme = x.lexeme AND t.collection = x.c;
    INSERT INTO bm25_collection_terms (lexeme, collection, df)
        SELECT x.lexeme, x.c, x.df FROM unnest(t_lex, t_coll, t_df) AS x(lexeme, c, df)
        WHERE x.df > 0 AND NOT EXISTS (SELECT 1 FROM bm25_collection_terms t
                                       WHERE t.lexeme = x.lexeme AND t.collection = x.c)
        ORDER BY x.lexeme COLLATE "C", x.c COLLATE "C";
    DELETE FROM bm25_collection_terms t
        USING unnest(t_lex, t_coll) AS x(lexeme, c)
        WHERE t.lexeme = x.lexeme AND t.collection = x.c AND t.df <= 0;
END
$$;

-- The postings of chunks given as arrays (id, collection, tsvector, length), after their terms
-- are counted (so each (lexeme, collection) has its row and id).
CREATE FUNCTION bm25_add_postings(ids bigint[], colls text[], tsvs tsvector[], lens integer[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO bm25_postings (chunk_id, term_id, rank, len, tf)
        SELECT x.id, t.id, bm25_rank(cardinality(u.positions), x.l), x.l,
               cardinality(u.positions)
        FROM unnest(ids, colls, tsvs, lens) AS x(id, c, v, l)
        CROSS JOIN LATERAL unnest(x.v) u
        JOIN bm25_collection_terms t ON t.lexeme = u.lexeme AND t.collection = x.c;
$$;

CREATE OR REPLACE FUNCTION bm25_chunks_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    colls text[];
    tsvs tsvector[];
    lens integer[];
    signs integer[];
BEGIN
    SELECT array_agg(r.id), array_agg(r.collection), array_agg(r.tsv), array_agg(r.tsv_len),
           array_agg(1)
        INTO ids, colls, tsvs, lens, signs
        FROM new_rows r;
    PERFORM bm25_apply_rows(colls, tsvs, lens, signs);
    PERFORM bm25_add_postings(ids, colls, tsvs, lens);
    RETURN NULL;
END
$$;

-- (bm25_chunks_deleted of 0011 stays: it deletes by chunk_id, a column kept.)

-- The net change, as in 0008: rows whose id, collection and text did not change (re-embedding)
-- keep their postings; a changed row's postings go, and its new ones come once its terms are
-- counted.
CREATE OR REPLACE FUNCTION bm25_chunks_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    colls text[];
    tsvs tsvector[];
    lens integer[];
    signs integer[];
    gone bigint[];
    n_ids bigint[];
    n_colls text[];
    n_tsvs tsvector[];
    n_lens integer[];
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
    )
    SELECT array_agg(d.collection), array_agg(d.tsv), array_agg(d.tsv_len), array_agg(d.sign),
           array_agg(d.id) FILTER (WHERE d.sign < 0),
           array_agg(d.id) FILTER (WHERE d.sign > 0),
           array_agg(d.collection) FILTER (WHERE d.sign > 0),
           array_agg(d.tsv) FILTER (WHERE d.sign > 0),
           array_agg(d.tsv_len) FILTER (WHERE d.sign > 0)
        INTO colls, tsvs, lens, signs, gone, n_ids, n_colls, n_tsvs, n_lens
        FROM d;
    IF signs IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM bm25_postings WHERE chunk_id = ANY(gone);
    PERFORM bm25_apply_rows(colls, tsvs, lens, signs);
    PERFORM bm25_add_postings(n_ids, n_colls, n_tsvs, n_lens);
    RETURN NULL;
END
$$;

-- (bm25_chunks_truncated of 0011 stays: it truncates the postings by name.)

-- Recompute everything from the chunks (a repair tool); numbers the terms afresh.
CREATE OR REPLACE FUNCTION bm25_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE chunks IN SHARE MODE;  -- no chunk writes meanwhile
    UPDATE bm25_stats SET n = s.n, total_len = s.total_len
        FROM (SELECT count(*) AS n, coalesce(sum(tsv_len), 0) AS total_len FROM chunks) s;
    DELETE FROM bm25_collection_stats;
    INSERT INTO bm25_collection_stats (collection, n, total_len)
        SELECT collection, count(*), coalesce(sum(tsv_len), 0) FROM chunks GROUP BY collection;
    TRUNCATE bm25_postings;
    DELETE FROM bm25_collection_terms;
    ALTER SEQUENCE bm25_term_ids RESTART;  -- transactional (PostgreSQL >= 10)
    INSERT INTO bm25_collection_terms (lexeme, collection, df)
        SELECT u.lexeme, c.collection, count(*) FROM chunks c, unnest(c.tsv) u
        GROUP BY u.lexeme, c.collection
        ORDER BY u.lexeme COLLATE "C", c.collection COLLATE "C";
    INSERT INTO bm25_postings (chunk_id, term_id, rank, len, tf)
        SELECT c.id, t.id, bm25_rank(cardinality(u.positions), c.tsv_len), c.tsv_len,
               cardinality(u.positions)
        FROM chunks c CROSS JOIN LATERAL unnest(c.tsv) u
        JOIN bm25_collection_terms t ON t.lexeme = u.lexeme AND t.collection = c.collection;
END
$$;

ANALYZE bm25_collection_terms;
ANALYZE bm25_postings;
