"""`convergio agents` shows the roster and the presets the running server loaded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.support.server import RunningServer

CONVERGIO = str(Path(sys.executable).parent / "convergio")


async def agents(server: RunningServer, *args: str) -> tuple[int, str, str]:
    _, key = await server.server.keys.create("agents-cli", "agents cli", ["member"])
    process = await asyncio.create_subprocess_exec(
        CONVERGIO, "agents", *args, "--target", server.target, "--api-key", key,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_agents_lists_shows_and_names_the_presets(server: RunningServer) -> None:
    code, out, err = await agents(server, "list", "--preset", "finance", "--json")
    assert code == 0, err
    assert [a["name"] for a in json.loads(out)] == ["ali", "domik", "amy", "diana"]
    code, out, _ = await agents(server, "list")
    assert code == 0 and "sara" in out and "financial_calculator" in out
    code, out, _ = await agents(server, "show", "amy")
    assert code == 0
    assert out.startswith("amy (Amy): Chief Financial Officer")
    assert "loan" in out and "tools: financial_calculator" in out and "finance" in out
    code, out, _ = await agents(server, "presets")
    assert code == 0
    assert "core" in out and "ali,domik,amy,luca,socrates,diana,wanda,xavier" in out
    code, _, err = await agents(server, "show", "nobody")
    assert code == 1 and "not in the roster" in err
