"""A client's life against a real server: what a closed client and its open streams
raise, health of an unknown service, and metadata keys as callers write them."""

from __future__ import annotations

import asyncio

import pytest
from convergio import AsyncClient, Client, errors
from convergio.conversation.v1 import conversation_pb2 as pb

from tests.support.server import RunningServer


async def test_a_closed_sync_client_raises_cancelled_for_any_call(server: RunningServer) -> None:
    def calls() -> list[str]:
        with Client(server.target, api_key=server.admin_key) as client:
            client.conversations.list_agents()
        reasons = []
        # One method it used, and ones it never called: grpc crashed the process on those.
        for call in (
            client.conversations.list_agents,
            client.flags.list_flags,
            lambda: next(iter(client.conversations.follow(
                "0b0e7a3c-6a1f-4a57-9a1e-5c1f3f0b2d4e", replay=True
            ))),
        ):  # fmt: skip
            with pytest.raises(errors.Cancelled) as closed:
                call()
            reasons.append(closed.value.reason)
        return reasons

    assert await asyncio.to_thread(calls) == ["CLIENT_CLOSED"] * 3


async def test_a_closed_async_client_raises_cancelled(server: RunningServer) -> None:
    client = AsyncClient(server.target, api_key=server.admin_key)
    await client.conversations.list_agents()
    await client.close()
    with pytest.raises(errors.Cancelled) as closed:
        await client.flags.list_flags()
    assert closed.value.reason == "CLIENT_CLOSED"


async def test_closing_the_client_ends_its_open_streams_with_cancelled(
    server: RunningServer,
) -> None:
    client = AsyncClient(server.target, api_key=server.admin_key)
    cid = (
        await client.conversations.create_conversation(team=pb.Team(single_agent="amy"))
    ).conversation.conversation_id

    async def read() -> None:
        async for _ in client.conversations.follow(cid, after_sequence=10**6):
            pass

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.3)
    await client.close()
    # Not a bare CancelledError, which TaskGroups and wait_for take for the task's own.
    with pytest.raises(errors.Cancelled):
        await reader
    assert not reader.cancelled()


async def test_health_of_an_unknown_service_is_service_unknown(server: RunningServer) -> None:
    async with AsyncClient(server.target, api_key=server.admin_key) as client:
        assert await client.health("nope.Service") == "SERVICE_UNKNOWN"
        assert await client.health() == "SERVING"

    def sync_health() -> str:
        with Client(server.target, api_key=server.admin_key) as sync:
            return sync.health("nope.Service")

    assert await asyncio.to_thread(sync_health) == "SERVICE_UNKNOWN"


async def test_metadata_keys_in_any_case_are_sent(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        listed = await client.conversations.list_agents(
            metadata=[("Authorization", f"Bearer {server.admin_key}")]
        )
        assert listed.agents
        with pytest.raises(errors.NotFound) as missing:
            await client.conversations.get_conversation(
                conversation_id="0b0e7a3c-6a1f-4a57-9a1e-5c1f3f0b2d4e",
                metadata=[
                    ("Authorization", f"Bearer {server.admin_key}"),
                    ("X-Request-Id", "trace-me-7"),
                ],
            )
        assert missing.value.request_id == "trace-me-7"
