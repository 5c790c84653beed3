"""Fixtures of the conversation tests: token streaming switched on for the development
tenant (through the flag service, as an operator would), a second server whose offline
model is paced (turns that last long enough to disconnect from or cancel), helpers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable

import pytest
from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio.flag.v1 import flag_pb2

from tests.support.server import RunningServer, running_server, server_settings

PACED_TOKENS_PER_SECOND = 60.0
FINANCE_QUESTION = "What is the ROI of a 10000 investment that returns 12000?"


def kinds(events: Iterable[events_pb2.ConversationEvent]) -> list[str]:
    return [str(e.WhichOneof("kind")) for e in events]


async def collect(
    stream: AsyncIterator[events_pb2.ConversationEvent],
) -> list[events_pb2.ConversationEvent]:
    return [event async for event in stream]


# The tenant of these tests: its flags are changed here, so that other areas' tests see the
# development tenant's flags untouched.
TENANT = "conversation-tests"
# The tenant of turns with priced models: among TENANT's free turns they would count as
# cost spikes and open TENANT's circuit breaker for the tests after them.
PRICED_TENANT = "conversation-tests-priced"


async def switch_on(server: RunningServer, key: str, tenant: str = TENANT) -> None:
    """Turn a platform flag on for every caller of a test tenant, as an operator would."""
    _, token = await server.server.keys.create(tenant, "conversation tests admin", ["admin"])
    async with AsyncClient(server.target, api_key=token) as client:
        try:
            version = (await client.flags.get_flag(key=key)).flag.version
        except errors.NotFound:
            version = 0
        await client.flags.upsert_flag(
            flag=flag_pb2.Flag(key=key, enabled=True, strategy=flag_pb2.FLAG_STRATEGY_ON),
            expected_version=version,
        )
        await wait_flag(client, key)


@pytest.fixture(scope="session")
async def streaming(server: RunningServer) -> None:
    """The `true_streaming` flag on for every caller of the test tenant."""
    await switch_on(server, "true_streaming")


@pytest.fixture(scope="session")
async def priced_streaming(server: RunningServer) -> None:
    """The same for the tenant of priced turns."""
    await switch_on(server, "true_streaming", PRICED_TENANT)


async def wait_flag(client: AsyncClient, key: str) -> None:
    """Until the server behind `client` sees the flag on (flag caches follow changes
    through Redis notifications)."""
    for _ in range(200):
        result = await client.flags.evaluate_flag(key=key)
        if result.evaluation.value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} did not turn on")


async def wait_streaming(client: AsyncClient) -> None:
    await wait_flag(client, "true_streaming")


@pytest.fixture(scope="session")
async def paced(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    server: RunningServer,
) -> AsyncIterator[RunningServer]:
    """A second server on the same database and Redis whose offline model emits
    PACED_TOKENS_PER_SECOND tokens per second."""
    settings = server_settings(
        tmp_path_factory.mktemp("paced-data"),
        pg_dsn,
        redis_url,
        redis_prefix,
        offline_tokens_per_second=PACED_TOKENS_PER_SECOND,
    )
    async with running_server(settings) as running:
        yield running


async def member_key(server: RunningServer, tenant: str = TENANT) -> str:
    """A member key of its own: rate limits count per principal, so each test gets one."""
    _, token = await server.server.keys.create(
        tenant, f"conversations-{uuid.uuid4().hex[:8]}", ["member"]
    )
    return token


@pytest.fixture
async def conv(server: RunningServer, streaming: None) -> AsyncIterator[AsyncClient]:
    """A client of the main server with a fresh member key."""
    async with AsyncClient(server.target, api_key=await member_key(server)) as sdk_client:
        yield sdk_client


@pytest.fixture
async def priced_conv(server: RunningServer, priced_streaming: None) -> AsyncIterator[AsyncClient]:
    """A client of the main server with a fresh member key of the priced turns' tenant."""
    async with AsyncClient(
        server.target, api_key=await member_key(server, PRICED_TENANT)
    ) as sdk_client:
        yield sdk_client


@pytest.fixture
async def paced_client(paced: RunningServer, streaming: None) -> AsyncIterator[AsyncClient]:
    """A client of the paced server with a fresh member key."""
    async with AsyncClient(paced.target, api_key=await member_key(paced)) as sdk_client:
        await wait_streaming(sdk_client)
        yield sdk_client


async def new_conversation(client: AsyncClient, *, agent: str = "amy", **fields: object) -> str:
    if "team" not in fields:
        fields["team"] = pb.Team(single_agent=agent)
    created = await client.conversations.create_conversation(**fields)  # type: ignore[arg-type]
    return created.conversation.conversation_id
