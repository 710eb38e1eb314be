-- Hearth's first schema. {embed_dim} is filled in from the embedding model at first migration.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE index_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE documents (
    id           bigserial PRIMARY KEY,
    source       text NOT NULL DEFAULT 'watch' CHECK (source IN ('watch', 'upload')),
    path         text NOT NULL UNIQUE,
    collection   text NOT NULL DEFAULT 'default',
    content_hash text,
    size         bigint,
    mtime        double precision,
    mime         text,
    title        text,
    status       text NOT NULL DEFAULT 'queued'
                 CHECK (status IN ('queued', 'parsing', 'embedding', 'indexed', 'failed',
                                   'needs_ocr', 'deleted')),
    error        text,
    chunk_count  integer NOT NULL DEFAULT 0,
    metadata     jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    indexed_at   timestamptz
);
CREATE INDEX documents_status ON documents (status);
CREATE INDEX documents_collection ON documents (collection);

CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    document_id  bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal      integer NOT NULL,
    text         text NOT NULL,
    context      text NOT NULL DEFAULT '',
    heading_path text[] NOT NULL DEFAULT '{{}}',
    page         integer,
    char_start   integer NOT NULL,
    char_end     integer NOT NULL,
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english', context || ' ' || text)) STORED,
    embedding    vector({embed_dim}) NOT NULL,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);

CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    role       text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    disabled   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tokens (
    id           bigserial PRIMARY KEY,
    token_hash   text NOT NULL UNIQUE,  -- SHA-256 hex of the token; the token itself is never stored
    prefix       text NOT NULL,         -- first characters, to tell tokens apart in listings
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE conversations (
    id         uuid PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_user ON conversations (user_id, updated_at DESC);

CREATE TABLE messages (
    id                bigserial PRIMARY KEY,
    conversation_id   uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content           text NOT NULL,
    citations         jsonb NOT NULL DEFAULT '[]'::jsonb,
    prompt_tokens     integer,
    completion_tokens integer,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
