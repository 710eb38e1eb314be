-- bm25_add_postings keeps to the plan 0013 meant: each of a document's (lexeme, collection)
-- pairs looked up in bm25_collection_terms by its key.
--
-- 0013 listed the pairs first so that the planner would not join the other way round, but with
-- statistics that lag behind a growing vocabulary (autoanalyze not yet run) a custom plan could
-- still hash-join the pairs against a sequential scan of every term (seen in CI: 14,021 terms
-- read and filtered out for a document of 7 lexemes). The function now runs with hash and merge
-- joins and sequential scans off, which leaves the nested loop over the terms' key.
ALTER FUNCTION bm25_add_postings(bigint[], text[], tsvector[], integer[])
    SET enable_hashjoin = off;
ALTER FUNCTION bm25_add_postings(bigint[], text[], tsvector[], integer[])
    SET enable_mergejoin = off;
ALTER FUNCTION bm25_add_postings(bigint[], text[], tsvector[], integer[])
    SET enable_seqscan = off;
