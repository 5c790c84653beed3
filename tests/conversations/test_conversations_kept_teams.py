"""Teams kept in memory between turns: the next turn in the same process answers exactly as
a team rebuilt from the saved state would, a turn run by another process in between makes
the kept team stale (it is not used), a turn that did not end well drops its team, and the
kept teams are bounded in number and idle time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from convergio import AsyncClient
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.domain.conversations.kept_teams import MEMORY_PER_STATE_BYTE, KeptTeams

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    collect,
    kinds,
    member_key,
    new_conversation,
    switch_on,
    wait_streaming,
)
from tests.support.server import RunningServer, running_server, scrape_metrics, server_settings

# A core-team conversation: several speakers, a tool call and its result, documents.
MESSAGES: list[tuple[str, list[pb.InputDocument]]] = [
    ("How should we plan the product launch and its budget?", []),
    (FINANCE_QUESTION, []),
    (
        "Summarise the notes for the team.",
        [pb.InputDocument(title="notes", content="The launch moves to March; budget 40000.")],
    ),
    ("What are the risks of the strategy, and who owns them?", []),
    ("Thanks. One more time: the launch plan, briefly.", []),
]


def _teams(server: RunningServer) -> KeptTeams:
    teams: KeptTeams = server.server.context.components["conversations"].runner.teams
    return teams


@pytest.fixture
async def rebuilding(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, server: RunningServer
) -> AsyncIterator[RunningServer]:
    """A second server on the same stores that keeps no team: every turn restores one."""
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, teams_kept=0)
    async with running_server(settings) as running:
        yield running


@pytest.fixture
async def clients(
    server: RunningServer, rebuilding: RunningServer, streaming: None
) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    key = await member_key(server)
    async with (
        AsyncClient(server.target, api_key=key) as keeping,
        AsyncClient(rebuilding.target, api_key=key) as rebuilt,
    ):
        await wait_streaming(keeping)
        await wait_streaming(rebuilt)
        yield keeping, rebuilt


async def _turn(client: AsyncClient, cid: str, content: str, docs: list[Any]) -> tuple[int, int]:
    """Send a message; the turn's usage (prompt, completion tokens)."""
    events = await collect(client.conversations.send(cid, content, documents=docs))
    assert kinds(events)[-1] == "turn_completed"
    ended = events[-1].turn_completed
    assert ended.stop_reason == events_pb2.STOP_REASON_COMPLETED
    return ended.usage.prompt_tokens, ended.usage.completion_tokens


async def _transcript(client: AsyncClient, cid: str) -> list[tuple[str, str, int, int]]:
    listed = await client.conversations.list_messages(conversation_id=cid, page_size=200)
    return [
        (m.source, m.content, m.usage.prompt_tokens, m.usage.completion_tokens)
        for m in listed.messages
    ]


@pytest.mark.parametrize(
    "team",
    [pb.Team(preset="core"), pb.Team(single_agent="amy")],
    ids=["core team", "single agent"],
)
async def test_a_kept_team_answers_as_a_team_restored_from_its_saved_state(
    server: RunningServer, clients: tuple[AsyncClient, AsyncClient], team: pb.Team
) -> None:
    # The offline model answers from its whole context and counts its prompt: a kept team
    # that remembered more, less or otherwise than the saved state would differ here.
    keeping, rebuilt = clients
    kept_cid = await new_conversation(keeping, team=team)
    rebuilt_cid = await new_conversation(rebuilt, team=team)
    teams = _teams(server)
    for content, docs in MESSAGES:
        used = await _turn(keeping, kept_cid, content, docs)
        assert kept_cid in teams  # kept for the next turn
        assert used == await _turn(rebuilt, rebuilt_cid, content, docs)
    kept, restored = await _transcript(keeping, kept_cid), await _transcript(rebuilt, rebuilt_cid)
    assert len(kept) >= 2 * len(MESSAGES)  # the user's and at least one answer each
    assert kept == restored


