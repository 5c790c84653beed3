"""Conversations, turns, transcript and saved team state in PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from convergio_server.domain.conversations.model import (
    IDLE,
    QUEUED,
    RUNNING,
    WAITING_FOR_APPROVAL,
    Conversation,
    Memory,
    Message,
    TeamSpec,
    Turn,
    TurnOptions,
    TurnOutcome,
)
from convergio_server.domain.conversations.store import Admitted
from convergio_server.domain.errors import NotFound
from convergio_server.domain.events.model import Usage
from convergio_server.storage import postgres as pg

_CONVERSATION_COLUMNS = """
    c.tenant_id, c.id, c.title, c.team, c.participants, c.model, c.agent_models,
    c.max_turns_per_message, c.speaker_policy, c.labels, c.turn_timeout_seconds, c.created_by,
    c.create_time, c.update_time, c.turn_count, c.message_count, c.prompt_tokens,
    c.completion_tokens, c.cached_tokens, c.model_calls, c.cost_usd, c.active_turn_id,
    (SELECT t.status FROM turns t WHERE t.tenant_id = c.tenant_id
        AND t.conversation_id = c.id AND t.id = c.active_turn_id) AS active_status,
    (SELECT count(*) FROM turns q WHERE q.tenant_id = c.tenant_id
        AND q.conversation_id = c.id AND q.status = 'QUEUED') AS queued
"""

# A turn's first and last sequence are of its durable events (its first and its last event
# are always durable), set on the turn by the log's trigger (0012_turn_log_marks.sql). The
# latest event of a running turn is looked up from its first on; turns from before the
# trigger (not `log_marked`) are looked up by turn.
_TURN_COLUMNS = """
    tenant_id, conversation_id, id, request_id, status, stop_reason, stop_detail, error, content,
    options, user_message_id, message_count, prompt_tokens, completion_tokens, cached_tokens,
    model_calls, cost_usd, created_by, create_time, start_time, end_time, started, end_logged,
    CASE WHEN log_marked THEN first_sequence
        ELSE COALESCE((SELECT min(e.sequence) FROM conversation_events e
            WHERE e.tenant_id = turns.tenant_id AND e.conversation_id = turns.conversation_id
              AND e.turn_id = turns.id), 0) END AS first_sequence,
    CASE WHEN last_sequence > 0 THEN last_sequence
        WHEN log_marked AND first_sequence = 0 THEN 0
        ELSE COALESCE((SELECT max(e.sequence) FROM conversation_events e
            WHERE e.tenant_id = turns.tenant_id AND e.conversation_id = turns.conversation_id
              AND e.sequence >= turns.first_sequence AND e.turn_id = turns.id), 0)
        END AS last_sequence
