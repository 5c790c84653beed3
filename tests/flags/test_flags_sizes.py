"""Flags as large as validation allows never break a response: lists and history pages end
early to fit the max message size, a watch snapshot comes in parts, and a flag too large to
send is refused at upsert. Also: versions keep growing when a key is deleted and created
again, so a writer holding a version of the deleted flag cannot overwrite the new one."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from convergio import AsyncClient
from convergio.errors import Aborted, InvalidArgument, NotFound
from convergio.flag.v1 import flag_pb2
from convergio_server.api.flag_messages import spec_to_pb
from convergio_server.domain.errors import InvalidArgument as DomainInvalidArgument
from convergio_server.domain.flags.model import FlagSpec, Gradual, Strategy, Variant
from convergio_server.domain.flags.validation import check_size, encoded_size, max_flag_bytes

from tests.flags.support import flag, new_tenant, tenant_client
from tests.platform.procs import CONVERGIO, server_env
from tests.support.server import RunningServer, running_server, server_settings

MakeKey = Callable[..., Awaitable[str]]
SMALL_LIMIT = 256 * 1024


def users(count: int, length: int, tag: str = "u") -> list[str]:
    return [f"{tag}{i:06d}".ljust(length, "x") for i in range(count)]


async def list_all(client: AsyncClient, page_size: int = 0) -> list[flag_pb2.Flag]:
    flags: list[flag_pb2.Flag] = []
    token = ""
    while True:
        page = await client.flags.list_flags(page_size=page_size, page_token=token)
        assert page.flags, "a page always holds at least one flag"
        flags += page.flags
        token = page.next_page_token
        if not token:
            return flags


async def history_all(client: AsyncClient, key: str) -> list[flag_pb2.FlagHistoryEntry]:
    entries: list[flag_pb2.FlagHistoryEntry] = []
    token = ""
    while True:
        page = await client.flags.list_flag_history(key=key, page_token=token)
        assert page.entries
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries


async def snapshot(client: AsyncClient) -> list[list[flag_pb2.Flag]]:
    """The parts of a watch's snapshot."""
    stream = client.flags.watch_flags()
    parts: list[list[flag_pb2.Flag]] = []
    try:
        while True:
            response = await asyncio.wait_for(stream.__anext__(), 60)
            assert response.WhichOneof("kind") == "snapshot"
            parts.append(list(response.snapshot.flags))
            if response.snapshot.complete:
                return parts
    finally:
        stream.cancel()


