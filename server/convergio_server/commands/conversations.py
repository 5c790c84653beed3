"""`convergio conversations`: look after a tenant's conversations from the terminal.

    convergio conversations list --status running
    convergio conversations show ID              # the transcript
    convergio conversations turns ID             # each turn: how it ended, what it used
    convergio conversations follow ID            # replay, then stream what happens live
    convergio conversations cancel ID            # stop the running turn
    convergio conversations delete ID --force

Through the SDK, as the API key's principal. Tables by default, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from convergio import errors
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2

from convergio_server.commands import (
    add_client_args,
    as_dict,
    client_from_args,
    enum_name,
    every_page,
    print_table,
    time_text,
)
from convergio_server.commands.chat import Renderer

_STATUSES = {
    "idle": pb.CONVERSATION_STATUS_IDLE,
    "running": pb.CONVERSATION_STATUS_RUNNING,
    "waiting_for_approval": pb.CONVERSATION_STATUS_WAITING_FOR_APPROVAL,
}
_PAGE = 100  # the API's largest page


def register(subparsers: Any) -> None:
    conversations = subparsers.add_parser(
        "conversations",
        help="list, show, follow, cancel and delete conversations",
        description="Look after the API key's conversations: list them, read a transcript "
        "or a conversation's turns, follow its events live, cancel its running turn, "
        "delete it.",
    )
    actions = conversations.add_subparsers(
        dest="conversations_command", required=True, metavar="ACTION"
    )

    listing = actions.add_parser("list", help="conversations, most recently updated first")
    add_client_args(listing)
    listing.add_argument("--status", choices=sorted(_STATUSES), help="only this status")
    listing.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only conversations with this label (repeat: all of them)",
    )
    listing.add_argument("--limit", type=int, default=50, help="most conversations to show")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="a conversation and its transcript")
    add_client_args(show)
    show.add_argument("conversation_id", metavar="ID")
    show.add_argument("--turn", default="", help="only the messages of this turn")
    show.set_defaults(handler=_show)

    turns = actions.add_parser("turns", help="a conversation's turns, newest first")
    add_client_args(turns)
    turns.add_argument("conversation_id", metavar="ID")
    turns.set_defaults(handler=_turns)

    follow = actions.add_parser(
        "follow",
        help="replay a conversation's events, then stream new ones as they happen",
        description="Print the conversation's events after --after (0: from its start) as "
        "`convergio chat` does, then follow it live until Ctrl-C. With --turn, only that "
        "turn's events, ending with its end; with --replay, only what is logged now.",
    )
    add_client_args(follow)
    follow.add_argument("conversation_id", metavar="ID")
    follow.add_argument("--after", type=int, default=0, help="the last sequence already seen")
    follow.add_argument("--turn", default="", help="only this turn, to its end")
    follow.add_argument("--replay", action="store_true", help="what is logged now, then end")
    follow.set_defaults(handler=_follow)

    cancel = actions.add_parser("cancel", help="cancel the running turn (or a queued one)")
    add_client_args(cancel)
    cancel.add_argument("conversation_id", metavar="ID")
    cancel.add_argument("--turn", default="", help="this turn (default: the running one)")
    cancel.add_argument("--reason", default="cancelled from the CLI", help="why, for the log")
    cancel.set_defaults(handler=_cancel)

    delete = actions.add_parser("delete", help="delete a conversation with its history")
    add_client_args(delete)
    delete.add_argument("conversation_id", metavar="ID")
    delete.add_argument(
        "--force", action="store_true", help="cancel its running and queued turns first"
    )
    delete.set_defaults(handler=_delete)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


async def _list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ValueError("--limit must be at least 1")
    labels = _labels(args.label)
    async with client_from_args(args) as client:
        found, more = await every_page(
            lambda size, token: client.conversations.list_conversations(
                status=_STATUSES[args.status] if args.status else None,
                labels=labels or None,
                page_size=size,
                page_token=token,
            ),
            "conversations",
            page_size=_PAGE,
            limit=args.limit,
        )
    if args.json:
        print(json.dumps([as_dict(c) for c in found], indent=2))
        return 0
    print_table(
        [
            {
                "id": c.conversation_id,
                "title": c.title[:40],
                "status": enum_name(pb.ConversationStatus, c.status, "CONVERSATION_STATUS_"),
                "team": c.team.preset or c.team.single_agent or ",".join(c.participants),
                "turns": c.turn_count,
                "messages": c.message_count,
                "cost_usd": c.cost_usd,
                "updated": time_text(c.update_time),
            }
            for c in found
        ],
        ["id", "title", "status", "team", "turns", "messages", "cost_usd", "updated"],
    )
    if more:
        print(f"(more than {len(found)}; raise --limit to see them)", file=sys.stderr)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        conversation = (
            await client.conversations.get_conversation(conversation_id=args.conversation_id)
        ).conversation
        messages, _ = await every_page(
            lambda size, token: client.conversations.list_messages(
                conversation_id=args.conversation_id,
                turn_id=args.turn or None,
                page_size=size,
                page_token=token,
            ),
            "messages",
            page_size=_PAGE,
        )
    if args.json:
        out = {"conversation": as_dict(conversation), "messages": [as_dict(m) for m in messages]}
        print(json.dumps(out, indent=2))
        return 0
    status = enum_name(pb.ConversationStatus, conversation.status, "CONVERSATION_STATUS_")
    print(f"{conversation.title or '(untitled)'}  [{conversation.conversation_id}]")
    print(f"  team: {', '.join(conversation.participants)}")
    print(
        f"  {status}; {conversation.turn_count} turn(s), {conversation.message_count} "
        f"message(s), {conversation.usage.prompt_tokens}+"
        f"{conversation.usage.completion_tokens} tokens, {conversation.cost_usd} USD"
    )
    if conversation.active_turn_id:
        print(f"  running turn: {conversation.active_turn_id}")
    if conversation.labels:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(conversation.labels.items()))
        print(f"  labels: {labels}")
    for message in messages:
        role = enum_name(events_pb2.MessageRole, message.role, "MESSAGE_ROLE_")
        who = "user" if role == "user" else message.source
        suffix = "" if role in ("user", "agent") else f" ({role})"
        print(f"\n{who}{suffix}> [{time_text(message.create_time)}]")
        print(message.content)
    return 0


async def _turns(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        found, _ = await every_page(
            lambda size, token: client.conversations.list_turns(
                conversation_id=args.conversation_id, page_size=size, page_token=token
            ),
            "turns",
            page_size=_PAGE,
        )
    if args.json:
        print(json.dumps([as_dict(t) for t in found], indent=2))
        return 0
    rows = []
    for turn in found:
        took = ""
        if turn.HasField("start_time") and turn.HasField("end_time"):
            spent = turn.end_time.ToDatetime() - turn.start_time.ToDatetime()
            took = f"{spent.total_seconds():.2f}"
        rows.append(
            {
                "turn": turn.turn_id,
                "status": enum_name(pb.TurnStatus, turn.status, "TURN_STATUS_"),
                "stop": enum_name(events_pb2.StopReason, turn.stop_reason, "STOP_REASON_")
                if turn.stop_reason
                else "",
                "messages": turn.message_count,
                "tokens": f"{turn.usage.prompt_tokens}+{turn.usage.completion_tokens}",
                "cost_usd": turn.cost_usd,
                "started": time_text(turn.start_time),
                "seconds": took,
            }
        )
    print_table(
        rows, ["turn", "status", "stop", "messages", "tokens", "cost_usd", "started", "seconds"]
    )
    return 0


async def _follow(args: argparse.Namespace) -> int:
    if args.after < 0:
        raise ValueError("--after must not be negative")
    render = Renderer(sys.stdout, json_output=args.json, show_user=True)
    async with client_from_args(args) as client:
        events = client.conversations.follow(
            args.conversation_id,
            after_sequence=args.after,
            turn_id=args.turn or None,
            replay=args.replay,
        )
        try:
            async for event in events:
                render.event(event)
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 130
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        # Without a turn id the server cancels the running turn (FAILED_PRECONDITION: none).
        try:
            turn = (
                await client.conversations.cancel_turn(
                    conversation_id=args.conversation_id, turn_id=args.turn, reason=args.reason
                )
            ).turn
        except errors.FailedPrecondition as exc:
            if args.turn:
                raise
            print(f"convergio: {exc.message}", file=sys.stderr)
            print("convergio: name a turn with --turn TURN_ID", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(as_dict(turn), indent=2))
        return 0
    status = enum_name(pb.TurnStatus, turn.status, "TURN_STATUS_")
    if turn.stop_reason:
        status += f" ({enum_name(events_pb2.StopReason, turn.stop_reason, 'STOP_REASON_')})"
    print(f"turn {turn.turn_id}: {status}")
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        await client.conversations.delete_conversation(
            conversation_id=args.conversation_id, force=args.force
        )
    if args.json:
        print(json.dumps({"deleted": args.conversation_id}))
    else:
        print(f"deleted conversation {args.conversation_id}")
    return 0
