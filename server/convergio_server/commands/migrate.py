"""`convergio migrate`: apply the database migrations and exit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from convergio_server.commands import (
    EXIT_UNAVAILABLE,
    DatabaseUnavailable,
    add_store_args,
    open_database,
)


def register(subparsers: Any) -> None:
    migrate = subparsers.add_parser(
        "migrate",
        help="apply database migrations and exit",
        description="Apply pending SQL migrations to PostgreSQL (Redis is not needed). Safe "
        "to run twice and from several processes at once (a PostgreSQL advisory lock "
        "serialises them). Exit 0 when done, 2 when PostgreSQL cannot be reached.",
    )
    add_store_args(migrate)
    migrate.set_defaults(handler=_migrate)


async def _migrate(args: argparse.Namespace) -> int:
    from convergio_server.config import load_settings
    from convergio_server.logs import configure_logging

    settings = load_settings({"data_dir": args.data_dir}, args.config)
    configure_logging("WARNING")
    try:
        async with open_database(settings) as (_, applied):
            print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    except DatabaseUnavailable as exc:
        print(f"convergio: cannot migrate: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0
