"""More than one server process on one database and Redis: a turn followed from another
process, the turn of a process that died ended by another one, and a conversation that
goes on after a restart with its team state restored."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from convergio import AsyncClient, RetryPolicy, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio.cost.v1 import cost_pb2
from convergio_server.domain.conversations.model import Turn, TurnOptions, TurnOutcome
from convergio_server.storage.redis import Keys

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    TENANT,
    collect,
    kinds,
    member_key,
    new_conversation,
    switch_on,
    wait_streaming,
)
from tests.platform.procs import serve_process
from tests.support.server import RunningServer, running_server, server_settings

LONG = "Explain the strategy for next year in detail"


@pytest.fixture
async def other_process(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, server: RunningServer
) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """`convergio serve` as a separate OS process on the session's database and Redis, with a
    paced offline model and a one-second turn lease."""
    async with serve_process(
        tmp_path,
        pg_dsn,
        redis_url,
        redis_prefix,
        CONVERGIO_OFFLINE_TOKENS_PER_SECOND="40",
        CONVERGIO_TURN_LEASE_SECONDS="1",
    ) as running:
        yield running


@dataclass
class Sides:
    there: AsyncClient  # a client of the other process
    here: AsyncClient  # a client of this test's server
    conversation_id: str  # a new conversation, made through the other process


@pytest.fixture
async def sides(
    other_process: tuple[subprocess.Popen[str], str], server: RunningServer, streaming: None
) -> AsyncIterator[Sides]:
    _, target = other_process
    key = await member_key(server)
    async with (
        AsyncClient(target, api_key=key) as there,
        AsyncClient(server.target, api_key=key) as here,
    ):
        await wait_streaming(there)
        yield Sides(there, here, await new_conversation(there))


async def test_a_turn_on_one_process_is_followed_on_another(sides: Sides) -> None:
    cid = sides.conversation_id
    stream = sides.there.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
    first = await stream.__anext__()
    follower = [
        event async for event in sides.here.conversations.follow(cid, turn_id=first.turn_id)
    ]
    direct = [first] + [event async for event in stream]
    assert [e.SerializeToString() for e in follower] == [e.SerializeToString() for e in direct]
    assert kinds(follower)[-1] == "turn_completed"
    assert "token_delta" in kinds(follower)


async def test_a_turn_queued_here_and_run_there_streams_here(sides: Sides) -> None:
    # The queued turn starts in the process that ends the running one: the stream of the
    # SendMessage that queued it, in this process, follows it through Redis.
    cid = sides.conversation_id
    running = sides.there.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
    first = await running.__anext__()
    queued = await collect(
        sides.here.conversations.send(
            conversation_id=cid, content="And the risks?", if_busy=pb.BUSY_POLICY_ENQUEUE
        )
    )
    earlier = [first] + [event async for event in running]
    assert kinds(earlier)[-1] == "turn_completed"
    names = kinds(queued)
    assert names[0] == "turn_queued" and names[-1] == "turn_completed"
    assert {"turn_started", "token_delta", "message_completed"} <= set(names)
    assert {e.turn_id for e in queued} == {queued[0].turn_id} != {first.turn_id}
    sequences = [e.sequence for e in queued]
    assert sequences == sorted(set(sequences))
    assert queued[1].sequence > earlier[-1].sequence  # after the running turn ended
    assert queued[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_the_turn_of_a_dead_process_is_ended_by_another(
    other_process: tuple[subprocess.Popen[str], str], sides: Sides
) -> None:
    process, _ = other_process
    cid = sides.conversation_id
    stream = sides.there.conversations.send_message(conversation_id=cid, content=LONG)
    first = (await stream.__anext__()).event
    follower = sides.here.conversations.stream_events(conversation_id=cid, turn_id=first.turn_id)
    process.kill()  # no chance to end its turn
    process.wait()
    stream.cancel()
    await asyncio.sleep(1.5)  # the one-second lease expires
    # The next message finds the dead owner's turn and ends it before starting its own.
    after = await collect(sides.here.conversations.send(conversation_id=cid, content="Hello"))
    assert after[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    ended = [r.event async for r in follower]
    assert kinds(ended)[-2:] == ["error", "turn_completed"]
    assert ended[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    assert ended[-2].error.retryable
    sequences = [e.sequence for e in ended]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


async def test_a_forced_delete_right_after_its_turns_process_died_succeeds(
    other_process: tuple[subprocess.Popen[str], str],
    sides: Sides,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The dead process's turn stops only once its lease expires: the delete waits for that,
    # ends the turn (logged as every turn's end is), and deletes the conversation.
    caplog.set_level(logging.INFO, logger="convergio.turns")
    process, _ = other_process
    cid = sides.conversation_id
    stream = sides.there.conversations.send_message(conversation_id=cid, content=LONG)
    first = (await stream.__anext__()).event
    queued = sides.there.conversations.send_message(
        conversation_id=cid, content="Then this", if_busy=pb.BUSY_POLICY_ENQUEUE
    )
    await queued.__anext__()
    process.kill()  # no chance to end its turn
    process.wait()
    stream.cancel()
    queued.cancel()
    await sides.here.conversations.delete_conversation(conversation_id=cid, force=True)
    with pytest.raises(errors.NotFound):
        await sides.here.conversations.get_conversation(conversation_id=cid)
    (record,) = [r for r in caplog.records if getattr(r, "turn", None) == first.turn_id]
    assert record.levelno == logging.WARNING
    assert getattr(record, "stop_reason") == "ERROR"  # noqa: B009


async def test_a_dead_process_and_a_redis_that_lost_its_data_reuse_no_number(
    other_process: tuple[subprocess.Popen[str], str],
    sides: Sides,
    server: RunningServer,
    redis_prefix: str,
) -> None:
    process, _ = other_process
    cid = sides.conversation_id
    stream = sides.there.conversations.send_message(conversation_id=cid, content=LONG)
    seen = []
    async for response in stream:
        seen.append(response.event)
        if kinds(seen).count("token_delta") == 5:
            break
    process.kill()  # no chance to end its turn
    process.wait()
    stream.cancel()
    # Redis restarted without its data: the conversation's counter, stream and turns.
    keys = Keys(redis_prefix)
    await server.infra.redis.delete(
        *(keys.k("conv", TENANT, cid, name) for name in ("seq", "events", "turns"))
    )
    await asyncio.sleep(1.5)  # the one-second lease expires
    follower = sides.here.conversations.stream_events(
        conversation_id=cid, turn_id=seen[0].turn_id, after_sequence=seen[-1].sequence
    )
    # Its end comes after every number the client saw (token deltas are not durable).
    await collect(sides.here.conversations.send(conversation_id=cid, content="Hello"))
    async with asyncio.timeout(60):  # (numbered below what it saw, the end never comes)
        ended = [r.event async for r in follower]
    assert kinds(ended)[-2:] == ["error", "turn_completed"]
    assert all(e.sequence > seen[-1].sequence for e in ended)


async def test_the_turn_of_a_dead_process_ends_and_its_queue_runs_with_nobody_asking(
    other_process: tuple[subprocess.Popen[str], str],
    server: RunningServer,
    tmp_path: Path,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    streaming: None,
) -> None:
    process, target = other_process
    # A server that sweeps every second (every lease period) for turns whose process died.
    settings = server_settings(
        tmp_path / "sweeping", pg_dsn, redis_url, redis_prefix, turn_lease_seconds=1.0
    )
    key = await member_key(server)
    async with (
        running_server(settings) as sweeping,
        AsyncClient(target, api_key=key) as there,
        AsyncClient(sweeping.target, api_key=key) as here,
    ):
        await wait_streaming(there)
        cid = await new_conversation(there)
        running = there.conversations.send(conversation_id=cid, content=LONG)
        first = await running.__anext__()
        queued = there.conversations.send(
            conversation_id=cid, content="And the risks?", if_busy=pb.BUSY_POLICY_ENQUEUE
        )
        waiting = await queued.__anext__()
        assert waiting.HasField("turn_queued")
        process.kill()  # no chance to end its turn
        process.wait()
        await running.aclose()
        await queued.aclose()
        # Nobody sends, follows or cancels anything in the conversation: the sweep ends the
        # dead process's turn, and the turn queued behind it runs.
        async with asyncio.timeout(60):
            while True:
                got = await here.conversations.get_turn(
                    conversation_id=cid, turn_id=waiting.turn_id
                )
                if got.turn.status == pb.TURN_STATUS_ENDED:
                    break
                await asyncio.sleep(0.2)
        assert got.turn.stop_reason == events_pb2.STOP_REASON_COMPLETED
        dead = await here.conversations.get_turn(conversation_id=cid, turn_id=first.turn_id)
        assert dead.turn.stop_reason == events_pb2.STOP_REASON_ERROR
        logged = [
            r.event
            async for r in here.conversations.stream_events(
                conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
            )
        ]
        ends = [e for e in logged if e.HasField("turn_completed")]
        assert [e.turn_id for e in ends] == [first.turn_id, waiting.turn_id]


async def test_a_conversation_goes_on_after_a_restart(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    settings = server_settings(tmp_path / "a", pg_dsn, redis_url, redis_prefix)
    async with running_server(settings) as first:
        async with AsyncClient(first.target, api_key=await member_key(first)) as client:
            cid = await new_conversation(client)
            one = await collect(
                client.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
            )
            key = await member_key(first)
    settings = server_settings(tmp_path / "b", pg_dsn, redis_url, redis_prefix)
    async with running_server(settings) as second:
        async with AsyncClient(second.target, api_key=key) as client:
            await wait_streaming(client)
            two = await collect(
                client.conversations.send(
                    conversation_id=cid, content="Summarize what the ROI was."
                )
            )
            answer = next(e.message_completed for e in two if e.HasField("message_completed"))
            # The new process knows the earlier turn only from the saved team state.
            assert "20" in answer.content
            assert two[0].sequence == one[-1].sequence + 1
            transcript = await client.conversations.list_messages(conversation_id=cid)
            assert [m.source for m in transcript.messages] == ["user", "amy", "user", "amy"]


async def test_a_turn_whose_lease_another_process_took_is_ended(
    other_process: tuple[subprocess.Popen[str], str], server: RunningServer, redis_prefix: str
) -> None:
    # The turn's process renews its lease (one second here) while the turn runs; if another
    # holder takes it (the process looked dead to the others), the turn stops rather than
    # run twice. Nothing the tenant's turns did: its breaker does not count it.
    tenant = f"lease-{uuid.uuid4().hex[:8]}"
    await switch_on(server, "true_streaming", tenant)
    _, key = await server.server.keys.create(tenant, "lease", ["member", "operator"])
    async with AsyncClient(other_process[1], api_key=key) as client:
        await wait_streaming(client)
        cid = await new_conversation(client)
        stream = client.conversations.send(conversation_id=cid, content=LONG)
        first = await stream.__anext__()
        lease = Keys(redis_prefix).k("conv", tenant, cid, "lease")
        holder = await server.infra.redis.get(lease)
        assert isinstance(holder, bytes) and holder.decode().endswith(first.turn_id)
        await server.infra.redis.set(lease, "someone-else", px=60_000)
        rest = [event async for event in stream]
        done = rest[-1].turn_completed
        assert done.stop_reason == events_pb2.STOP_REASON_ERROR
        assert "lost the turn's lease" in done.stop_detail
        breaker = await client.costs.get_circuit_breaker(
            scope=cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT
        )
        assert breaker.circuit_breaker.consecutive_failures == 0


async def test_a_stopping_server_ends_its_turns_on_their_open_streams(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    settings = server_settings(
        tmp_path / "stopping",
        pg_dsn,
        redis_url,
        redis_prefix,
        offline_tokens_per_second=40.0,
        offline_min_answer_tokens=2000,
    )
    async with running_server(settings) as running:
        # A tenant of its own: its breaker counts these turns only.
        tenant = f"stopping-{uuid.uuid4().hex[:8]}"
        _, key = await running.server.keys.create(tenant, "stopping", ["member", "operator"])
        async with AsyncClient(running.target, api_key=key) as client:
            cids = [await new_conversation(client) for _ in range(6)]
            streams = [client.conversations.send(conversation_id=c, content=LONG) for c in cids]
            for stream in streams:
                await stream.__anext__()
            # As on SIGTERM: the streams are still open when the turns are ended.
            stopping = asyncio.ensure_future(running.server.stop(3.0))
            ends = await asyncio.gather(*(collect(stream) for stream in streams))
            await stopping
    for events in ends:
        assert kinds(events)[-2:] == ["error", "turn_completed"]
        assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
        assert events[-2].error.retryable
        assert "stopped" in events[-2].error.message
    # Six turns ended by a stopping server are no failures of the tenant's.
    settings = server_settings(tmp_path / "after", pg_dsn, redis_url, redis_prefix)
    async with running_server(settings) as after, AsyncClient(after.target, api_key=key) as client:
        breaker = await client.costs.get_circuit_breaker(
            scope=cost_pb2.CIRCUIT_BREAKER_SCOPE_TENANT
        )
        assert breaker.circuit_breaker.state == cost_pb2.CIRCUIT_STATE_CLOSED
        assert breaker.circuit_breaker.consecutive_failures == 0


@dataclass
class AcrossAStop:
    running: list[events_pb2.ConversationEvent]  # the running turn's events, to its end
    queued: list[events_pb2.ConversationEvent]  # the queued turn's, followed on the next


async def queued_across_a_stop(
    tmp_path: Path,
    stores: tuple[str, str, str],
    *,
    team: pb.Team,
    running: dict[str, Any],
    grace: float,
    **settings: Any,
) -> AcrossAStop:
    """A turn runs and another waits behind it when the server stops (grace `grace`);
    the queued one is then followed, to its end, on the next server."""
    pg_dsn, redis_url, redis_prefix = stores
    first_settings = server_settings(
        tmp_path / "stopping", pg_dsn, redis_url, redis_prefix, **settings
    )
    async with running_server(first_settings) as first:
        key = await member_key(first)
        async with AsyncClient(first.target, api_key=key) as client:
            cid = await new_conversation(client, team=team)
            stream = client.conversations.send(conversation_id=cid, **running)
            await stream.__anext__()
            queued = client.conversations.send(
                conversation_id=cid, content=LONG, max_turns=6, if_busy=pb.BUSY_POLICY_ENQUEUE
            )
            waiting = await queued.__anext__()
            assert waiting.HasField("turn_queued")
            stopping = asyncio.ensure_future(first.server.stop(grace))
            ended = await collect(stream)
            queued.cancel()
            await stopping
    next_settings = server_settings(tmp_path / "next", pg_dsn, redis_url, redis_prefix)
    async with running_server(next_settings) as second:
        async with AsyncClient(second.target, api_key=key) as client:
            async with asyncio.timeout(30):
                events = await collect(client.conversations.follow(cid, turn_id=waiting.turn_id))
    return AcrossAStop(ended, events)


def started_once_and_ended_well(events: list[events_pb2.ConversationEvent]) -> None:
    names = kinds(events)
    assert names[0] == "turn_queued" and names[-1] == "turn_completed", names
    assert names.count("turn_started") == 1 and "error" not in names, names
    assert events[-1].turn_completed.stop_reason in (
        events_pb2.STOP_REASON_COMPLETED,
        events_pb2.STOP_REASON_MAX_TURNS,
    )


async def test_a_turn_queued_when_its_server_stops_runs_on_the_next_one(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    # The running turn is ended by the server that stops; the turn queued behind it has
    # not started: it runs on the next server rather than being ended with an error.
    turns = await queued_across_a_stop(
        tmp_path, (pg_dsn, redis_url, redis_prefix),
        team=pb.Team(single_agent="amy"), running={"content": LONG}, grace=3.0,
        offline_tokens_per_second=40.0, offline_min_answer_tokens=2000,
    )  # fmt: skip
    assert turns.running[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_ERROR
    started_once_and_ended_well(turns.queued)


async def test_a_stopping_server_leaves_the_queued_turn_to_the_next_one(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    # The running turn ends well within the grace period; the long turn queued behind it
    # does not start on the stopping server (it would be cut off there with an error).
    turns = await queued_across_a_stop(
        tmp_path, (pg_dsn, redis_url, redis_prefix),
        team=pb.Team(preset="core"), running={"content": FINANCE_QUESTION, "max_turns": 1},
        grace=5.0, offline_tokens_per_second=60.0,
    )  # fmt: skip
    assert turns.running[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    started_once_and_ended_well(turns.queued)


async def promoted_but_not_started(service: Any, client: AsyncClient) -> tuple[str, str]:
    """A conversation whose running turn a server ended, promoting the queued one, and
    that server died before starting it: (conversation id, the promoted turn's id)."""
    cid = await new_conversation(client)
    creator = (await client.conversations.get_conversation(conversation_id=cid)).conversation

    def turn(content: str) -> Turn:
        return Turn(
            tenant_id=TENANT, conversation_id=cid, id=str(uuid.uuid4()),
            request_id=uuid.uuid4().hex, status="QUEUED", content=content,
            options=TurnOptions(max_turns=1), user_message_id=str(uuid.uuid4()),
            created_by=creator.created_by,
        )  # fmt: skip

    running, queued = turn("Hello"), turn("What was the ROI?")
    assert not (await service.store.admit_turn(running, enqueue=False, max_queued=5)).busy
    assert (await service.store.admit_turn(queued, enqueue=True, max_queued=5)).position
    ended, promoted = await service.store.finish_turn(
        TENANT, cid, running.id, TurnOutcome(stop_reason="COMPLETED")
    )
    assert ended and promoted is not None and promoted.id == queued.id
    assert not promoted.started
    return cid, queued.id


@dataclass
class Promoted:
    """A promoted turn that its server died before starting (`promoted_but_not_started`),
    on the session's server."""

    service: Any
    client: AsyncClient
    cid: str
    turn_id: str

    async def events(self) -> list[events_pb2.ConversationEvent]:
        """The turn's events, followed to its end."""
        async with asyncio.timeout(20):
            return await collect(self.client.conversations.follow(self.cid, turn_id=self.turn_id))


@pytest.fixture
async def promoted(server: RunningServer, streaming: None) -> AsyncIterator[Promoted]:
    service = server.server.context.components["conversations"]
    async with AsyncClient(server.target, api_key=await member_key(server)) as client:
        await wait_streaming(client)
        cid, turn_id = await promoted_but_not_started(service, client)
        yield Promoted(service, client, cid, turn_id)


async def test_a_promoted_turn_whose_server_died_before_starting_it_is_started(
    promoted: Promoted,
) -> None:
    # Any server's look for unstarted turns starts it, once.
    runner = promoted.service.runner
    # (The server's own periodic look may be first: at most one of these starts it.)
    assert sum(await asyncio.gather(runner.sweep(), runner.sweep())) <= 1
    events = await promoted.events()
    names = kinds(events)
    assert names.count("turn_started") == 1 and names[-1] == "turn_completed", names
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_a_cancel_that_arrives_while_a_promoted_turn_starts_is_not_lost(
    promoted: Promoted,
) -> None:
    # The cancel reaches the process that is about to start the turn before the turn runs
    # there: it is applied as soon as the turn starts.
    runner = promoted.service.runner
    assert not runner.cancel_local(promoted.turn_id, "CANCELLED", "stop it")
    await runner.sweep()  # (or the server's own periodic look, if it came first)
    events = await promoted.events()
    assert kinds(events).count("turn_completed") == 1
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED


async def test_cancelling_a_turn_promoted_a_moment_ago_ends_it_once(promoted: Promoted) -> None:
    # Read as queued, promoted before the cancel acts: it is cancelled as a running turn,
    # not marked ended behind the back of the process that runs it.
    cid, turn_id = promoted.cid, promoted.turn_id
    stop = TurnOutcome(stop_reason="CANCELLED")
    assert not await promoted.service.store.end_queued(TENANT, cid, turn_id, stop)
    turn = await promoted.client.conversations.cancel_turn(conversation_id=cid, turn_id=turn_id)
    assert turn.turn.stop_reason == events_pb2.STOP_REASON_CANCELLED
    events = await promoted.events()
    names = kinds(events)
    assert names.count("turn_completed") == 1 and names[-1] == "turn_completed", names
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED


async def test_a_forced_delete_stops_a_turn_promoted_a_moment_ago(
    promoted: Promoted, caplog: pytest.LogCaptureFixture
) -> None:
    client, cid = promoted.client, promoted.cid
    with caplog.at_level(logging.WARNING, logger="convergio_server"):
        await client.conversations.delete_conversation(conversation_id=cid, force=True)
        with pytest.raises(errors.NotFound):
            await client.conversations.get_conversation(conversation_id=cid)
        await asyncio.sleep(0.5)  # what the ended turn still had to write
    assert promoted.turn_id not in promoted.service.runner.local
    # Its end was not retried against a conversation that is gone.
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


async def test_a_stopping_server_ends_streams_that_follow_nothing_running_there(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    # Idle followers and the stream of a queued turn would hold the stop for the whole
    # grace period: they end at once with UNAVAILABLE, to re-attach elsewhere; the stream
    # of the turn running here goes on, and the queued turn is not cancelled.
    settings = server_settings(
        tmp_path / "ending", pg_dsn, redis_url, redis_prefix, offline_tokens_per_second=20.0
    )
    once = RetryPolicy(max_attempts=1, resume_window_seconds=0)
    async with running_server(settings) as first:
        key = await member_key(first)
        async with AsyncClient(first.target, api_key=key, retry=once) as client:
            idle = await new_conversation(client)
            follower = client.conversations.follow(idle, after_sequence=10**6)
            cid = await new_conversation(client)
            running = client.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
            await running.__anext__()
            queued = client.conversations.send(
                conversation_id=cid,
                content="And the risks?",
                if_busy=pb.BUSY_POLICY_ENQUEUE,
                on_disconnect=pb.DISCONNECT_POLICY_CANCEL,
            )
            waiting = await queued.__anext__()
            stopping = asyncio.ensure_future(first.server.stop(30.0))
            for stream in (follower, queued):
                with pytest.raises(errors.Unavailable) as ended:
                    await stream.__anext__()
                assert ended.value.reason == "SERVER_STOPPING"
                assert not stopping.done()  # long before the end of the grace period
            rest = await collect(running)
            await stopping
    assert rest[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    settings = server_settings(tmp_path / "next", pg_dsn, redis_url, redis_prefix)
    async with running_server(settings) as second:
        async with AsyncClient(second.target, api_key=key) as client:
            async with asyncio.timeout(30):
                events = await collect(client.conversations.follow(cid, turn_id=waiting.turn_id))
    assert events[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED


async def test_a_turn_ended_without_its_end_in_the_log_has_it_logged(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, streaming: None
) -> None:
    # Its process ended it in PostgreSQL, then stopped or died before Redis took its end:
    # another process's sweep logs the end, so that its followers hear how it ended.
    settings = server_settings(
        tmp_path / "ends", pg_dsn, redis_url, redis_prefix, turn_lease_seconds=1.0
    )
    async with running_server(settings) as sweeping:
        async with AsyncClient(sweeping.target, api_key=await member_key(sweeping)) as client:
            pool, redis = sweeping.infra.pool, sweeping.infra.redis

            async def without_end(ago: str) -> tuple[str, list[events_pb2.ConversationEvent]]:
                cid = await new_conversation(client)
                done = await collect(client.conversations.send(conversation_id=cid, content="Hi"))
                await pool.execute(
                    "DELETE FROM conversation_events WHERE turn_id = $1 "
                    "AND kind = 'turn_completed'",
                    done[-1].turn_id,
                )
                stream = Keys(redis_prefix).k("conv", TENANT, cid, "events")
                await redis.xdel(stream, f"{done[-1].sequence}-0")
                # Long enough ago that its own process has given up retrying (and, as the
                # log never had its end, not marked as logged).
                await pool.execute(
                    f"UPDATE turns SET end_time = now() - interval '{ago}', end_logged = false "
                    "WHERE id = $1",
                    done[-1].turn_id,
                )
                return cid, done

            # The oldest one's log refuses its end (its stream is broken): the others are
            # logged all the same.
            broken, _ = await without_end("20 minutes")
            broken_stream = Keys(redis_prefix).k("conv", TENANT, broken, "events")
            await redis.delete(broken_stream)
            await redis.set(broken_stream, "not a stream")
            cid, done = await without_end("10 minutes")
            turn_id = done[-1].turn_id
            async with asyncio.timeout(30):
                while True:
                    logged = [
                        r.event
                        async for r in client.conversations.stream_events(
                            conversation_id=cid, mode=pb.STREAM_EVENTS_MODE_REPLAY
                        )
                    ]
                    if logged[-1].HasField("turn_completed"):
                        break
                    await asyncio.sleep(0.2)
            await redis.delete(broken_stream)
    again = logged[-1]
    assert again.turn_id == turn_id
    assert again.turn_completed.stop_reason == events_pb2.STOP_REASON_COMPLETED
    assert again.turn_completed.usage == done[-1].turn_completed.usage
    assert [e.turn_id for e in logged if e.HasField("turn_completed")] == [turn_id]
