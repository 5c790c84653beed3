"""Durable events written while PostgreSQL is down: kept in order and written once it is
back, never dropped (on the private embedded PostgreSQL, stopped and started here)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from convergio_server.domain.events.log import _DurableWriter
from convergio_server.domain.events.model import Event, MessageCompleted, ToolCall, Usage
from convergio_server.storage import postgres as pg
from convergio_server.storage.embedded import EmbeddedPostgres
from convergio_server.storage.events import PgDurableEvents
from convergio_server.storage.migrations import apply_migrations

from tests.storage.conftest import stored_conversation


async def test_events_whose_write_fails_are_retried_until_postgres_is_back(
    private_postgres: EmbeddedPostgres,
) -> None:
    pool = await pg.create_pool(private_postgres.url, min_size=1, max_size=2)
    try:
        await apply_migrations(pool)
        tenant, turn = "t-outage", str(uuid.uuid4())
        conversation = await stored_conversation(pool, tenant)
        writer = _DurableWriter(PgDurableEvents(pool))
        now = datetime.now(UTC)
        bodies = [
            ToolCall("c1", "amy", "financial_calculator", "{}", "LOW"),
            MessageCompleted("m1", "amy", "AGENT", "Done.", "offline", Usage(), "0"),
        ]
        await asyncio.to_thread(private_postgres.stop)
        written = [
            writer.put(tenant, Event(conversation, turn, i + 1, now, body))
            for i, body in enumerate(bodies)
        ]
        await asyncio.sleep(1.0)  # a few failed attempts
        assert not any(w.done() for w in written)
        await asyncio.to_thread(private_postgres.start)
        await asyncio.wait_for(asyncio.gather(*written), 60)
        stored = await pool.fetch(
            "SELECT sequence, kind FROM conversation_events WHERE tenant_id = $1 "
            "AND conversation_id = $2 ORDER BY sequence",
            tenant,
            conversation,
        )
        assert [(r["sequence"], r["kind"]) for r in stored] == [
            (1, "tool_call"),
            (2, "message_completed"),
        ]
        await writer.close()
    finally:
        await pool.close()
