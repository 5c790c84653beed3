"""`convergio chat` streams a turn in the terminal: the speaking agent, tool calls and how
the turn ended."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.conversations.conftest import FINANCE_QUESTION, member_key
from tests.support.server import RunningServer

CONVERGIO = str(Path(sys.executable).parent / "convergio")


async def run_chat(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CONVERGIO, "chat", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_chat_streams_a_turn(server: RunningServer, streaming: None) -> None:
    key = await member_key(server)
    code, out, err = await run_chat(
        "--target", server.target, "--api-key", key, "--agent", "amy", FINANCE_QUESTION
    )
    assert code == 0, err
    assert "conversation " in err
    assert "amy>" in out
    assert "[tool] financial_calculator(" in out
    assert "[result] ROI = 20.00%" in out
    assert "[completed: 1 message(s)" in out
    conversation_id = err.split("conversation ", 1)[1].split()[0]
    code, out, _ = await run_chat(
        "--target",
        server.target,
        "--api-key",
        key,
        "--conversation",
        conversation_id,
        "--json",
        "Thanks",
    )
    assert code == 0
    assert '"turnCompleted"' in out.splitlines()[-1]


async def test_chat_reports_an_unknown_agent(server: RunningServer) -> None:
    key = await member_key(server)
    code, _, err = await run_chat(
        "--target", server.target, "--api-key", key, "--agent", "nobody", "hi"
    )
    assert code == 1 and "nobody" in err