"""


def _usage(row: Any) -> Usage:
    return Usage(
        row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"], row["model_calls"]
    )


def _conversation(row: Any) -> Conversation:
    return Conversation(
        tenant_id=row["tenant_id"],
        id=str(row["id"]),
        title=row["title"],
        team=TeamSpec.from_json(json.loads(row["team"])),
        participants=list(row["participants"]),
        model=json.loads(row["model"]),
        agent_models=json.loads(row["agent_models"]),
        max_turns_per_message=row["max_turns_per_message"],
        speaker_policy=row["speaker_policy"],
        labels=json.loads(row["labels"]),
        turn_timeout_seconds=row["turn_timeout_seconds"],
        created_by=row["created_by"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        turn_count=row["turn_count"],
        message_count=row["message_count"],
        usage=_usage(row),
        cost_usd=row["cost_usd"],
        active_turn_id=str(row["active_turn_id"]) if row["active_turn_id"] else "",
        active_turn_status=row["active_status"] or "",
        queued_turn_count=row["queued"],
    )


def _turn(row: Any) -> Turn:
    return Turn(
        tenant_id=row["tenant_id"],
        conversation_id=str(row["conversation_id"]),
        id=str(row["id"]),
        request_id=row["request_id"],
        status=row["status"],
        stop_reason=row["stop_reason"],
        stop_detail=row["stop_detail"],
        error=json.loads(row["error"]) if row["error"] else None,
        content=row["content"],
        options=TurnOptions.from_json(json.loads(row["options"])),
        user_message_id=str(row["user_message_id"]),
        message_count=row["message_count"],
        usage=_usage(row),
        cost_usd=row["cost_usd"],
        created_by=row["created_by"],
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        started=row["started"],
        first_sequence=row["first_sequence"],
        last_sequence=row["last_sequence"],
        end_logged=row["end_logged"],
    )


def _message(row: Any) -> Message:
    usage = _usage(row) if row["role"] != "USER" else None
    return Message(
        tenant_id=row["tenant_id"],
        conversation_id=str(row["conversation_id"]),
        id=row["id"],
        turn_id=str(row["turn_id"]),
        role=row["role"],
        source=row["source"],
        content=row["content"],
        model=row["model"],
        usage=usage,
        cost_usd=row["cost_usd"],
        create_time=row["create_time"],
    )


class PgConversationStore:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool

    async def create(self, conversation: Conversation) -> Conversation:
        c = conversation
        # The stored row (its times and counters) in the same round trip.
        row = await self.pool.fetchrow(
            f"""
            INSERT INTO conversations AS c (tenant_id, id, title, team, participants, model,
                agent_models, max_turns_per_message, speaker_policy, labels,
                turn_timeout_seconds, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            RETURNING {_CONVERSATION_COLUMNS}
            """,
            c.tenant_id,
            c.id,
            c.title,
            json.dumps(c.team.to_json()),
            c.participants,
            json.dumps(c.model),
            json.dumps(c.agent_models),
            c.max_turns_per_message,
            c.speaker_policy,
            json.dumps(c.labels),
            c.turn_timeout_seconds,
            c.created_by,
        )
        assert row is not None
        return _conversation(row)

    async def get(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        row = await self.pool.fetchrow(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
            "WHERE c.tenant_id = $1 AND c.id = $2",
            tenant_id,
            conversation_id,
        )
        return _conversation(row) if row else None

    async def update(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        title: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Conversation | None:
        row = await self.pool.fetchrow(
            f"""
            UPDATE conversations c SET title = COALESCE($3, c.title),
                labels = COALESCE($4::jsonb, c.labels), update_time = now()
            WHERE c.tenant_id = $1 AND c.id = $2
            RETURNING {_CONVERSATION_COLUMNS}
            """,
            tenant_id,
            conversation_id,
            title,
            None if labels is None else json.dumps(labels),
        )
        return _conversation(row) if row else None

    async def list_conversations(
        self,
        tenant_id: str,
        *,
        status: str,
        labels: dict[str, str],
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[Conversation]:
        status_sql = {
            "": "TRUE",
            IDLE: "c.active_turn_id IS NULL",
            RUNNING: "c.active_turn_id IS NOT NULL AND EXISTS (SELECT 1 FROM turns t WHERE "
            "t.tenant_id = c.tenant_id AND t.conversation_id = c.id AND t.id = c.active_turn_id "
            "AND t.status = 'RUNNING')",
            # (active_turn_id IS NOT NULL: a partial index holds those conversations alone)
            WAITING_FOR_APPROVAL: "c.active_turn_id IS NOT NULL AND EXISTS (SELECT 1 FROM turns t "
            "WHERE t.tenant_id = c.tenant_id "
            "AND t.conversation_id = c.id AND t.id = c.active_turn_id "
            "AND t.status = 'WAITING_FOR_APPROVAL')",
        }[status]
        rows = await self.pool.fetch(
            f"""
            SELECT {_CONVERSATION_COLUMNS} FROM conversations c
            WHERE c.tenant_id = $1 AND c.labels @> $2::jsonb AND {status_sql}
              AND ($3::timestamptz IS NULL OR (c.update_time, c.id) < ($3, $4::uuid))
            ORDER BY c.update_time DESC, c.id DESC LIMIT $5
            """,
            tenant_id,
            json.dumps(labels),
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [_conversation(row) for row in rows]

    async def delete(
        self, tenant_id: str, conversation_id: str, *, idle_only: bool = False
    ) -> bool:
        idle = (
            " AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.tenant_id = c.tenant_id"
            " AND t.conversation_id = c.id AND t.status <> 'ENDED')"
        )
        result = await self.pool.execute(
            "DELETE FROM conversations c WHERE tenant_id = $1 AND id = $2"
            + (idle if idle_only else ""),
            tenant_id,
            conversation_id,
        )
        return bool(result.endswith(" 1"))

    async def mark_deleting(
        self, tenant_id: str, conversation_id: str, deleting: bool = True
    ) -> None:
        await self.pool.execute(
            "UPDATE conversations SET deleting = $3 WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            conversation_id,
            deleting,
        )

    async def end_queued(
        self, tenant_id: str, conversation_id: str, turn_id: str, outcome: TurnOutcome
    ) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            # The conversation first, as the end of the running turn does before it promotes
            # the next one: one of the two waits for the other, and this one then finds the
            # turn promoted (or the promotion finds it ended).
            await conn.execute(
                "SELECT 1 FROM conversations WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE",
                tenant_id,
                conversation_id,
            )
            result = await conn.execute(
                "UPDATE turns SET status = 'ENDED', stop_reason = $4, stop_detail = $5, "
                "end_time = now() WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3 "
                "AND status = 'QUEUED'",
                tenant_id,
                conversation_id,
                turn_id,
                outcome.stop_reason,
                outcome.stop_detail,
            )
        return bool(result.endswith(" 1"))

    async def admit_turn(self, turn: Turn, *, enqueue: bool, max_queued: int) -> Admitted:
        # One round trip (this is on the way to every turn's first token): lock the
        # conversation, decide (a repeated request, runs now, queued, busy), and when
        # admitted add the turn, its user message if it runs now (a queued turn's enters the
        # transcript when it starts) and the conversation's counters.
        try:
            row: Any = await self._admit(turn, enqueue, max_queued)
        except asyncpg.UniqueViolationError:
            row = None  # a call with the same request_id added its turn meanwhile
        except asyncpg.NoDataFoundError:  # (0015_conversation_deleting.sql)
            raise NotFound(
                f"conversation {turn.conversation_id} is being deleted",
                metadata={"conversation_id": turn.conversation_id},
            ) from None
        if row is None:
            existing = await self._turn_of_request(turn)
            if existing is not None:
                return Admitted(existing, existing=True)
            raise NotFound(
                f"conversation {turn.conversation_id} does not exist",
                metadata={"conversation_id": turn.conversation_id},
            )
        outcome = row["outcome"]
        if outcome == "EXISTING":
            found = str(row["existing"])
            existing = await self.get_turn(turn.tenant_id, turn.conversation_id, found)
            if existing is None:  # deleted since, with its conversation
                raise NotFound(
                    f"conversation {turn.conversation_id} does not exist",
                    metadata={"conversation_id": turn.conversation_id},
                )
            return Admitted(existing, existing=True)
        if outcome == "BUSY":
            return Admitted(turn, existing=False, busy=True)
        if outcome == "FULL":
            return Admitted(turn, existing=False, busy=True, queue_full=True)
        admitted = dataclasses.replace(
            turn,
            status=outcome,
            create_time=row["create_time"],
            start_time=row["start_time"],
        )
        return Admitted(
            admitted, existing=False, position=row["queued"] + 1 if outcome == QUEUED else 0
        )

    async def _turn_of_request(self, turn: Turn) -> Turn | None:
        found = await self.pool.fetchval(
            "SELECT id FROM turns WHERE tenant_id = $1 AND conversation_id = $2 "
            "AND request_id = $3",
            turn.tenant_id,
            turn.conversation_id,
            turn.request_id,
        )
        if found is None:
            return None
        return await self.get_turn(turn.tenant_id, turn.conversation_id, str(found))

    async def _admit(self, turn: Turn, enqueue: bool, max_queued: int) -> Any:
        return await self.pool.fetchrow(
            "SELECT outcome, existing, queued, create_time, start_time "
            "FROM convergio_admit_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            turn.tenant_id,
            turn.conversation_id,
            turn.id,
            turn.request_id,
            turn.content,
            json.dumps(turn.options.to_json()),
            turn.user_message_id,
            turn.created_by,
            enqueue,
            max_queued,
        )

    async def get_for_request(
        self, tenant_id: str, conversation_id: str, request_id: str
    ) -> tuple[Conversation | None, str | None]:
        row = await self.pool.fetchrow(
            f"SELECT {_CONVERSATION_COLUMNS}, "
            "(SELECT r.id FROM turns r WHERE r.tenant_id = c.tenant_id "
            "AND r.conversation_id = c.id AND r.request_id = $3) AS request_turn_id "
            "FROM conversations c WHERE c.tenant_id = $1 AND c.id = $2",
            tenant_id,
            conversation_id,
            request_id,
        )
        if row is None:
            return None, None
        earlier = row["request_turn_id"]
        return _conversation(row), None if earlier is None else str(earlier)

    async def add_message(self, message: Message) -> None:
        m = message
        usage = m.usage or Usage()
        # One statement (one round trip, atomic): the message and both counters. Written
        # again (a retry after an outage that hid whether it was), it changes nothing.
        async with pg.outage_as_unavailable():
            await self._add_message(m, usage)

    async def _add_message(self, m: Message, usage: Usage) -> None:
        await self.pool.execute(
            """
            WITH added AS (
                INSERT INTO messages (tenant_id, conversation_id, id, turn_id, role, source,
                    content, model, prompt_tokens, completion_tokens, cached_tokens,
                    model_calls, cost_usd)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                ON CONFLICT DO NOTHING
                RETURNING turn_id
            ), counted AS (
                UPDATE turns SET message_count = message_count + 1
                WHERE tenant_id = $1 AND conversation_id = $2
                    AND id = (SELECT turn_id FROM added)
            )
            UPDATE conversations SET message_count = message_count + 1, update_time = now()
            WHERE tenant_id = $1 AND id = $2 AND EXISTS (SELECT 1 FROM added)
            """,
            m.tenant_id,
            m.conversation_id,
            m.id,
            m.turn_id,
            m.role,
            m.source,
            m.content,
            m.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.model_calls,
            m.cost_usd,
        )

    async def finish_turn(
        self, tenant_id: str, conversation_id: str, turn_id: str, outcome: TurnOutcome
    ) -> tuple[bool, Turn | None]:
        u = outcome.usage
        # One round trip (see migration 0006): the turn, the team state, the conversation's
        # counters, and the next queued turn started.
        async with pg.outage_as_unavailable():
            row = await self.pool.fetchrow(
                "SELECT ended, promoted FROM convergio_finish_turn("
                "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                tenant_id,
                conversation_id,
                turn_id,
                outcome.stop_reason,
                outcome.stop_detail,
                json.dumps(outcome.error) if outcome.error else None,
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.model_calls,
                outcome.cost_usd,
                outcome.team_state_json,
            )
        if row is None or not row["ended"]:
            return False, None
        if row["promoted"] is None:
            return True, None
        return True, await self.get_turn(tenant_id, conversation_id, str(row["promoted"]))

    async def mark_started(self, tenant_id: str, conversation_id: str, turn_id: str) -> bool:
        status = await self.pool.execute(
            # It starts now: its start time was the moment it was promoted.
            "UPDATE turns SET started = true, start_time = now() WHERE tenant_id = $1 "
            "AND conversation_id = $2 AND id = $3 AND status = 'RUNNING' AND NOT started",
            tenant_id,
            conversation_id,
            turn_id,
        )
        return bool(status.endswith(" 1"))

    async def unstarted_turns(self, limit: int) -> list[Turn]:
        rows = await self.pool.fetch(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE status = 'RUNNING' AND NOT started "
            "ORDER BY start_time LIMIT $1",
            limit,
        )
        return [_turn(row) for row in rows]

    async def unlogged_ends(self, ended_before_seconds: float, limit: int) -> list[Turn]:
        rows = await self.pool.fetch(
            # end_logged is set when the log's TurnCompleted is stored (a trigger); the
            # partial index holds only the turns without one. A day on, a turn whose end
            # the log keeps refusing is left (it no longer holds the others back).
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE status = 'ENDED' AND NOT end_logged "
            "AND end_time > now() - interval '1 day' "
            "AND end_time < now() - make_interval(secs => $1) "
            "ORDER BY end_time LIMIT $2",
            ended_before_seconds,
            limit,
        )
        return [_turn(row) for row in rows]

    async def long_running(self, older_than_seconds: float, limit: int) -> list[Conversation]:
        rows = await self.pool.fetch(
            # From the running turns (a partial index), not from every conversation.
            f"SELECT {_CONVERSATION_COLUMNS} FROM turns r JOIN conversations c "
            "ON c.tenant_id = r.tenant_id AND c.id = r.conversation_id "
            "AND c.active_turn_id = r.id "
            "WHERE r.status = 'RUNNING' AND r.started "
            "AND r.start_time < now() - make_interval(secs => $1) "
            "ORDER BY r.start_time LIMIT $2",
            older_than_seconds,
            limit,
        )
        return [_conversation(row) for row in rows]

    async def get_turn(self, tenant_id: str, conversation_id: str, turn_id: str) -> Turn | None:
        row = await self.pool.fetchrow(
            f"SELECT {_TURN_COLUMNS} FROM turns "
            "WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3",
            tenant_id,
            conversation_id,
            turn_id,
        )
        return _turn(row) if row else None

    async def list_turns(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        status: str,
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[Turn]:
        rows = await self.pool.fetch(
            f"""
            SELECT {_TURN_COLUMNS} FROM turns
            WHERE tenant_id = $1 AND conversation_id = $2 AND ($3 = '' OR status = $3)
              AND ($4::timestamptz IS NULL OR (create_time, id) < ($4, $5::uuid))
            ORDER BY create_time DESC, id DESC LIMIT $6
            """,
            tenant_id,
            conversation_id,
            status,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [_turn(row) for row in rows]

    async def list_messages(
        self,
        tenant_id: str,
        conversation_id: str,
        *,
        turn_id: str,
        after: int | None,
        limit: int,
    ) -> list[tuple[int, Message]]:
        rows = await self.pool.fetch(
            """
            SELECT * FROM messages
            WHERE tenant_id = $1 AND conversation_id = $2
              AND ($3 = '' OR turn_id = $3::text::uuid) AND position > $4
            ORDER BY position LIMIT $5
            """,
            tenant_id,
            conversation_id,
            turn_id,
            after or 0,
            limit,
        )
        return [(row["position"], _message(row)) for row in rows]

    async def load_memory(
        self,
        tenant_id: str,
        conversation_id: str,
        turn_id: str,
        limit: int,
        *,
        held_turn_id: str = "",
    ) -> Memory:
        # One round trip when the state is current (the usual case): the state, where its
        # turn's messages end, and whether other turns wrote messages after that.
        row: Any = await self.pool.fetchrow(
            """
            WITH s AS (
                SELECT state, turn_id FROM team_states
                WHERE tenant_id = $1 AND conversation_id = $2
            ), cut AS (
                SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM s) THEN 0
                    -- (the latest first, from the end of the order's index: its turn's
                    -- messages are near the end; max() read the whole conversation's)
                    ELSE COALESCE((SELECT m.position FROM messages m
                        WHERE m.tenant_id = $1 AND m.conversation_id = $2
                            AND m.turn_id = (SELECT turn_id FROM s)
                        ORDER BY m.position DESC LIMIT 1),
                        9223372036854775807)
                    END AS position
            )
            SELECT CASE WHEN (SELECT turn_id::text FROM s) = $4 THEN NULL
                    ELSE (SELECT state FROM s) END AS state,
                (SELECT turn_id::text FROM s) = $4 AS held,
                (SELECT position FROM cut) AS cut,
                EXISTS (SELECT 1 FROM messages m
                    WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.turn_id <> $3
                        AND m.position > (SELECT position FROM cut)) AS behind
            """,
            tenant_id,
            conversation_id,
            turn_id,
            held_turn_id,
        )
        state = orjson.loads(row["state"]) if row["state"] else None
        held = bool(row["held"])
        if not row["behind"]:
            return Memory(state, [], held)
        rows = await self.pool.fetch(
            "SELECT * FROM messages "
            "WHERE tenant_id = $1 AND conversation_id = $2 AND turn_id <> $3 AND position > $4 "
            "ORDER BY position DESC LIMIT $5",
            tenant_id,
            conversation_id,
            turn_id,
            row["cut"],
            limit,
        )
        return Memory(state, [_message(r) for r in reversed(rows)], held)

    async def running_turns(self, tenant_id: str, conversation_id: str) -> list[Turn]:
        rows = await self.pool.fetch(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE tenant_id = $1 AND conversation_id = $2 "
            "AND status IN ('RUNNING', 'WAITING_FOR_APPROVAL') ORDER BY create_time",
            tenant_id,
            conversation_id,
        )
        return [_turn(row) for row in rows]


def as_decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
