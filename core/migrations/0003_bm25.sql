-- BM25 inside PostgreSQL: per-chunk token length, and term document frequencies plus corpus
-- statistics (N, total length) kept exact by statement-level triggers on `chunks`, so every write
-- path (COPY, INSERT ... SELECT, DELETE, ON DELETE CASCADE, TRUNCATE) keeps them current.
-- This file goes through str.format: literal braces are doubled.

-- The number of tokens to_tsvector kept (stop words dropped), i.e. the BM25 document length.
CREATE FUNCTION bm25_length(tsv tsvector) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT coalesce(sum(greatest(cardinality(u.positions), 1)), 0)::integer FROM unnest(tsv) u);

-- A generated column may not read another one, so the tsvector is computed again here; it must
-- stay the same expression as `tsv`'s.
ALTER TABLE chunks ADD COLUMN tsv_len integer NOT NULL
    GENERATED ALWAYS AS (bm25_length(to_tsvector('english'::regconfig, context || ' ' || text))) STORED;

CREATE TABLE bm25_terms (
    lexeme text COLLATE "C" PRIMARY KEY,
    df     bigint NOT NULL  -- chunks whose tsv contains the lexeme
);

CREATE TABLE bm25_stats (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    n         bigint NOT NULL,  -- chunks
    total_len bigint NOT NULL   -- sum of tsv_len
);
INSERT INTO bm25_stats (singleton, n, total_len) VALUES (true, 0, 0);

-- Apply a change to the statistics. The stats row is locked first, always: every transaction
-- that writes chunks takes it before any term row and holds it to commit, so term upserts of
-- concurrent ingests queue behind each other instead of deadlocking (and the upsert is sorted by
-- lexeme as well). The price: chunk writes commit one transaction at a time; the swap of one
-- document's chunks is short (embedding happens before it).
CREATE FUNCTION bm25_apply(d_n bigint, d_len bigint, d_terms text[], d_df bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF d_n = 0 AND d_len = 0 AND coalesce(cardinality(d_terms), 0) = 0 THEN
        RETURN;
    END IF;
    UPDATE bm25_stats SET n = n + d_n, total_len = total_len + d_len;
    INSERT INTO bm25_terms AS t (lexeme, df)
        SELECT x.lexeme, x.df FROM unnest(d_terms, d_df) AS x(lexeme, df)
        ORDER BY x.lexeme COLLATE "C"
        ON CONFLICT (lexeme) DO UPDATE SET df = t.df + EXCLUDED.df;
    DELETE FROM bm25_terms WHERE lexeme = ANY(d_terms) AND df <= 0;
END
$$;

CREATE FUNCTION bm25_chunks_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    terms text[];
    dfs bigint[];
BEGIN
    SELECT array_agg(g.lexeme ORDER BY g.lexeme), array_agg(g.df ORDER BY g.lexeme)
        INTO terms, dfs
        FROM (SELECT u.lexeme, count(*) AS df FROM new_rows r, unnest(r.tsv) u
              GROUP BY u.lexeme) g;
    PERFORM bm25_apply((SELECT count(*) FROM new_rows),
                       (SELECT coalesce(sum(tsv_len), 0) FROM new_rows), terms, dfs);
    RETURN NULL;
END
$$;

CREATE FUNCTION bm25_chunks_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    terms text[];
    dfs bigint[];
BEGIN
    SELECT array_agg(g.lexeme ORDER BY g.lexeme), array_agg(-g.df ORDER BY g.lexeme)
        INTO terms, dfs
        FROM (SELECT u.lexeme, count(*) AS df FROM old_rows r, unnest(r.tsv) u
              GROUP BY u.lexeme) g;
    PERFORM bm25_apply(-(SELECT count(*) FROM old_rows),
                       -(SELECT coalesce(sum(tsv_len), 0) FROM old_rows), terms, dfs);
    RETURN NULL;
END
$$;

-- Hearth never rewrites a chunk's text in place, but if anything does, the net change counts.
CREATE FUNCTION bm25_chunks_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    terms text[];
    dfs bigint[];
BEGIN
    SELECT array_agg(g.lexeme ORDER BY g.lexeme), array_agg(g.df ORDER BY g.lexeme)
        INTO terms, dfs
        FROM (SELECT lexeme, sum(d) AS df FROM (
                  SELECT u.lexeme, 1 AS d FROM new_rows r, unnest(r.tsv) u
                  UNION ALL
                  SELECT u.lexeme, -1 FROM old_rows r, unnest(r.tsv) u) x
              GROUP BY lexeme HAVING sum(d) <> 0) g;
    PERFORM bm25_apply(0, (SELECT coalesce(sum(tsv_len), 0) FROM new_rows)
                          - (SELECT coalesce(sum(tsv_len), 0) FROM old_rows), terms, dfs);
    RETURN NULL;
END
$$;

CREATE FUNCTION bm25_chunks_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bm25_stats SET n = 0, total_len = 0;
    DELETE FROM bm25_terms;
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
CREATE FUNCTION bm25_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE chunks IN SHARE MODE;  -- no chunk writes meanwhile
    UPDATE bm25_stats SET n = s.n, total_len = s.total_len
        FROM (SELECT count(*) AS n, coalesce(sum(tsv_len), 0) AS total_len FROM chunks) s;
    DELETE FROM bm25_terms;
    INSERT INTO bm25_terms (lexeme, df)
        SELECT u.lexeme, count(*) FROM chunks c, unnest(c.tsv) u GROUP BY u.lexeme;
END
$$;

SELECT bm25_rebuild();

-- An OR of lexemes (already normalised) as a tsquery, quoting each one.
CREATE FUNCTION bm25_any(lexemes text[]) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery
        FROM unnest(lexemes) l);
