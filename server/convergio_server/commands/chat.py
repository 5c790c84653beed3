"""`convergio chat`: talk to a team of agents in the terminal.

    convergio chat --preset core "How should we price the new plan?"
    convergio chat --agent amy           # interactive: one message per line
    convergio chat --conversation ID     # go on with an existing conversation
    convergio chat --conversation ID --queue "Next"   # after the turn running now

Tokens are printed as they arrive, under the name of the agent speaking; tool calls and
their results are shown as they happen, and each turn ends with how it ended and what it
used. Ctrl-C during a turn cancels it; Ctrl-D (or /quit) leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2

from convergio_server.commands import add_client_args, client_from_args


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
    chat.add_argument("--max-turns", type=int, default=0, help="most agent replies per message")
    chat.add_argument(
        "--queue",
        action="store_true",
        help="when a turn is already running, wait for it and then send (else: an error)",
    )
    chat.add_argument("message", nargs="?", help="the message; omit for an interactive prompt")
    chat.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        conversation_id = args.conversation or await _create(client, args)
        if args.message:
            return await _turn(client, conversation_id, args.message, args, sys.stdout)
        print(f"conversation {conversation_id} (Ctrl-D to leave)", file=sys.stderr)
        status = 0
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                print(file=sys.stderr)
                return status
            if line.strip() in ("/quit", "/exit"):
                return status
            if line.strip():
                status = await _turn(client, conversation_id, line, args, sys.stdout)


async def _create(client: AsyncClient, args: argparse.Namespace) -> str:
    if args.agent:
        team = pb.Team(single_agent=args.agent)
    elif args.agents:
        names = [n.strip() for n in args.agents.split(",") if n.strip()]
        team = pb.Team(agents=pb.AgentNames(names=names))
    else:
        team = pb.Team(preset=args.preset or "core")
    created = await client.conversations.create_conversation(title=args.title, team=team)
    conversation_id = created.conversation.conversation_id
    print(f"conversation {conversation_id}", file=sys.stderr)
    return conversation_id


async def _turn(
    client: AsyncClient, conversation_id: str, content: str, args: argparse.Namespace, out: TextIO
) -> int:
    render = Renderer(out, json_output=args.json)
    events = client.conversations.send(
        conversation_id=conversation_id,
        content=content,
        max_turns=args.max_turns or None,
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
        if self.json:
            from google.protobuf.json_format import MessageToJson

            self.out.write(MessageToJson(event, indent=None) + "\n")
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
