-- Knowledge base: each tenant's documents, searched with full-text ranking.
-- The tsvector is generated (title weighted above content) and GIN-indexed; every query
-- filters by tenant_id first.

CREATE TABLE knowledge_documents (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id text NOT NULL,
    title       text NOT NULL DEFAULT '',
    content     text NOT NULL,
    source      text NOT NULL DEFAULT '',
    importance  real NOT NULL DEFAULT 0.5 CHECK (importance >= 0 AND importance <= 1),
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') ||
        setweight(to_tsvector('english', content), 'B')
    ) STORED,
    PRIMARY KEY (tenant_id, document_id)
);

CREATE INDEX knowledge_documents_search_idx ON knowledge_documents USING GIN (search);
