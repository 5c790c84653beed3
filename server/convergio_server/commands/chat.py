"""`convergio chat`: talk to a team of agents in the terminal.

    convergio chat --preset core "How should we price the new plan?"
    convergio chat --agent amy           # interactive: one message per line
    convergio chat --conversation ID     # go on with an existing conversation
    convergio chat --conversation ID --queue "Next"   # after the turn running now

Tokens are printed as they arrive, under the name of the agent speaking; tool calls and
their results are shown as they happen, and each turn ends with how it ended and what it
used. Ctrl-C during a turn cancels it; Ctrl-C at the prompt, Ctrl-D or /quit leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2

from convergio_server.commands import add_client_args, as_dict, client_from_args
from convergio_server.domain.conversations.service import MAX_CONTENT_BYTES, MAX_TURNS_LIMIT

EXIT_USAGE = 2  # as argparse exits on a bad option


def register(subparsers: Any) -> None:
    chat = subparsers.add_parser(
        "chat",
        help="chat with a team of agents, streaming their answers",
        description="Send MESSAGE (or, without it, each line you type) to a conversation and "
        "stream the answer: the speaking agent, its tokens, tool calls and results.",
    )
    add_client_args(chat)
    team = chat.add_mutually_exclusive_group()
    team.add_argument("--conversation", metavar="ID", help="an existing conversation")
    team.add_argument("--preset", help="start a conversation with this team preset (e.g. core)")
    team.add_argument("--agent", help="start a conversation with this single agent (e.g. ali)")
    team.add_argument(
        "--agents", help="start a conversation with these agents, comma separated (amy,luca)"
    )
    chat.add_argument("--title", default="", help="title of a new conversation")
    chat.add_argument(
        "--max-turns",
        type=int,
        default=None,
        help=f"most agent replies per message, 1 to {MAX_TURNS_LIMIT} "
        "(default: the conversation's)",
    )
    chat.add_argument(
        "--queue",
        action="store_true",
        help="when a turn is already running, wait for it and then send (else: an error)",
    )
    chat.add_argument("message", nargs="?", help="the message; omit for an interactive prompt")
    chat.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    # Checked here, before a conversation is created: a message the server would refuse
    # must not leave an empty conversation behind, nor use up the hourly quota of new ones.
    problem = _max_turns_problem(args.max_turns)
    if problem is None and args.message is not None:
        problem = _content_problem("MESSAGE", args.message)
    if problem is not None:
        print(f"convergio chat: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    async with client_from_args(args) as client:
        conversation_id = args.conversation or await _create(client, args)
        if args.message is not None:
            if not args.conversation:
                print(f"conversation {conversation_id}", file=sys.stderr)
            return await _turn(client, conversation_id, args.message, args, sys.stdout)
        print(f"conversation {conversation_id} (Ctrl-D to leave)", file=sys.stderr)
        lines = LineReader(sys.stdin)
        status = 0
        while True:
            # The prompt goes to stderr so that stdout holds only the answers (with --json,
            # only JSON lines).
            print("you> ", end="", file=sys.stderr, flush=True)
            try:
                line = await lines.readline()
            except EOFError:
                print(file=sys.stderr)
                return status
            except asyncio.CancelledError:  # Ctrl-C at the prompt
                print(file=sys.stderr)
                return 130
            if line.strip() in ("/quit", "/exit"):
                return status
            if not line.strip():
                continue
            problem = _content_problem("the message", line)
            if problem is not None:
                print(f"convergio: {problem}; not sent", file=sys.stderr)
                status = EXIT_USAGE
                continue
            status = await _turn(client, conversation_id, line, args, sys.stdout)


def _max_turns_problem(max_turns: int | None) -> str | None:
    if max_turns is not None and not 1 <= max_turns <= MAX_TURNS_LIMIT:
        return f"--max-turns must be 1 to {MAX_TURNS_LIMIT}, not {max_turns}"
    return None


def _content_problem(name: str, content: str) -> str | None:
    """What the server would refuse in a message's content (it measures it stripped)."""
    size = len(content.strip().encode())
    if size == 0:
        return f"{name} is empty"
    if size > MAX_CONTENT_BYTES:
        return f"{name} is {size:,} bytes of UTF-8; at most {MAX_CONTENT_BYTES:,}"
    return None


class LineReader:
    """Lines of a terminal or a pipe, read in the event loop rather than in a thread:
    a thread blocked in `input()` holds the process up until Enter, and Ctrl-C at the
    prompt must end the command at once."""

    def __init__(self, stream: TextIO) -> None:
        self.fd = stream.fileno()
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.pending = b""
        self.ended = False

    async def readline(self) -> str:
        """The next line without its end; EOFError when there are no more."""
        while b"\n" not in self.pending and not self.ended:
            chunk = await self._read()
            self.ended = not chunk
            self.pending += chunk
        if not self.pending:
            raise EOFError
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode(self.encoding, errors="replace").removesuffix("\r")

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(self.fd, readable)
        except (OSError, ValueError):  # a regular file (`< file`): reading it never waits
            return os.read(self.fd, 65536)
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)
        return os.read(self.fd, 65536)


