"""`convergio flags` walking the seed's rollout: import the week-1 file, 5% -> 25% -> 50% ->
100%, a canary group, enterprise only, the instant rollback, history and export."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from convergio import AsyncClient
from convergio.flag.v1 import flag_pb2

from tests.flags.support import new_tenant
from tests.platform.procs import CONVERGIO, server_env
from tests.support.server import RunningServer

SEED = {
    "flags": {
        "rag_in_loop": {"enabled": True, "strategy": "percentage", "percentage": 5.0},
        "true_streaming": {
            "enabled": True,
            "strategy": "canary",
            "percentage": 5.0,
            "whitelist_groups": ["beta_testers"],
        },
        "speaker_policy": {"enabled": True, "strategy": "on"},
        "graphflow": {
            "enabled": True,
            "strategy": "group_based",
            "whitelist_groups": ["enterprise"],
        },
        "hitl": {"enabled": False, "strategy": "off"},
        "cost_safety": {"enabled": True, "strategy": "on"},
    }
}


def flags_cli(
    server: RunningServer, key: str, cwd: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `convergio flags ARGS` against `server` with `key`."""
    env = server_env(CONVERGIO_TARGET=server.target, CONVERGIO_API_KEY=key)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONVERGIO, "flags", *args], env=env, cwd=cwd, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    return run


async def test_rollout_walkthrough(
    server: RunningServer, make_key: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    tenant = new_tenant()
    key = await make_key("operator", tenant=tenant)
    run = flags_cli(server, key, tmp_path)

    async def cli(*args: str) -> str:
        done = await asyncio.to_thread(run, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    seed = tmp_path / "feature_flags_prod.json"
    seed.write_text(json.dumps(SEED))
    await cli("set", "experiment", "--strategy", "on")  # not in the file: kept by import
    first = json.loads(await cli("import", str(seed), "--json"))
    # The tenant already had the week-1 defaults, which equal the seed: nothing changes.
    assert first["created"] == first["updated"] == []
    assert sorted(first["unchanged"]) == sorted(SEED["flags"])

    listed = await cli("list")
    assert "rag_in_loop" in listed and "5%" in listed and "experiment" in listed

    in_at: dict[float, set[str]] = {}
    users = [f"user-{i}" for i in range(200)]
    async with AsyncClient(server.target, api_key=key) as client:
        for percentage in (5.0, 25.0, 50.0, 100.0):
            await cli(
                "set",
                "rag_in_loop",
                "--percentage",
                str(percentage),
                "--comment",
                f"{percentage:g}%",
            )
            results = await asyncio.gather(
                *(
                    client.flags.evaluate_flag(
                        key="rag_in_loop", context=flag_pb2.EvaluationContext(targeting_key=u)
                    )
                    for u in users
                )
            )
            in_at[percentage] = {
                u for u, r in zip(users, results, strict=True) if r.evaluation.value
            }
    assert in_at[5.0] <= in_at[25.0] <= in_at[50.0] <= in_at[100.0] == set(users)
    assert 0 < len(in_at[25.0]) < len(in_at[50.0]) < 200

    canary = json.loads(
        await cli("eval", "true_streaming", "--user", "zed", "--groups", "beta_testers", "--json")
    )
    assert canary["value"] is True and canary["reason"] == "EVALUATION_REASON_TARGETING_MATCH"
    enterprise = await cli("eval", "graphflow", "--user", "zed", "--groups", "enterprise")
    assert "TARGETING_MATCH" in enterprise and " on " in enterprise
    smb = await cli("eval", "graphflow", "--user", "zed", "--groups", "smb")
    assert "DEFAULT" in smb and " off " in smb

    rollback = await cli("disable-all", "--reason", "p95 latency above 3s")
    assert "turned off 6 flag(s)" in rollback  # the five enabled ones and "experiment"
    everything = json.loads(
        await cli("eval", "--user", "user-1", "--groups", "enterprise", "--json")
    )
    assert all(e.get("value", False) is False for e in everything)

    history = await cli("history", "rag_in_loop")
    lines = history.splitlines()
    assert "disable all: p95 latency above 3s" in lines[1]
    assert "100%" in lines[2] and "50%" in lines[3]

    exported = tmp_path / "export.json"
    await cli("export", str(exported))
    document = json.loads(exported.read_text())
    assert document["flags"]["rag_in_loop"] == {
        "enabled": False,
        "strategy": "percentage",
        "percentage": 100.0,
    }
    # Importing the export back changes nothing.
    again = json.loads(await cli("import", str(exported), "--json"))
    assert again["created"] == [] and again["updated"] == []

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"flags": {"rag_in_loop": {"strategy": "sometimes"}}}))
    refused = await asyncio.to_thread(run, "import", str(bad))
    assert refused.returncode == 2 and "flags.rag_in_loop.strategy" in refused.stderr


async def test_bad_times_and_variants_are_refused_before_anything_is_sent(
    server: RunningServer, make_key: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    tenant = new_tenant()
    key = await make_key("operator", tenant=tenant)
    run = flags_cli(server, key, tmp_path)

    cases = [
        (("--ramp-start", "next week"), "argument --ramp-start: 'next week' is not an ISO-8601"),
        (("--ramp-end", "2026-03-01T09:00"), "argument --ramp-end: '2026-03-01T09:00' has no"),
        (("--variants", "simple=5x"), "argument --variants: 'simple=5x' must be name=weight"),
        (("--variants", "=100"), "argument --variants: '=100' must be name=weight"),
        (("--variants", "a=50,,b=50"), "argument --variants: 'a=50,,b=50' has an empty item"),
    ]
    for options, message in cases:
        done = await asyncio.to_thread(run, "set", "ramp", "--strategy", "gradual", *options)
        assert done.returncode == 2, (options, done.stdout, done.stderr)
        assert f"convergio flags set: error: {message}" in done.stderr, done.stderr
    missing = await asyncio.to_thread(run, "get", "ramp")
    assert missing.returncode == 1, missing.stdout
