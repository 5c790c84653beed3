"""A revoked key ends the long-lived streams opened with it: WatchFlags, flagd's EventStream
and the conversation streams end with UNAUTHENTICATED, whether the key is revoked by the
server serving the stream or by another process (the CLI, another server)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from convergio import AsyncClient
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.errors import Unauthenticated
from convergio.flag.v1 import flag_pb2
from convergio_server.domain.auth import KeyManager
from convergio_server.storage.keys import PgKeyStore
from flagd.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc

from tests.platform.procs import serve_process
from tests.support.server import RunningServer

# Generous: the streams must end long before this, the checks run every 0.2-5 s.
END_TIMEOUT = 30.0


async def _key(server: RunningServer, tenant: str, role: str = "member") -> tuple[str, str]:
    stored, token = await server.server.keys.create(tenant, f"rv-{role}", [role])
    return stored.key_id, token


async def _revoke_elsewhere(server: RunningServer, key_id: str) -> None:
    """Revoke as `convergio keys revoke` does: a KeyManager of its own, no running server."""
    await KeyManager(PgKeyStore(server.infra.pool), cache_seconds=0).revoke(key_id)


async def _ends_unauthenticated(stream: AsyncIterator[Any]) -> list[Any]:
    """What the stream still delivers before it ends; it must end with UNAUTHENTICATED."""
    received: list[Any] = []

    async def drain() -> None:
        async for item in stream:
            received.append(item)

    with pytest.raises(Unauthenticated) as caught:
        await asyncio.wait_for(drain(), END_TIMEOUT)
    assert "revoked" in str(caught.value)
    return received


def _changes(received: list[Any]) -> list[str]:
    return [r.change.flag.key for r in received if r.WhichOneof("kind") == "change"]


async def test_watch_flags_ends_when_its_key_is_revoked(server: RunningServer) -> None:
    tenant = f"rv-{secrets.token_hex(4)}"
    key_id, token = await _key(server, tenant)
    _, operator = await _key(server, tenant, "operator")
    async with (
        AsyncClient(server.target, api_key=token) as member,
        AsyncClient(server.target, api_key=operator) as writer,
    ):
        stream = member.flags.watch_flags(keys=["rv.a"])
        first = await asyncio.wait_for(stream.__anext__(), END_TIMEOUT)
        assert first.snapshot.complete and not first.snapshot.flags
        await server.server.keys.revoke(key_id)
        created = await writer.flags.upsert_flag(
            flag=flag_pb2.Flag(key="rv.a", enabled=True, strategy=flag_pb2.FLAG_STRATEGY_ON)
        )
        await writer.flags.upsert_flag(
            flag=flag_pb2.Flag(key="rv.a", enabled=False, strategy=flag_pb2.FLAG_STRATEGY_ON),
            expected_version=created.flag.version,
        )
        # Revoked in this process: the stream ended before either change was made.
        assert _changes(await _ends_unauthenticated(stream)) == []
        with pytest.raises(Unauthenticated):
            await member.flags.get_flag(key="rv.a")


async def _follow(client: AsyncClient) -> AsyncIterator[Any]:
    """A StreamEvents stream that has replayed its conversation's first event (so it is
    open on the server) and goes on following it."""
    created = await client.conversations.create_conversation(team=pb.Team(single_agent="amy"))
    cid = created.conversation.conversation_id
    async for _ in client.conversations.send(conversation_id=cid, content="Hello"):
        pass
    stream = client.conversations.stream_events(conversation_id=cid)
    first = await asyncio.wait_for(stream.__anext__(), END_TIMEOUT)
    assert first.event.sequence == 1
    return stream


async def test_conversation_stream_ends_when_its_key_is_revoked(server: RunningServer) -> None:
    key_id, token = await _key(server, f"rv-{secrets.token_hex(4)}")
    async with AsyncClient(server.target, api_key=token) as client:
        stream = await _follow(client)
        # Revoked by another process: this server notices at its next check.
        await _revoke_elsewhere(server, key_id)
        await _ends_unauthenticated(stream)
        with pytest.raises(Unauthenticated):
            await client.conversations.list_conversations()


async def test_flagd_event_stream_ends_when_its_key_is_revoked(server: RunningServer) -> None:
    key_id, token = await _key(server, f"rv-{secrets.token_hex(4)}")
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = evaluation_pb2_grpc.ServiceStub(channel)
        call = stub.EventStream(
            evaluation_pb2.EventStreamRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        ready = await asyncio.wait_for(call.read(), END_TIMEOUT)
        assert ready.type == "provider_ready"
        await server.server.keys.revoke(key_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call.read(), END_TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in (caught.value.details() or "")


@pytest.fixture
async def other_process(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[str]:
    """`convergio serve` as a separate OS process on the session's stores, checking the
    keys of its open streams often."""
    async with serve_process(
        tmp_path, pg_dsn, redis_url, redis_prefix, CONVERGIO_KEY_CHECK_SECONDS="0.2"
    ) as (_, target):
        yield target


async def test_streams_on_another_process_end_when_the_key_is_revoked(
    server: RunningServer, other_process: str
) -> None:
    tenant = f"rv-{secrets.token_hex(4)}"
    key_id, token = await _key(server, tenant)
    _, operator = await _key(server, tenant, "operator")
    _, survivor_token = await _key(server, tenant)
    async with (
        AsyncClient(other_process, api_key=token) as member,
        AsyncClient(other_process, api_key=survivor_token) as survivor,
        AsyncClient(server.target, api_key=operator) as writer,
    ):
        watch = member.flags.watch_flags(keys=["rv.a"])
        assert (await asyncio.wait_for(watch.__anext__(), END_TIMEOUT)).snapshot.complete
        kept = survivor.flags.watch_flags(keys=["rv.a"])
        assert (await asyncio.wait_for(kept.__anext__(), END_TIMEOUT)).snapshot.complete
        following = asyncio.ensure_future(_ends_unauthenticated(await _follow(member)))

        # Revoked on this process: the other one notices at its next check.
        await server.server.keys.revoke(key_id)
        await _ends_unauthenticated(watch)
        await following
        with pytest.raises(Unauthenticated):
            await member.flags.get_flag(key="rv.a")

        # The streams of other keys go on.
        await writer.flags.upsert_flag(
            flag=flag_pb2.Flag(key="rv.a", enabled=True, strategy=flag_pb2.FLAG_STRATEGY_ON)
        )
        change = (await asyncio.wait_for(kept.__anext__(), END_TIMEOUT)).change
        assert change.flag.key == "rv.a"
        kept.cancel()