async def _create(client: AsyncClient, args: argparse.Namespace) -> str:
    if args.agent:
        team = pb.Team(single_agent=args.agent)
    elif args.agents:
        names = [n.strip() for n in args.agents.split(",") if n.strip()]
        team = pb.Team(agents=pb.AgentNames(names=names))
    else:
        team = pb.Team(preset=args.preset or "core")
    created = await client.conversations.create_conversation(title=args.title, team=team)
    return created.conversation.conversation_id


async def _turn(
    client: AsyncClient, conversation_id: str, content: str, args: argparse.Namespace, out: TextIO
) -> int:
    render = Renderer(out, json_output=args.json)
    events = client.conversations.send(
        conversation_id=conversation_id,
        content=content,
        max_turns=args.max_turns,
        if_busy=pb.BUSY_POLICY_ENQUEUE if args.queue else None,
    )
    turn_id = ""
    try:
        async for event in events:
            turn_id = turn_id or event.turn_id
            render.event(event)
    except errors.FailedPrecondition as exc:
        if exc.metadata.get("active_turn_id") and not args.queue:  # (else: the queue is full)
            print(
                f"convergio: turn {exc.metadata['active_turn_id']} is running; wait for it, "
                "cancel it (convergio conversations cancel), or send with --queue",
                file=sys.stderr,
            )
            return 1
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):
        if turn_id:
            await client.conversations.cancel_turn(
                conversation_id=conversation_id, turn_id=turn_id, reason="cancelled from the CLI"
            )
            print("\n[cancelled]", file=out)
        return 130
    return (
        0
        if render.stop in (events_pb2.STOP_REASON_COMPLETED, events_pb2.STOP_REASON_MAX_TURNS)
        else 1
    )


class Renderer:
    """Prints a turn's events for a human (or one JSON object per event with --json).
    `show_user`: print each turn's message too (following turns someone else sent)."""

    def __init__(self, out: TextIO, *, json_output: bool = False, show_user: bool = False) -> None:
        self.out = out
        self.json = json_output
        self.show_user = show_user
        self.speaking = ""
        self.open_line = False
        self.streamed: set[str] = set()
        self.stop = events_pb2.STOP_REASON_UNSPECIFIED

    def _line(self, text: str) -> None:
        if self.open_line:
            self.out.write("\n")
            self.open_line = False
        self.out.write(text + "\n")
        self.out.flush()

    def _speaker(self, agent: str) -> None:
        if agent != self.speaking:
            self.speaking = agent
            self._line(f"\n{agent}>")

    def event(self, event: events_pb2.ConversationEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "turn_completed":
            self.stop = event.turn_completed.stop_reason
        if self.json:  # the proto's field names, as every other command's --json
            self.out.write(json.dumps(as_dict(event)) + "\n")
            self.out.flush()
            return
        if kind == "turn_started":
            if self.show_user:
                started = event.turn_started
                self.speaking = ""
                self._line(f"\n{started.created_by or 'user'}> {started.content}")
        elif kind == "speaker_selected":
            selected = event.speaker_selected
            self._speaker(selected.agent)
        elif kind == "token_delta":
            self._speaker(event.token_delta.agent)
            self.streamed.add(event.token_delta.message_id)
            self.out.write(event.token_delta.text)
            self.out.flush()
            self.open_line = True
        elif kind == "tool_call":
            call = event.tool_call
            self._speaker(call.agent)
            self._line(f"  [tool] {call.tool}({call.arguments_json})")
        elif kind == "tool_result":
            result = event.tool_result
            mark = "error" if result.is_error else "result"
            self._line(f"  [{mark}] {result.content[:400]}")
        elif kind == "message_completed":
            done = event.message_completed
            if done.message_id not in self.streamed:  # token streaming is off for this caller
                self._speaker(done.agent)
                self._line(done.content)
        elif kind == "error":
            self._line(f"[error] {event.error.message}")
        elif kind == "budget_alert":
            alert = event.budget_alert
            self._line(f"[budget] {alert.threshold_percent}% of {alert.limit_usd} USD spent")
        elif kind == "turn_queued":
            self._line(f"[queued at position {event.turn_queued.position}]")
        elif kind == "turn_completed":
            done_turn = event.turn_completed
            usage = done_turn.usage
            reason = events_pb2.StopReason.Name(done_turn.stop_reason).removeprefix("STOP_REASON_")
            self._line(
                f"\n[{reason.lower()}: {done_turn.message_count} message(s), "
                f"{usage.prompt_tokens}+{usage.completion_tokens} tokens, "
                f"{done_turn.cost_usd} USD]"
            )
