"""What the durable log holds of each turn, as the turn reads it: its first and last
sequence, and whether its end was logged (what each process's sweep reads to log the ends
that never reached the log)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from convergio_server.domain.events.model import (
    Event,
    MessageCompleted,
    TurnCompleted,
    TurnQueued,
    TurnStarted,
    Usage,
)
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


async def test_a_turns_first_and_last_sequence_follow_its_durable_events(
    new_database: Callable[[], Awaitable[str]],
) -> None:
    pool = await pg.create_pool(await new_database(), min_size=1, max_size=2)
    try:
        await apply_migrations(pool)
        tenant = "t-marks"
        conversation = await stored_conversation(pool, tenant)
        store, events = PgConversationStore(pool), PgDurableEvents(pool)
        queued, running, legacy = (str(uuid.uuid4()) for _ in range(3))
        for i, (turn, status) in enumerate(((queued, "QUEUED"), (running, "RUNNING"))):
            await pool.execute(
                "INSERT INTO turns (tenant_id, conversation_id, id, request_id, status, "
                "content, user_message_id, created_by) "
                "VALUES ($1, $2, $3, $4, $5, 'Hello', $6, 'alice')",
                tenant, conversation, turn, f"r{i}", status, uuid.uuid4(),
            )  # fmt: skip

        async def sequences(turn: str) -> tuple[int, int]:
            found = await store.get_turn(tenant, conversation, turn)
            assert found is not None
            return found.first_sequence, found.last_sequence

        # Nothing of it durable yet.
        assert await sequences(running) == (0, 0)
        now = datetime.now(UTC)
        start = TurnStarted("r1", "m1", "Hello", ["amy"], "", 6, [], "alice")
        message = MessageCompleted("m2", "amy", "AGENT", "Done.", "offline", Usage(), "0")
        queue = TurnQueued("r0", 1)
        end = TurnCompleted("COMPLETED", "", Usage(), "0", 1, "m2", 0.1)
        await events.insert_many(
            [
                (tenant, Event(conversation, running, 1, now, start)),
                (tenant, Event(conversation, queued, 2, now, queue)),
                (tenant, Event(conversation, running, 3, now, message)),
            ]
        )
        # Running: its latest event so far.
        assert await sequences(running) == (1, 3)
        assert await sequences(queued) == (2, 2)
        await events.insert_many(
            [
                (tenant, Event(conversation, running, 4, now, end)),
                (tenant, Event(conversation, queued, 5, now, replace(start, request_id="r0"))),
            ]
        )
        assert await sequences(running) == (1, 4)
        # A queued turn starts later: its first event stays its TurnQueued.
        assert await sequences(queued) == (2, 5)

        # A turn from before the marks: looked up from its events.
        await pool.execute(
            "INSERT INTO turns (tenant_id, conversation_id, id, request_id, status, content, "
            "user_message_id, created_by, log_marked, end_logged) "
            "VALUES ($1, $2, $3, 'r2', 'ENDED', 'Hi', $4, 'alice', false, true)",
            tenant, conversation, legacy, uuid.uuid4(),
        )  # fmt: skip
        await pool.execute("ALTER TABLE conversation_events DISABLE TRIGGER USER")
        await events.insert_many(
            [
                (tenant, Event(conversation, legacy, 6, now, replace(start, request_id="r2"))),
                (tenant, Event(conversation, legacy, 7, now, end)),
            ]
        )
        assert await sequences(legacy) == (6, 7)
    finally:
        await pool.close()