async def test_a_team_kept_here_is_not_used_after_another_process_ran_a_turn(
    server: RunningServer, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    # Turns alternate between the keeping server and the other one: the team kept here
    # misses the other's turns, so each turn here must restore the saved state instead.
    keeping, rebuilt = clients
    alternating = await new_conversation(keeping, team=pb.Team(preset="core"))
    reference = await new_conversation(rebuilt, team=pb.Team(preset="core"))
    for index, (content, docs) in enumerate(MESSAGES):
        await _turn(keeping if index % 2 == 0 else rebuilt, alternating, content, docs)
        await _turn(rebuilt, reference, content, docs)
    assert alternating in _teams(server)
    assert await _transcript(keeping, alternating) == await _transcript(rebuilt, reference)


async def test_a_cancelled_turn_drops_its_team_and_the_next_one_hears_it(
    paced: RunningServer, streaming: None
) -> None:
    async with AsyncClient(paced.target, api_key=await member_key(paced)) as client:
        await wait_streaming(client)
        cid = await new_conversation(client)
        await _turn(client, cid, "Hello there.", [])
        teams = _teams(paced)
        assert cid in teams
        stream = client.conversations.send(cid, "Explain the strategy for next year in detail")
        async for event in stream:
            if event.HasField("token_delta"):
                await client.conversations.cancel_turn(conversation_id=cid, turn_id=event.turn_id)
                break
        ended = await collect(stream)
        assert ended[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED
        assert cid not in teams
        # The next turn restores the saved state and hears the cancelled turn again.
        events = await collect(client.conversations.send(cid, "Go on."))
        assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
        assert cid in teams


async def test_a_turn_that_needs_another_team_gets_one(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, server: RunningServer
) -> None:
    # Token streaming turned off between two turns: the kept team streamed, so the next
    # turn builds one that does not.
    tenant = "kept-teams-flags"
    await switch_on(server, "true_streaming", tenant)
    _, token = await server.server.keys.create(tenant, "kept teams", ["admin"])
    async with AsyncClient(server.target, api_key=token) as client:
        cid = await new_conversation(client)
        first = await collect(client.conversations.send(cid, "Hello there."))
        assert "token_delta" in kinds(first)
        flag = (await client.flags.get_flag(key="true_streaming")).flag
        flag.enabled = False
        await client.flags.upsert_flag(flag=flag, expected_version=flag.version)
        for _ in range(200):
            if not (await client.flags.evaluate_flag(key="true_streaming")).evaluation.value:
                break
            await asyncio.sleep(0.05)
        second = await collect(client.conversations.send(cid, "And again."))
        assert second[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
        assert "token_delta" not in kinds(second)
        assert "message_completed" in kinds(second)


class _Team:
    """What the kept teams close: a team's model clients."""

    def __init__(self) -> None:
        self.closed = 0
        self.closers: list[Callable[[], Awaitable[None]]] = [self._close]

    async def _close(self) -> None:
        self.closed += 1


async def test_kept_teams_are_bounded_and_the_oldest_go_first() -> None:
    teams = KeptTeams(size=2, idle_seconds=60)
    a, b, c = _Team(), _Team(), _Team()
    teams.keep("a", a, "t1")
    teams.keep("b", b, "t1")
    teams.keep("c", c, "t1")
    assert "a" not in teams and len(teams) == 2
    kept = teams.take("b")
    assert kept is not None and kept.team is b and kept.state_turn_id == "t1"
    assert teams.take("b") is None  # taken: a turn runs it
    await teams.close()
    assert (a.closed, b.closed, c.closed) == (1, 0, 1)  # b belongs to its turn now


async def test_a_team_idle_too_long_is_dropped_and_closed() -> None:
    teams = KeptTeams(size=10, idle_seconds=0.05)
    idle = _Team()
    teams.keep("idle", idle, "t1")
    for _ in range(200):
        if idle.closed:
            break
        await asyncio.sleep(0.01)
    assert idle.closed == 1 and "idle" not in teams
    none_kept = KeptTeams(size=0, idle_seconds=60)
    unkept = _Team()
    none_kept.keep("x", unkept, "t1")
    await none_kept.close()
    assert unkept.closed == 1 and none_kept.take("x") is None


async def test_kept_teams_stay_within_their_memory_budget() -> None:
    # Weighed by their saved state's size: big teams push the oldest out, and a team
    # bigger than the whole budget is not kept at all.
    teams = KeptTeams(size=100, idle_seconds=60, memory_bytes=1000 * MEMORY_PER_STATE_BYTE)
    small, big, huge = _Team(), _Team(), _Team()
    teams.keep("small", small, "t1", state_bytes=400)
    teams.keep("big", big, "t1", state_bytes=700)
    assert "small" not in teams and "big" in teams
    assert teams.weight == 700 * MEMORY_PER_STATE_BYTE
    teams.keep("huge", huge, "t1", state_bytes=1001)
    assert "huge" not in teams and "big" in teams
    taken = teams.take("big")
    assert taken is not None and teams.weight == 0
    await teams.close()
    assert (small.closed, big.closed, huge.closed) == (1, 0, 1)


def _sample(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    return float(next(row for row in text.splitlines() if row.startswith(prefix)).split()[-1])


async def test_an_operator_sees_how_turns_got_their_teams(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    # The metrics sum every runner of this process (other tests' servers too): compare.
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix, metrics=True)
    address = settings.metrics_listen
    async with running_server(settings) as running:
        async with AsyncClient(running.target, api_key=await member_key(running)) as client:
            cid = await new_conversation(client)
            await collect(client.conversations.send(cid, "Hello there."))
            before = await asyncio.to_thread(scrape_metrics, address)
            await collect(client.conversations.send(cid, "And again."))
            after = await asyncio.to_thread(scrape_metrics, address)
    reused = 'team="reused"'
    assert _sample(after, "convergio_team_turns_total", reused) == (
        _sample(before, "convergio_team_turns_total", reused) + 1
    )
    assert _sample(before, "convergio_team_turns_total", 'team="none_kept"') >= 1
    assert _sample(after, "convergio_teams_kept") >= 1
    assert _sample(after, "convergio_teams_kept_estimated_bytes") > 0


async def test_a_deleted_conversation_leaves_no_kept_team(
    server: RunningServer, clients: tuple[AsyncClient, AsyncClient]
) -> None:
    keeping, _ = clients
    cid = await new_conversation(keeping)
    await _turn(keeping, cid, "Hello there.", [])
    teams = _teams(server)
    assert cid in teams
    await keeping.conversations.delete_conversation(conversation_id=cid)
    assert cid not in teams
