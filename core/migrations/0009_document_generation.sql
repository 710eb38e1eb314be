-- A delete wins over work queued or running for the document (issue 13).
--
-- Every documents row has a generation, drawn from one sequence (so two rows never share one),
-- and it changes whenever the row becomes 'deleted', whoever deletes it (the Files API, the UI, a
-- worker that found the file gone). A worker reads the generation when it starts on a document
-- and writes only while the row is still at it (retrieval/guard.py: the row is locked FOR
-- UPDATE in the writing transaction, so a delete either comes first and the write is refused, or
-- waits and then removes what was written). A task queued for one generation (a re-index) does
-- nothing once the document has another. A deleted email takes its attachments with it.
-- This file goes through str.format: braces doubled.

CREATE SEQUENCE documents_generation_seq;
ALTER TABLE documents ADD COLUMN generation bigint NOT NULL
    DEFAULT nextval('documents_generation_seq');
ALTER SEQUENCE documents_generation_seq OWNED BY documents.generation;

CREATE FUNCTION documents_next_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.generation := nextval('documents_generation_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER documents_deleted_generation
    BEFORE UPDATE OF status ON documents
    FOR EACH ROW WHEN (NEW.status = 'deleted' AND OLD.status <> 'deleted')
    EXECUTE FUNCTION documents_next_generation();

CREATE INDEX documents_attachment_of ON documents ((metadata ->> 'attachment_of'));

CREATE FUNCTION documents_drop_attachments() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM documents WHERE metadata ->> 'attachment_of' = NEW.path;
    RETURN NULL;
END
$$;

CREATE TRIGGER documents_deleted_attachments
    AFTER UPDATE OF status ON documents
    FOR EACH ROW WHEN (NEW.status = 'deleted' AND OLD.status <> 'deleted')
    EXECUTE FUNCTION documents_drop_attachments();
