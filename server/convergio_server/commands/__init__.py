"""Subcommands of `convergio` that talk to a running server through the SDK.

Each module here defines `register(subparsers)` and is listed in MODULES; the
handlers they set are coroutines taking the parsed arguments and returning an
exit code.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convergio import AsyncClient
from google.protobuf import json_format, timestamp_pb2

# Modules of this package that add subcommands (missing ones are skipped).
MODULES = ("chat", "conversations", "agents", "flags", "cost", "kb")


def add_client_args(parser: argparse.ArgumentParser) -> None:
    """--target and --api-key, shared by every command that calls the server."""
    parser.add_argument(
        "--target",
        default=os.environ.get("CONVERGIO_TARGET", "127.0.0.1:50051"),
        help="server host:port (CONVERGIO_TARGET; default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="API key (CONVERGIO_API_KEY; default: the dev key in .convergio/dev-api-key)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def api_key(args: argparse.Namespace) -> str | None:
    if args.api_key:
        return str(args.api_key)
    if os.environ.get("CONVERGIO_API_KEY"):
        return os.environ["CONVERGIO_API_KEY"]
    data_dir = Path(os.environ.get("CONVERGIO_DATA_DIR", ".convergio"))
    dev_key = data_dir / "dev-api-key"
    return dev_key.read_text().strip() if dev_key.exists() else None


def client_from_args(args: argparse.Namespace) -> AsyncClient:
    return AsyncClient(args.target, api_key=api_key(args))


def iso_time(*, offset_required: bool = False) -> Callable[[str], datetime | None]:
    """An argparse `type=` for ISO-8601 times; "" is no time. Without `offset_required`, a
    time without a UTC offset is taken as UTC."""

    def parse(text: str) -> datetime | None:
        if not text.strip():
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an ISO-8601 time, e.g. 2026-03-01T09:00:00Z"
            ) from None
        if moment.tzinfo is None:
            if offset_required:
                raise argparse.ArgumentTypeError(
                    f"{text!r} has no UTC offset; give one, e.g. 2026-03-01T09:00:00Z"
                )
            moment = moment.replace(tzinfo=UTC)
        return moment

    return parse


def comma_list(text: str) -> list[str]:
    """The items of `a,b,c`; "" is no items. An empty item is refused rather than dropped,
    since it usually means a typo that changed what the user asked for."""
    if not text.strip():
        return []
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item; separate items by one ','")
    return items


def int_list(low: int, high: int, example: str) -> Callable[[str], list[int]]:
    """An argparse `type=` for comma-separated whole numbers from `low` to `high`."""
    what = f"whole numbers from {low} to {high}, comma-separated, e.g. {example}"

    def parse(text: str) -> list[int]:
        values = []
        for item in comma_list(text):
            # Not int(): it would also take "1_0" and other spellings nobody means.
            if not re.fullmatch(r"[0-9]+", item):
                raise argparse.ArgumentTypeError(f"{item!r} is not a whole number; use {what}")
            value = int(item)
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"{value} is out of range; use {what}")
            values.append(value)
        return values

    return parse


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """`STOP_REASON_COMPLETED` as `completed`, for tables."""
    return str(enum.Name(value)).removeprefix(prefix).lower()


def time_text(ts: timestamp_pb2.Timestamp) -> str:
    """A timestamp as `2026-01-31 12:00:00` (UTC), or "" when it is not set."""
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def every_page(
    fetch: Callable[[int, str], Awaitable[Any]],
    field: str,
    *,
    page_size: int,
    limit: int | None = None,
) -> tuple[list[Any], bool]:
    """The items of a paginated list, page after page, up to `limit` (None: all of them),
    and whether more were left. `fetch(page_size, page_token)` asks for one page; `field`
    names the response's list."""
    found: list[Any] = []
    token = ""
    while limit is None or len(found) < limit:
        size = page_size if limit is None else min(page_size, limit - len(found))
        page = await fetch(size, token)
        found += getattr(page, field)
        token = page.next_page_token
        if not token:
            break
    return found, bool(token)


def as_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready data, with the proto's field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
