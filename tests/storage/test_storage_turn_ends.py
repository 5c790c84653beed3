"""Which ended turns lack their end in the durable log: what each process's sweep reads
to log the ends that never reached it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from convergio_server.domain.events.model import Event, TurnCompleted, Usage
from convergio_server.storage import postgres as pg
from convergio_server.storage.conversations import PgConversationStore
from convergio_server.storage.events import PgDurableEvents
from convergio_server.storage.migrations import apply_migrations

from tests.storage.conftest import stored_conversation


async def test_a_turn_leaves_the_unlogged_ends_once_its_end_is_stored(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    pool = await pg.create_pool(await new_database(), min_size=1, max_size=2)
    try:
        await apply_migrations(pool)
        tenant = "t-ends"
        conversation = await stored_conversation(pool, tenant)
        turns = [str(uuid.uuid4()) for _ in range(3)]
        for i, turn in enumerate(turns):
            # Ended a minute ago, the third one still running.
            await pool.execute(
                "INSERT INTO turns (tenant_id, conversation_id, id, request_id, status, "
                "content, user_message_id, created_by, end_time) VALUES ($1, $2, $3, $4, $5, "
                "'Hello', $6, 'alice', now() - interval '1 minute')",
                tenant,
                conversation,
                turn,
                f"r{i}",
                "RUNNING" if i == 2 else "ENDED",
                uuid.uuid4(),
            )
        store = PgConversationStore(pool)
        assert sorted(t.id for t in await store.unlogged_ends(30, 100)) == sorted(turns[:2])
        # Ended too recently for the sweep: its own process may still be logging it.
        assert await store.unlogged_ends(120, 100) == []

        events, now = PgDurableEvents(pool), datetime.now(UTC)
        end = TurnCompleted("COMPLETED", "", Usage(), "0", 0, "", 0.1)
        await events.insert_many([(tenant, Event(conversation, turns[0], 7, now, end))])
        assert [t.id for t in await store.unlogged_ends(30, 100)] == [turns[1]]
        # The same end stored again (a retried write) changes nothing.
        await events.insert_many([(tenant, Event(conversation, turns[0], 7, now, end))])
        assert [t.id for t in await store.unlogged_ends(30, 100)] == [turns[1]]
    finally:
        await pool.close()
