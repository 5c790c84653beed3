"""PostgreSQL implementation of the domain's KnowledgeStore (full-text search)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from convergio_server.domain.errors import NotFound
from convergio_server.domain.knowledge import Document, SearchHit

_COLUMNS = "document_id, title, content, source, importance, metadata, create_time, update_time"

# Any of the query's words may match (plainto_tsquery ANDs them; OR keeps recall for
# questions written in full sentences), and ts_rank_cd rewards documents where the words
# occur close together; normalisation 32 maps the rank into [0, 1).
_SEARCH = """
WITH q AS (
    SELECT replace(plainto_tsquery('english', $2)::text, '&', '|')::tsquery AS query
)
SELECT d.document_id, d.title, d.source, d.importance,
       ts_rank_cd(d.search, q.query, 32) AS score,
       ts_headline('english', d.content, q.query,
                   'StartSel=**, StopSel=**, MaxWords=40, MinWords=12, MaxFragments=2,
                    FragmentDelimiter=" ... "') AS snippet
FROM knowledge_documents d, q
WHERE d.tenant_id = $1 AND q.query::text <> '' AND d.search @@ q.query
ORDER BY score DESC, d.document_id
LIMIT $3
"""


def _document(row: asyncpg.Record) -> Document:
    metadata = row["metadata"]
    return Document(
        document_id=row["document_id"],
        title=row["title"],
        content=row["content"],
        source=row["source"],
        importance=float(row["importance"]),
        metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


class PgKnowledgeStore:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def upsert(self, tenant_id: str, document: Document) -> Document:
        try:
            row = await self._pool.fetchrow(
                f"""INSERT INTO knowledge_documents
                        (tenant_id, document_id, title, content, source, importance, metadata)
                    VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
                    ON CONFLICT (tenant_id, document_id) DO UPDATE SET
                        title = EXCLUDED.title, content = EXCLUDED.content,
                        source = EXCLUDED.source, importance = EXCLUDED.importance,
                        metadata = EXCLUDED.metadata, update_time = now()
                    RETURNING {_COLUMNS}""",
                tenant_id,
                document.document_id,
                document.title,
                document.content,
                document.source,
                document.importance,
                json.dumps(dict(document.metadata)),
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"tenant {tenant_id!r} does not exist") from exc
        assert row is not None
        return _document(row)

    async def get(self, tenant_id: str, document_id: str) -> Document | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM knowledge_documents WHERE tenant_id = $1 AND document_id = $2",
            tenant_id,
            document_id,
        )
        return _document(row) if row is not None else None

    async def list_documents(self, tenant_id: str, limit: int, after_id: str) -> list[Document]:
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM knowledge_documents
                WHERE tenant_id = $1 AND document_id > $2
                ORDER BY document_id LIMIT $3""",
            tenant_id,
            after_id,
            limit,
        )
        return [_document(r) for r in rows]

    async def search(self, tenant_id: str, query: str, limit: int) -> list[SearchHit]:
        rows = await self._pool.fetch(_SEARCH, tenant_id, query, limit)
        return [
            SearchHit(
                document_id=r["document_id"],
                title=r["title"],
                source=r["source"],
                score=float(r["score"]),
                snippet=" ".join(r["snippet"].split()),
                importance=float(r["importance"]),
            )
            for r in rows
        ]

    async def delete(self, tenant_id: str, document_id: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM knowledge_documents WHERE tenant_id = $1 AND document_id = $2",
            tenant_id,
            document_id,
        )
        return status.endswith(" 1")
