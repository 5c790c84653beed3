"""`convergio chat` streams a turn in the terminal: the speaking agent, tool calls and how
the turn ended. `convergio conversations` lists, shows, follows, cancels and deletes."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from convergio_server.domain.conversations.service import MAX_CONTENT_BYTES

from tests.conversations.conftest import (
    FINANCE_QUESTION,
    collect,
    member_key,
    new_conversation,
    wait_streaming,
)
from tests.support.server import RunningServer, running_server, server_settings

CONVERGIO = str(Path(sys.executable).parent / "convergio")


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        CONVERGIO, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await start_cli(*args)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_chat(*args: str) -> tuple[int, str, str]:
    return await run_cli("chat", *args)


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
    assert json.loads(out.splitlines()[-1])["turn_completed"]["stop_reason"] == (
        "STOP_REASON_COMPLETED"
    )


async def test_chat_reports_an_unknown_agent(server: RunningServer) -> None:
    key = await member_key(server)
    code, _, err = await run_chat(
        "--target", server.target, "--api-key", key, "--agent", "nobody", "hi"
    )
    assert code == 1 and "nobody" in err


async def test_conversations_list_show_turns_replay_and_delete(
    server: RunningServer, streaming: None
) -> None:
    key = await member_key(server)
    label = f"cli-{key[-6:]}"
    async with AsyncClient(server.target, api_key=key) as client:
        cid = await new_conversation(client, title="Loan", labels={"suite": label})
        other = await new_conversation(client, title="Other")
        turn = await collect(
            client.conversations.send(conversation_id=cid, content=FINANCE_QUESTION)
        )
    turn_id = turn[0].turn_id
    auth = ("--target", server.target, "--api-key", key)

    code, out, err = await run_cli("conversations", "list", *auth, "--label", f"suite={label}")
    assert code == 0, err
    assert cid in out and other not in out and "Loan" in out and "idle" in out
    code, out, _ = await run_cli("conversations", "list", *auth, "--json", "--limit", "1")
    assert code == 0 and len(json.loads(out)) == 1
    code, _, err = await run_cli("conversations", "list", *auth, "--label", "suite")
    assert code == 2 and "KEY=VALUE" in err

    code, out, err = await run_cli("conversations", "show", *auth, cid)
    assert code == 0, err
    assert "Loan" in out and "1 turn(s), 2 message(s)" in out
    assert "user> [" in out and FINANCE_QUESTION in out and "amy> [" in out
    code, out, _ = await run_cli("conversations", "show", *auth, cid, "--json")
    shown = json.loads(out)
    assert shown["conversation"]["conversation_id"] == cid
    assert [m["role"] for m in shown["messages"]] == ["MESSAGE_ROLE_USER", "MESSAGE_ROLE_AGENT"]

    code, out, _ = await run_cli("conversations", "turns", *auth, cid)
    assert code == 0 and turn_id in out and "ended" in out and "completed" in out
    code, out, _ = await run_cli("conversations", "follow", *auth, cid, "--replay")
    assert code == 0
    assert f"> {FINANCE_QUESTION}" in out and "[tool] financial_calculator(" in out
    assert "[completed: 1 message(s)" in out

    code, _, err = await run_cli("conversations", "cancel", *auth, cid)
    assert code == 1 and "no turn is running or queued" in err
    code, out, _ = await run_cli("conversations", "delete", *auth, cid)
    assert code == 0 and cid in out
    code, _, err = await run_cli("conversations", "show", *auth, cid)
    assert code == 1 and "does not exist" in err


@pytest.fixture
async def slow(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, server: RunningServer
) -> AsyncIterator[RunningServer]:
    """A server whose offline model answers with at least 3,000 tokens at 60 a second: a
    turn that is still running whatever the command line takes to start."""
    settings = server_settings(
        tmp_path, pg_dsn, redis_url, redis_prefix,
        offline_tokens_per_second=60.0, offline_min_answer_tokens=3000,
    )  # fmt: skip
    async with running_server(settings) as running:
        yield running


async def test_conversations_follow_a_running_turn_and_cancel_it(
    slow: RunningServer, streaming: None
) -> None:
    key = await member_key(slow)
    auth = ("--target", slow.target, "--api-key", key)
    async with AsyncClient(slow.target, api_key=key) as client:
        await wait_streaming(client)
        cid = await new_conversation(client)
        stream = client.conversations.send(
            conversation_id=cid, content="Explain the strategy for next year in detail"
        )
        started = await anext(stream)
        follower = await start_cli("conversations", "follow", *auth, cid, "--turn", started.turn_id)
        assert follower.stdout is not None
        first = await asyncio.wait_for(follower.stdout.readline(), 60)
        while not first.strip():
            first = await asyncio.wait_for(follower.stdout.readline(), 60)
        assert b"Explain the strategy" in first  # the turn's message, then the answer live
        code, out, err = await run_cli("conversations", "cancel", *auth, cid)
        assert code == 0, err
        assert started.turn_id in out and "ended (cancelled)" in out
        rest, _ = await asyncio.wait_for(follower.communicate(), 60)
        assert follower.returncode == 0
        assert b"[cancelled: 0 message(s)" in rest and b"amy>" in rest
        ended = [event async for event in stream]
        assert ended[-1].turn_completed.stop_reason == events_pb2.STOP_REASON_CANCELLED
        with pytest.raises(errors.FailedPrecondition):
            await client.conversations.cancel_turn(conversation_id=cid)
        conversation = await client.conversations.get_conversation(conversation_id=cid)
        assert conversation.conversation.status == pb.CONVERSATION_STATUS_IDLE


async def test_chat_on_a_busy_conversation_says_what_to_do_or_queues(
    slow: RunningServer, streaming: None
) -> None:
    key = await member_key(slow)
    auth = ("--target", slow.target, "--api-key", key)
    async with AsyncClient(slow.target, api_key=key) as client:
        await wait_streaming(client)
        cid = await new_conversation(client)
        running = client.conversations.send(conversation_id=cid, content="Tell me everything")
        first = await anext(running)
        code, _, err = await run_chat(*auth, "--conversation", cid, "Next")
        assert code == 1
        assert f"turn {first.turn_id} is running" in err and "--queue" in err
        chat = await start_cli("chat", *auth, "--conversation", cid, "--queue", "Next")
        assert chat.stdout is not None
        line = await asyncio.wait_for(chat.stdout.readline(), 60)
        assert b"[queued at position 1]" in line
        await client.conversations.cancel_turn(conversation_id=cid, turn_id=first.turn_id)
        # The queued turn starts once the running one ended, and streams to the command.
        line = await asyncio.wait_for(chat.stdout.readline(), 60)
        while b"amy>" not in line:
            line = await asyncio.wait_for(chat.stdout.readline(), 60)
        await client.conversations.cancel_turn(conversation_id=cid)
        rest, _ = await asyncio.wait_for(chat.communicate(), 60)
        assert chat.returncode == 1  # the turn did not complete
        assert b"[cancelled: 0 message(s)" in rest
        async for _ in running:
            pass


async def test_chat_json_writes_only_json_to_stdout(server: RunningServer, streaming: None) -> None:
    key = await member_key(server)
    chat = await asyncio.create_subprocess_exec(
        CONVERGIO, "chat", "--target", server.target, "--api-key", key, "--agent", "amy", "--json",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    typed = b"x" * (MAX_CONTENT_BYTES + 1) + b"\nHi\n"
    out, err = await asyncio.wait_for(chat.communicate(typed), 120)
    assert chat.returncode == 0, err
    assert err.decode().count("you> ") == 3  # the prompt, on stderr
    assert f"{MAX_CONTENT_BYTES + 1:,} bytes" in err.decode() and "not sent" in err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert events[0]["turn_started"]["content"] == "Hi"  # the long line was not sent
    assert events[0]["conversation_id"] and events[-1]["turn_completed"]["message_count"] == 1


async def test_chat_checks_what_it_can_before_creating_a_conversation(
    server: RunningServer,
) -> None:
    key = await member_key(server)
    auth = ("--target", server.target, "--api-key", key)
    async with AsyncClient(server.target, api_key=key) as client:
        before = await client.conversations.list_conversations(page_size=100)
    for args, named in [
        (("--max-turns", "99", "Hi"), "--max-turns must be 1 to 50"),
        (("--max-turns", "0", "Hi"), "--max-turns must be 1 to 50"),
        (("x" * (MAX_CONTENT_BYTES + 1),), f"MESSAGE is {MAX_CONTENT_BYTES + 1:,} bytes"),
        (("é" * (MAX_CONTENT_BYTES // 2 + 1),), f"MESSAGE is {MAX_CONTENT_BYTES + 2:,} bytes"),
        (("  ",), "MESSAGE is empty"),
    ]:
        code, out, err = await run_chat(*auth, "--agent", "amy", *args)
        assert (code, out) == (2, ""), err
        assert err.startswith(f"convergio chat: error: {named}") and err.count("\n") == 1
    async with AsyncClient(server.target, api_key=key) as client:
        after = await client.conversations.list_conversations(page_size=100)
    assert [c.conversation_id for c in after.conversations] == [
        c.conversation_id for c in before.conversations
    ]


async def test_commands_whose_reader_left_end_quietly(
    server: RunningServer, streaming: None
) -> None:
    key = await member_key(server)
    async with AsyncClient(server.target, api_key=key) as client:
        cid = await new_conversation(client)
        await collect(client.conversations.send(conversation_id=cid, content=FINANCE_QUESTION))
    auth = ("--target", server.target, "--api-key", key)
    for args in [
        ("conversations", "list", *auth),
        ("conversations", "show", *auth, cid),
        ("conversations", "follow", *auth, cid, "--replay"),
        ("conversations", "follow", *auth, cid, "--replay", "--json"),
    ]:
        # As `convergio ... | head -1` once head has its line: the pipe has no reader.
        reader, writer = os.pipe()
        os.close(reader)
        try:
            process = await asyncio.create_subprocess_exec(
                CONVERGIO, *args, stdout=writer, stderr=subprocess.PIPE
            )
        finally:
            os.close(writer)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert (process.returncode, err.decode()) == (141, ""), args


def _read_until(terminal: int, wanted: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while wanted not in seen and time.monotonic() < deadline:
        if select.select([terminal], [], [], 0.1)[0]:
            try:
                seen += os.read(terminal, 4096)
            except OSError:  # the other side is gone
                break
    return seen


def _take_the_terminal() -> None:
    """In the child, after setsid: its stdin's terminal becomes its controlling one, so
    that ^C typed there sends it SIGINT, as in a shell. A shell also gives a foreground
    command SIGINT's default action, which a suite started in the background (where
    SIGINT is ignored) would otherwise pass on."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_chat_leaves_at_once_on_ctrl_c_at_the_prompt(server: RunningServer) -> None:
    key = await member_key(server)
    async with AsyncClient(server.target, api_key=key) as client:
        cid = await new_conversation(client)
    main, terminal = os.openpty()
    try:
        chat = await asyncio.create_subprocess_exec(
            CONVERGIO, "chat", "--target", server.target, "--api-key", key, "--conversation", cid,
            stdin=terminal, stdout=terminal, stderr=terminal,
            start_new_session=True, preexec_fn=_take_the_terminal,
        )  # fmt: skip
        os.close(terminal)
        try:
            seen = await asyncio.to_thread(_read_until, main, b"you> ", 60)
            assert b"you> " in seen, seen
            os.write(main, b"\x03")
            # Without Enter: a prompt that waited for it would never end. The bound is only
            # against hanging (a loaded machine may take seconds to tear a process down).
            assert await asyncio.wait_for(chat.wait(), 30) == 130
        finally:
            if chat.returncode is None:
                chat.kill()
                await chat.wait()
    finally:
        os.close(main)


async def test_commands_say_how_to_give_what_they_lack(
    server: RunningServer, tmp_path: Path
) -> None:
    # No key anywhere (no option, no variable, no development key in the data directory).
    process = await asyncio.create_subprocess_exec(
        CONVERGIO, "conversations", "list", "--target", server.target,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "CONVERGIO_API_KEY"}
        | {"CONVERGIO_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    _, said = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 1 and "--api-key or CONVERGIO_API_KEY" in said.decode()
    # Nothing running to cancel: the option that names a turn.
    key = await member_key(server)
    async with AsyncClient(server.target, api_key=key) as client:
        cid = await new_conversation(client)
    code, _, err = await run_cli(
        "conversations", "cancel", cid, "--target", server.target, "--api-key", key
    )
    assert code == 1 and "--turn TURN_ID" in err
