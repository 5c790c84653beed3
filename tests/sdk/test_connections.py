"""A client (async or sync) with several connections: its calls, unary and streaming, take
them in turn, each over a TCP connection of its own."""

from __future__ import annotations

import asyncio

import psutil
import pytest
from convergio import AsyncClient, Client
from convergio.conversation.v1 import conversation_pb2 as pb

from tests.support.server import RunningServer


def _open_to(port: int) -> set[tuple[str, int]]:
    """This process's established connections to `port` (their local addresses)."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


async def test_calls_take_the_clients_connections_in_turn(server: RunningServer) -> None:
    port = int(server.target.rsplit(":", 1)[1])
    before = _open_to(port)
    async with AsyncClient(server.target, api_key=server.admin_key, connections=3) as client:
        for _ in range(3):
            await client.conversations.list_agents()
        unary = _open_to(port) - before
        assert len(unary) == 3
        cids = []
        for _ in range(2):
            created = await client.conversations.create_conversation(
                team=pb.Team(single_agent="amy")
            )
            cids.append(created.conversation.conversation_id)

        async def turn(cid: str) -> str | None:
            kinds = [
                e.WhichOneof("kind")
                async for e in client.conversations.send(conversation_id=cid, content="Hello")
            ]
            return kinds[-1]

        ends = await asyncio.gather(*(turn(cid) for cid in cids))
        assert ends == ["turn_completed", "turn_completed"]
        # Still the same three: the streams went over them too.
        assert _open_to(port) - before == unary
    for _ in range(50):  # closing the client closes its connections
        if not _open_to(port) & unary:
            break
        await asyncio.sleep(0.05)
    assert not _open_to(port) & unary


async def test_the_sync_client_takes_its_connections_in_turn(server: RunningServer) -> None:
    port = int(server.target.rsplit(":", 1)[1])
    before = _open_to(port)

    def calls() -> tuple[set[tuple[str, int]], str | None]:
        with Client(server.target, api_key=server.admin_key, connections=2) as client:
            for _ in range(2):
                client.conversations.list_agents()
            opened = _open_to(port) - before
            created = client.conversations.create_conversation(team=pb.Team(single_agent="amy"))
            events = list(
                client.conversations.send(
                    conversation_id=created.conversation.conversation_id, content="Hello"
                )
            )
            assert _open_to(port) - before == opened
            return opened, events[-1].WhichOneof("kind")

    opened, end = await asyncio.to_thread(calls)
    assert len(opened) == 2
    assert end == "turn_completed"


def test_a_client_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AsyncClient("127.0.0.1:1", connections=0)
    with pytest.raises(ValueError, match="at least 1"):
        Client("127.0.0.1:1", connections=0)
