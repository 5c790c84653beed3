"""Subcommands of `convergio` that talk to a running server through the SDK.

Each module here defines `register(subparsers)` and is listed in MODULES; the
handlers they set are coroutines taking the parsed arguments and returning an
exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convergio import AsyncClient
from google.protobuf import json_format, timestamp_pb2

if TYPE_CHECKING:
    import asyncpg

    from convergio_server.config import Settings

# Modules of this package that add subcommands (missing ones are skipped).
MODULES = ("chat", "conversations", "agents", "flags", "cost", "kb", "migrate", "health", "keys")

# Exit codes of the commands that talk to the stores or the server directly.
EXIT_FAILED = 1  # the command was understood and refused or found nothing (the message says)
EXIT_UNAVAILABLE = 2  # a store or the server cannot be reached


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain aligned table; `--json` is there for scripts."""
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def add_store_args(parser: argparse.ArgumentParser) -> None:
    """--config and --data-dir, for the commands that open the database themselves."""
    parser.add_argument("--config", type=Path, help="TOML settings file (or CONVERGIO_CONFIG_FILE)")
    parser.add_argument("--data-dir", type=Path, help="data directory (CONVERGIO_DATA_DIR)")


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be started, reached or migrated; the message says which."""


@contextlib.asynccontextmanager
async def open_database(
    settings: Settings, *, migrate: bool = True
) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    """A small pool on PostgreSQL (the embedded one when DATABASE_URL is unset) and the
    migrations applied now. Only PostgreSQL: keys, the knowledge base and migrations live
    there, and an operator must be able to revoke a key while Redis is down."""
    from convergio_server.infrastructure import redact
    from convergio_server.storage import postgres as pg
    from convergio_server.storage.embedded import EmbeddedPostgres
    from convergio_server.storage.migrations import MigrationError, apply_migrations

    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    try:
        if not url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            embedded = EmbeddedPostgres(settings.data_dir)
            try:
                await asyncio.to_thread(embedded.start)
            except Exception as exc:
                raise DatabaseUnavailable(
                    f"could not start the embedded PostgreSQL: {exc}"
                ) from exc
            url = embedded.url
        try:
            pool = await pg.create_pool(
                url, min_size=1, max_size=2, connect_timeout=settings.connect_timeout_seconds
            )
        except Exception as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {redact(url)} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        try:
            try:
                applied = await apply_migrations(pool) if migrate else []
            except MigrationError as exc:  # said in one line, naming the file
                raise DatabaseUnavailable(f"database migrations: {exc}") from exc
            yield pool, applied
        finally:
            await pool.close()
    finally:
        # Another `convergio` process may share the embedded server: the last one stops it.
        if embedded is not None:
            await asyncio.to_thread(embedded.release)


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
        try:
            # In UTC the time fits a protobuf Timestamp (years 1-9999); an offset can push
            # it out of that range (0001-01-01T00:00:00+01:00), which datetime refuses here.
            return moment.astimezone(UTC)
        except OverflowError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is out of range: in UTC it must be from 0001-01-01 to 9999-12-31"
            ) from None

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


def int_list(
    low: int, high: int, example: str, *, ascending: bool = False
) -> Callable[[str], list[int]]:
    """An argparse `type=` for comma-separated whole numbers from `low` to `high`; with
    `ascending`, each larger than the one before."""
    what = f"whole numbers from {low} to {high}, comma-separated, e.g. {example}"

    def parse(text: str) -> list[int]:
        values: list[int] = []
        for item in comma_list(text):
            # Not int(): it would also take "1_0" and other spellings nobody means.
            if not re.fullmatch(r"[0-9]+", item):
                raise argparse.ArgumentTypeError(f"{item!r} is not a whole number; use {what}")
            value = int(item)
            if not low <= value <= high:
                raise argparse.ArgumentTypeError(f"{value} is out of range; use {what}")
            if ascending and values and value <= values[-1]:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not ascending without repeats; use {what}"
                )
            values.append(value)
        return values

    return parse


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type=` for one whole number from `low` to `high`: checked here rather
    than sent, so that a typo is an argparse error naming the option."""

    def parse(text: str) -> int:
        # Not int(): it would also take "1_0", " 5" and other digits than ASCII.
        if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)

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
    """A message as JSON-ready data, with the proto's field names. Fields at their default
    (0, "", false, []) are kept: a script reads `remaining: 0` rather than a missing key."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
