-- Files indexed with `hearth ingest PATH` from outside the watched folders are neither watched
-- nor uploads: Hearth must never delete them from disk.
ALTER TABLE documents DROP CONSTRAINT documents_source_check;
ALTER TABLE documents ADD CONSTRAINT documents_source_check
    CHECK (source IN ('watch', 'upload', 'cli'));
