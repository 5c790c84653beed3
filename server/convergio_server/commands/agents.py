"""`convergio agents`: the roster and the team presets as the running server loaded them
(built-ins with the operator's overrides), through the SDK.

    convergio agents list [--preset core]
    convergio agents show amy
    convergio agents presets
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from convergio_server.commands import (
    add_client_args,
    as_dict,
    client_from_args,
    every_page,
    print_table,
)

_PAGE = 100


def register(subparsers: Any) -> None:
    agents = subparsers.add_parser(
        "agents",
        help="the agents and team presets the server offers",
        description="List the agents and team presets as the running server loaded them "
        "(the built-ins with CONVERGIO_AGENTS_DIR's overrides), or show one agent.",
    )
    actions = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the agents, highest priority first")
    add_client_args(listing)
    listing.add_argument("--preset", default="", help="only the agents of this preset")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one agent: role, expertise, tools, model")
    add_client_args(show)
    show.add_argument("name", help="the agent's name (e.g. amy)")
    show.set_defaults(handler=_show)
    presets = actions.add_parser("presets", help="the team presets and their agents")
    add_client_args(presets)
    presets.set_defaults(handler=_presets)


async def _list(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        found, _ = await every_page(
            lambda size, token: client.conversations.list_agents(
                preset=args.preset or None, page_size=size, page_token=token
            ),
            "agents",
            page_size=_PAGE,
        )
    if args.json:
        print(json.dumps([as_dict(a) for a in found], indent=2))
        return 0
    print_table(
        [
            {
                "name": a.name,
                "role": a.role[:60],
                "priority": a.priority,
                "category": a.category,
                "tools": ",".join(a.tools),
            }
            for a in found
        ],
        ["name", "role", "priority", "category", "tools"],
    )
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        agent = (await client.conversations.get_agent(name=args.name)).agent
    if args.json:
        print(json.dumps(as_dict(agent), indent=2))
        return 0
    model = agent.default_model
    print(f"{agent.name} ({agent.display_name}): {agent.role}")
    print(f"  {agent.description}")
    print(f"  priority {agent.priority}, category {agent.category}")
    print(f"  expertise: {', '.join(agent.expertise)}")
    print(f"  tools: {', '.join(agent.tools) or '(none)'}")
    if model.model:
        print(f"  default model: {model.model}")
    print(f"  in presets: {', '.join(agent.presets) or '(none)'}")
    return 0


async def _presets(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        found, _ = await every_page(
            lambda size, token: client.conversations.list_team_presets(
                page_size=size, page_token=token
            ),
            "presets",
            page_size=_PAGE,
        )
    if args.json:
        print(json.dumps([as_dict(p) for p in found], indent=2))
        return 0
    print_table(
        [{"preset": p.name, "agents": ",".join(p.agents), "for": p.description} for p in found],
        ["preset", "agents", "for"],
    )
    return 0