async def test_documented_maximum_flags_list_watch_and_history(
    server: RunningServer, make_key: MakeKey, tmp_path: Path
) -> None:
    limit = server.settings.max_message_bytes
    api_key = await make_key("operator", tenant=new_tenant())
    async with AsyncClient(server.target, api_key=api_key) as client:
        for key in ("hg.f", "hg.f2"):
            big = flag(key, "canary", percentage=5.0, users=users(10_000, 256))
            assert big.ByteSize() > 2_500_000
            await client.flags.upsert_flag(flag=big)
        for page_size in (0, 2, 1000):
            listed = await list_all(client, page_size)
            keys = [f.key for f in listed]
            assert keys == sorted(keys) and len(keys) == 8 and {"hg.f", "hg.f2"} <= set(keys)
            assert sum(f.ByteSize() for f in listed) > limit
        big_flag = next(f for f in listed if f.key == "hg.f")
        assert len(big_flag.users) == 10_000

        parts = await snapshot(client)
        assert len(parts) > 1
        assert [f.key for part in parts for f in part] == keys

        for percentage in (10.0, 20.0):
            current = (await client.flags.get_flag(key="hg.f")).flag
            current.percentage = percentage
            await client.flags.upsert_flag(flag=current, expected_version=current.version)
        entries = await history_all(client, "hg.f")
        assert [e.version for e in entries] == [3, 2, 1]
        assert entries[0].flag.percentage == 20.0 and len(entries[2].flag.users) == 10_000

        env = server_env(CONVERGIO_TARGET=server.target, CONVERGIO_API_KEY=api_key)
        exported = await asyncio.to_thread(
            subprocess.run,
            [CONVERGIO, "flags", "export", str(tmp_path / "flags.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert exported.returncode == 0, exported.stderr
        document = json.loads((tmp_path / "flags.json").read_text())
        assert len(document["flags"]["hg.f2"]["whitelist_users"]) == 10_000


@asynccontextmanager
async def small_server(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[RunningServer]:
    """A second server on the same stores whose messages are at most 256 KiB."""
    settings = server_settings(
        tmp_path, pg_dsn, redis_url, redis_prefix, max_message_bytes=SMALL_LIMIT
    )
    async with running_server(settings) as running:
        yield running


async def test_pages_fit_a_small_message_limit(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    cap = max_flag_bytes(SMALL_LIMIT)
    async with small_server(tmp_path, pg_dsn, redis_url, redis_prefix) as small:
        key = await small.server.keys.create(new_tenant(), "sizes", ["operator"])
        async with AsyncClient(small.target, api_key=key[1]) as client:
            for n in range(5):
                big = flag(f"big.{n}", "whitelist", users=users(800, 256, f"b{n}-"))
                assert cap - 30_000 < big.ByteSize() < cap
                await client.flags.upsert_flag(flag=big)
            listed = await list_all(client, 1000)
            assert [f.key for f in listed][:5] == [f"big.{n}" for n in range(5)]
            assert len(listed) == 11
            parts = await snapshot(client)
            assert len(parts) >= 5
            assert [f.key for part in parts for f in part] == [f.key for f in listed]
            for n in range(1, 4):
                current = (await client.flags.get_flag(key="big.0")).flag
                current.description = f"step {n}"
                await client.flags.upsert_flag(flag=current, expected_version=current.version)
            assert [e.version for e in await history_all(client, "big.0")] == [4, 3, 2, 1]
            rollback = await client.flags.disable_all_flags(reason="sizes")
            assert rollback.disabled_count == 10
            assert 0 < len(rollback.flags) < 10
            assert [f.key for f in rollback.flags] == sorted(f.key for f in rollback.flags)

            too_big = flag("too.big", "whitelist", users=users(900, 256))
            assert cap < too_big.ByteSize() < SMALL_LIMIT - 1024  # the request itself fits
            with pytest.raises(InvalidArgument) as caught:
                await client.flags.upsert_flag(flag=too_big)
            violation = caught.value.field_violations[0]
            assert violation.field == "flag.users"
            assert f"{cap:,} bytes" in violation.description
            with pytest.raises(NotFound):
                await client.flags.get_flag(key="too.big")


def test_encoded_size_bounds_the_protobuf_encoding() -> None:
    specs = [
        FlagSpec("k"),
        FlagSpec(
            "k.long-" + "x" * 120,
            description="é" * 1000,
            strategy=Strategy.CANARY,
            percentage=12.5,
            groups=tuple(f"g{i}" for i in range(300)),
            users=tuple("€" * 256 + str(i) for i in range(50)),
            variants=(Variant("a", 0), Variant("b", 100)),
        ),
        FlagSpec(
            "ramp",
            strategy=Strategy.GRADUAL,
            gradual=Gradual(
                datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), 100.0
            ),
        ),
    ]
    for spec in specs:
        actual = spec_to_pb(spec).ByteSize()
        assert actual <= encoded_size(spec) <= actual + 80, spec.key
    roomy = specs[1]
    check_size(roomy, encoded_size(roomy))
    with pytest.raises(DomainInvalidArgument) as caught:
        check_size(roomy, 1000, "flags.k.")
    assert caught.value.violations[0].field == "flags.k.users"
    assert max_flag_bytes(4 * 1024 * 1024) == 4 * 1024 * 1024 - 32 * 1024


async def test_recreated_flag_continues_its_versions(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        first = await client.flags.upsert_flag(flag=flag("aba.x", "on"), expected_version=0)
        assert first.flag.version == 1
        stale = first.flag  # a client that read the old flag
        deleted = await client.flags.delete_flag(key="aba.x")
        assert deleted.version == 2
        again = await client.flags.upsert_flag(flag=flag("aba.x", "off"), expected_version=0)
        assert again.created and again.flag.version == 3

        stale.percentage = 50.0
        with pytest.raises(Aborted) as caught:
            await client.flags.upsert_flag(flag=stale, expected_version=stale.version)
        assert caught.value.metadata["current_version"] == "3"
        with pytest.raises(Aborted):
            await client.flags.delete_flag(key="aba.x", expected_version=1)
        current = (await client.flags.get_flag(key="aba.x")).flag
        assert current.version == 3 and current.strategy == flag_pb2.FLAG_STRATEGY_OFF

        await client.flags.delete_flag(key="aba.x", expected_version=3)
        third = await client.flags.upsert_flag(flag=flag("aba.x", "on"))
        assert third.flag.version == 5
        entries = (await client.flags.list_flag_history(key="aba.x")).entries
        applied = [e.version for e in entries if e.outcome == flag_pb2.FLAG_CHANGE_OUTCOME_APPLIED]
        assert applied == [5, 4, 3, 2, 1]
