"""`hearth eval` / `python -m bench.retrieval`: retrieval quality on a BEIR dataset, measured
through Hearth's own indexing and search code."""
