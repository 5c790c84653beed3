"""`convergio keys`: create, list and revoke API keys directly in the database.

Only PostgreSQL is opened, so that a key can be revoked while Redis is down.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from convergio_server.commands import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    DatabaseUnavailable,
    add_store_args,
    open_database,
    print_table,
)
from convergio_server.domain.errors import DomainError

if TYPE_CHECKING:
    from convergio_server.domain.auth import ApiKey

_COLUMNS = ["key_id", "tenant", "name", "principal", "roles", "created", "revoked", "last_used"]


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Manage API keys directly in PostgreSQL (Redis is not needed). Keys "
        "belong to a tenant and carry roles: admin (everything), operator (flags, budgets, "
        "breaker), approver (decide approvals), member (conversations, workflows). Exit 0 "
        "when done, 1 when refused (bad input, no such key), 2 when PostgreSQL cannot be "
        "reached.",
    )
    add_store_args(keys)
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True, help="tenant id (created if new)")
    create.add_argument(
        "--name", required=True, help="what the key is for (1-100 printable characters)"
    )
    create.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["admin", "operator", "approver", "member"],
        help="repeat for several roles",
    )
    create.add_argument("--principal", help="the principal's name (default: the key's name)")
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id shown by `keys list`")
    keys.set_defaults(handler=_keys)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def key_record(key: ApiKey) -> dict[str, Any]:
    """A key as `keys list --json` and `keys create --json` show it: roles as a list, times
    as ISO-8601 or null."""
    return {
        "key_id": key.key_id,
        "tenant": key.tenant_id,
        "name": key.name,
        "principal": key.principal,
        "roles": [r.value for r in key.roles],
        "created": _time(key.create_time),
        "revoked": _time(key.revoke_time),
        "last_used": _time(key.last_used_time),
    }


async def _keys(args: argparse.Namespace) -> int:
    from convergio_server.config import load_settings
    from convergio_server.logs import configure_logging

    settings = load_settings({"data_dir": args.data_dir}, args.config)
    configure_logging("WARNING")
    try:
        async with open_database(settings) as (pool, _):
            return await _run(args, pool, _where(settings))
    except DatabaseUnavailable as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _where(settings: Any) -> str:
    """Which database the keys are in: a key made in the wrong one works nowhere."""
    from convergio_server.infrastructure import redact

    if settings.database_url:
        return f"PostgreSQL at {redact(settings.database_url)}"
    return f"the PostgreSQL embedded in {settings.data_dir}"


async def _run(args: argparse.Namespace, pool: Any, where: str) -> int:
    from convergio_server.domain.auth import KeyManager
    from convergio_server.storage.keys import PgKeyStore

    keys = KeyManager(PgKeyStore(pool), cache_seconds=0)
    try:
        if args.keys_command == "create":
            stored, token = await keys.create(args.tenant, args.name, args.role, args.principal)
            if args.json:
                print(json.dumps({**key_record(stored), "token": token}))
            else:
                print(
                    f"created key {stored.key_id} for tenant {stored.tenant_id} "
                    f"(roles: {', '.join(r.value for r in stored.roles)}) in {where}"
                )
                print("the key is shown only now; store it safely:")
                print(token)
        elif args.keys_command == "list":
            records = [key_record(k) for k in await keys.list(args.tenant)]
            if args.json:
                print(json.dumps(records))
            else:
                rows = [
                    {
                        **record,
                        "roles": ",".join(record["roles"]),
                        "revoked": record["revoked"] or "",
                        "last_used": record["last_used"] or "",
                    }
                    for record in records
                ]
                print_table(rows, _COLUMNS)
        else:
            revoked = await keys.revoke(args.key_id)
            print(f"revoked key {revoked.key_id} of tenant {revoked.tenant_id}")
    except DomainError as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await keys.close()
    return 0
