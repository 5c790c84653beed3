"""The knowledge base: each tenant's documents, searched with PostgreSQL full-text ranking.

The domain owns the rules (sizes, ids, tenant scoping) and the `KnowledgeStore` interface;
`storage/knowledge.py` implements it on PostgreSQL (a tsvector column with a GIN index).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from convergio_server.domain.auth import validate_tenant_id
from convergio_server.domain.errors import InvalidArgument, NotFound

MAX_CONTENT_BYTES = 512 * 1024  # PostgreSQL's tsvector limit is 1 MiB of lexemes
MAX_TITLE_CHARS = 500
MAX_QUERY_CHARS = 1000
MAX_RESULTS = 50
MAX_LIST_PAGE = 1000
_DOCUMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


@dataclass(frozen=True)
class Document:
    document_id: str
    title: str
    content: str
    source: str = ""
    importance: float = 0.5
    metadata: Mapping[str, Any] = field(default_factory=dict)
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class SearchHit:
    document_id: str
    title: str
    source: str
    score: float  # ts_rank_cd, normalised to [0, 1)
    snippet: str  # the best-matching passages, matches marked with ** **
    importance: float


class KnowledgeStore(Protocol):
    async def upsert(self, tenant_id: str, document: Document) -> Document: ...

    async def get(self, tenant_id: str, document_id: str) -> Document | None: ...

    async def list_documents(self, tenant_id: str, limit: int, after_id: str) -> list[Document]: ...

    async def search(self, tenant_id: str, query: str, limit: int) -> list[SearchHit]: ...

    async def delete(self, tenant_id: str, document_id: str) -> bool: ...


def new_document_id() -> str:
    return "doc_" + secrets.token_hex(8)


def prepare_document(
    *,
    content: str,
    title: str = "",
    source: str = "",
    document_id: str = "",
    importance: float = 0.5,
    metadata: Mapping[str, Any] | None = None,
) -> Document:
    """A valid document, or InvalidArgument saying what is wrong. Apart from storing, so that
    several documents can all be checked before any of them is stored."""
    # PostgreSQL text cannot hold NUL; it is dropped before any check, so that a document
    # of NULs only is an empty one.
    content = content.replace("\x00", "")
    title = title.replace("\x00", "").strip()
    source = source.replace("\x00", "")
    if not content.strip():
        raise InvalidArgument.for_field("content", "must not be empty")
    if len(content.encode("utf-8")) > MAX_CONTENT_BYTES:
        raise InvalidArgument.for_field(
            "content", f"must be at most {MAX_CONTENT_BYTES // 1024} KiB; split the document"
        )
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidArgument.for_field("title", f"must be at most {MAX_TITLE_CHARS} characters")
    if document_id and not _DOCUMENT_ID.match(document_id):
        raise InvalidArgument.for_field(
            "document_id", "must be 1-128 of letters, digits, '.', '_', ':' and '-'"
        )
    if not 0 <= importance <= 1:
        raise InvalidArgument.for_field("importance", "must be between 0 and 1")
    return Document(
        document_id=document_id or new_document_id(),
        title=title,
        content=content,
        source=source,
        importance=importance,
        metadata=dict(metadata or {}),
    )


class KnowledgeBase:
    """Add, list, search and delete a tenant's documents."""

    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store

    async def add(
        self,
        tenant_id: str,
        *,
        content: str,
        title: str = "",
        source: str = "",
        document_id: str = "",
        importance: float = 0.5,
        metadata: Mapping[str, Any] | None = None,
    ) -> Document:
        """Store a document (replacing one with the same id)."""
        document = prepare_document(
            content=content,
            title=title,
            source=source,
            document_id=document_id,
            importance=importance,
            metadata=metadata,
        )
        return await self.store(tenant_id, document)

    async def store(self, tenant_id: str, document: Document) -> Document:
        """Store a document made by `prepare_document` (replacing one with the same id)."""
        return await self._store.upsert(validate_tenant_id(tenant_id), document)

    async def get(self, tenant_id: str, document_id: str) -> Document:
        document = await self._store.get(validate_tenant_id(tenant_id), document_id)
        if document is None:
            raise NotFound(f"document {document_id!r} is not in the knowledge base")
        return document

    async def list_documents(
        self, tenant_id: str, *, limit: int = 100, after_id: str = ""
    ) -> list[Document]:
        """Documents in id order, `limit` (1-1000) at a time after `after_id`."""
        if not 1 <= limit <= MAX_LIST_PAGE:
            raise InvalidArgument.for_field("limit", f"must be from 1 to {MAX_LIST_PAGE}")
        return await self._store.list_documents(validate_tenant_id(tenant_id), limit, after_id)

    async def search(self, tenant_id: str, query: str, *, limit: int = 5) -> list[SearchHit]:
        """Documents matching any of the query's words, best first (words found together
        and in titles rank higher)."""
        if not query.strip():
            raise InvalidArgument.for_field("query", "must not be empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument.for_field(
                "query", f"must be at most {MAX_QUERY_CHARS} characters"
            )
        if not 1 <= limit <= MAX_RESULTS:
            raise InvalidArgument.for_field("limit", f"must be from 1 to {MAX_RESULTS}")
        return await self._store.search(validate_tenant_id(tenant_id), query, limit)

    async def delete(self, tenant_id: str, document_id: str) -> None:
        if not await self._store.delete(validate_tenant_id(tenant_id), document_id):
            raise NotFound(f"document {document_id!r} is not in the knowledge base")
