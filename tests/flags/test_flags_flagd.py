"""flagd compatibility: OpenFeature's flagd provider (RPC mode) evaluates Convergio flags with
the same results as FlagService, and hears configuration changes."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from convergio import AsyncClient
from convergio.errors import Unauthenticated, Unavailable
from convergio.flag.v1 import flag_pb2
from flagd.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc
from google.protobuf.struct_pb2 import Struct

from tests.flags.support import flag
from tests.support.server import RunningServer, running_server, server_settings

CLIENT_SCRIPT = Path(__file__).with_name("flagd_client.py")


async def test_openfeature_flagd_provider_reads_convergio_flags(
    server: RunningServer, client: AsyncClient
) -> None:
    # Calls without an API key read the dev tenant (flagd_tenant unset, dev key bootstrapped).
    suffix = secrets.token_hex(3)
    pct_key, variant_key = f"flagd.pct.{suffix}", f"flagd.variant.{suffix}"
    await client.flags.upsert_flag(flag=flag(pct_key, "percentage", percentage=50.0))
    await client.flags.upsert_flag(
        flag=flag(
            variant_key,
            "group_based",
            groups=["beta_testers"],
            variants=[
                flag_pb2.FlagVariant(name="simple", weight=50),
                flag_pb2.FlagVariant(name="scoring", weight=50),
            ],
        )
    )
    host, port = server.target.rsplit(":", 1)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT_SCRIPT),
        host,
        port,
        pct_key,
        variant_key,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        assert line, (await process.stderr.read()).decode() if process.stderr else ""
        seen = json.loads(line)

        ours = {}
        for user in seen["percentage"]:
            context = flag_pb2.EvaluationContext(targeting_key=user)
            result = await client.flags.evaluate_flag(key=pct_key, context=context)
            ours[user] = result.evaluation.value
        assert seen["percentage"] == ours
        assert 0 < sum(ours.values()) < len(ours)
        assert seen["reason"] == "SPLIT" and seen["variant"] in ("on", "off")
        # Variants: string resolution gives the variant; callers outside get "off".
        assert set(seen["variants"].values()) == {"off"}
        assert seen["group"] == [True, "TARGETING_MATCH"]
        assert seen["missing"] == [True, "FLAG_NOT_FOUND"]
        assert seen["mismatch"] == [7, "TYPE_MISMATCH"]

        current = (await client.flags.get_flag(key=pct_key)).flag
        await client.flags.upsert_flag(
            flag=flag(pct_key, "percentage", percentage=50.0, enabled=False),
            expected_version=current.version,
        )
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        after = json.loads(await asyncio.wait_for(process.stdout.readline(), 120))
        assert after == {"event": True, "value": False, "reason": "DISABLED"}
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def _flagd(channel: grpc.aio.Channel) -> evaluation_pb2_grpc.ServiceStub:
    return evaluation_pb2_grpc.ServiceStub(channel)


async def test_flagd_calls_with_a_key_read_that_keys_tenant(
    server: RunningServer, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await make_key("operator", tenant=f"flagd-{secrets.token_hex(4)}")
    bearer = (("authorization", f"Bearer {key}"),)
    async with AsyncClient(server.target, api_key=key) as tenant:
        await tenant.flags.upsert_flag(flag=flag("only.here", "on"))
        context = Struct()
        context.update({"targetingKey": "ann"})
        flagd = _flagd(tenant.channel)
        result = await flagd.ResolveBoolean(
            evaluation_pb2.ResolveBooleanRequest(flag_key="only.here", context=context),
            metadata=bearer,
        )
        assert result.value and result.reason == "STATIC" and result.variant == "on"
        everything = await flagd.ResolveAll(
            evaluation_pb2.ResolveAllRequest(context=context), metadata=bearer
        )
        assert everything.flags["only.here"].bool_value
        assert not everything.flags["hitl"].bool_value
        assert everything.flags["hitl"].reason == "DISABLED"


async def test_other_services_still_need_a_key(server: RunningServer) -> None:
    async with AsyncClient(server.target) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.flags.list_flags()


async def test_flagd_calls_without_a_key_can_be_refused(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    settings = server_settings(
        tmp_path, pg_dsn, redis_url, redis_prefix, flagd_tenant="", bootstrap_dev_key=False
    )
    async with running_server(settings) as running:
        context = Struct()
        context.update({"targetingKey": "ann"})
        async with grpc.aio.insecure_channel(running.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _flagd(channel).ResolveBoolean(
                    evaluation_pb2.ResolveBooleanRequest(flag_key="hitl", context=context)
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_sdk_and_openfeature_flagd_provider_share_a_process() -> None:
    # The SDK ships no flagd stubs of its own, so a service can use both.
    script = (
        "import convergio, convergio.flag.v1.flag_pb2\n"
        "from convergio import AsyncClient\n"
        "from openfeature.contrib.provider.flagd import FlagdProvider\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


async def test_watches_end_when_the_server_begins_to_stop(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    # They would hold the stop for the whole grace period: they end at once, UNAVAILABLE,
    # and their clients watch another server.
    settings = server_settings(tmp_path, pg_dsn, redis_url, redis_prefix)
    async with running_server(settings) as running:
        bearer = (("authorization", f"Bearer {running.admin_key}"),)
        async with grpc.aio.insecure_channel(running.target) as channel:
            events = _flagd(channel).EventStream(
                evaluation_pb2.EventStreamRequest(), metadata=bearer
            )
            assert (await events.read()).type == "provider_ready"
            async with AsyncClient(running.target, api_key=running.admin_key) as client:
                watch = client.flags.watch_flags()
                await watch.__anext__()  # the snapshot
                stopping = asyncio.ensure_future(running.server.stop(30.0))
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await events.read()
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                with pytest.raises(Unavailable) as watched:
                    await watch.__anext__()
                assert watched.value.reason == "SERVER_STOPPING"
                assert not stopping.done()  # long before the end of the grace period
                await stopping
