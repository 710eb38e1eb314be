-- A document's postings are found term by term through bm25_collection_terms' primary key.
--
-- 0012's join of the chunks' lexemes (unnest of each tsvector, laterally) with the terms let the
-- planner join the terms to the chunks by collection first (a seq scan of every term of the
-- collection) and filter by lexeme after: each indexed document compared all of its lexemes with
-- every term of its collection. Measured on 400 SciFact abstracts (8.9k terms): 125 ms a
-- document, growing with the vocabulary (190 ms over the last hundred), against 1.5 ms now. The
-- chunks' (lexeme, collection) pairs are listed first (a materialized CTE, its size known), then
-- looked up by (lexeme, collection): the planner cannot join them the other way round.
CREATE OR REPLACE FUNCTION bm25_add_postings(ids bigint[], colls text[], tsvs tsvector[],
                                             lens integer[])
RETURNS void LANGUAGE sql AS $$
    WITH p AS MATERIALIZED (
        SELECT x.id, x.c, x.l, u.lexeme, cardinality(u.positions) AS tf
        FROM unnest(ids, colls, tsvs, lens) AS x(id, c, v, l)
        CROSS JOIN LATERAL unnest(x.v) u
    )
    INSERT INTO bm25_postings (chunk_id, term_id, rank, len, tf)
        SELECT p.id, t.id, bm25_rank(p.tf, p.l), p.l, p.tf
        FROM p JOIN bm25_collection_terms t ON t.lexeme = p.lexeme AND t.collection = p.c;
$$;
