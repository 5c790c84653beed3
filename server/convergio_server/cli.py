"""`convergio`: run and operate the Convergio server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from convergio_server import __version__, heap
from convergio_server.config import Settings, load_settings
from convergio_server.domain.errors import DomainError
from convergio_server.infrastructure import StartupError, open_infrastructure
from convergio_server.logs import configure_logging

EXIT_UNAVAILABLE = 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process killed by SIGPIPE, what `yes | head -1` gives


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "listen": getattr(args, "listen", None),
        "data_dir": getattr(args, "data_dir", None),
        "log_level": getattr(args, "log_level", None),
        "log_format": getattr(args, "log_format", None),
    }
    return load_settings(overrides, getattr(args, "config", None))


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is a fallback
        return asyncio.run(coro)


async def _serve(args: argparse.Namespace) -> int:
    from convergio_server.server import ConvergioServer, serve_until_signalled

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)
    try:
        infra = await open_infrastructure(settings)
    except StartupError as exc:
        print(f"convergio: cannot start: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    collector: asyncio.Task[None] | None = None
    try:
        server = ConvergioServer(settings, infra)
        await server.start()
        dev_key = await server.bootstrap_dev_key()
        heap.settle(settings.gc_full_interval_seconds)
        if settings.gc_full_interval_seconds > 0:
            collector = asyncio.create_task(
                heap.collect_fully(settings.gc_full_interval_seconds), name="gc"
            )
        embedded = f"embedded in {settings.data_dir}"
        stores = (
            f"PostgreSQL {embedded if infra.embedded_postgres else 'external'}, "
            f"Redis {embedded if infra.embedded_redis else 'external'}"
        )
        print(f"Convergio {__version__} listening on {server.address} ({stores})", flush=True)
        if dev_key is not None:
            note = "created now" if dev_key.created else f"from {settings.data_dir / 'dev-api-key'}"
            print(f"Development API key ({settings.dev_tenant} tenant, admin; {note}):", flush=True)
            print(f"  {dev_key.token}", flush=True)
            print(
                f"Try: grpcurl -plaintext -H 'authorization: Bearer {dev_key.token}' "
                f"{server.address} list",
                flush=True,
            )
        await serve_until_signalled(server)
    finally:
        if collector is not None:
            collector.cancel()
        await infra.close()
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging("WARNING")
    try:
        infra = await open_infrastructure(settings)
    except StartupError as exc:
        print(f"convergio: cannot migrate: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        applied = infra.applied_migrations
        print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    finally:
        await infra.close()
    return 0


async def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = _settings(args)
    target = args.target or settings.listen
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            print(f"{target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target} {args.service or '(overall)'}: {status}")
    return 0 if status == "SERVING" else 1


async def _keys(args: argparse.Namespace) -> int:
    from convergio_server.domain.auth import KeyManager
    from convergio_server.storage.keys import PgKeyStore

    settings = _settings(args)
    configure_logging("WARNING")
    try:
        infra = await open_infrastructure(settings)
    except StartupError as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        keys = KeyManager(PgKeyStore(infra.pool), cache_seconds=0)
        if args.keys_command == "create":
            stored, token = await keys.create(args.tenant, args.name, args.role, args.principal)
            if args.json:
                print(
                    json.dumps(
                        {
                            "key_id": stored.key_id,
                            "tenant": stored.tenant_id,
                            "roles": [r.value for r in stored.roles],
                            "token": token,
                        }
                    )
                )
            else:
                print(
                    f"created key {stored.key_id} for tenant {stored.tenant_id} "
                    f"(roles: {', '.join(r.value for r in stored.roles)})"
                )
                print("the key is shown only now; store it safely:")
                print(token)
        elif args.keys_command == "list":
            listed = await keys.list(args.tenant)
            rows = [
                {
                    "key_id": k.key_id,
                    "tenant": k.tenant_id,
                    "name": k.name,
                    "principal": k.principal,
                    "roles": ",".join(r.value for r in k.roles),
                    "created": k.create_time.isoformat(timespec="seconds"),
                    "revoked": k.revoke_time.isoformat(timespec="seconds") if k.revoke_time else "",
                    "last_used": k.last_used_time.isoformat(timespec="seconds")
                    if k.last_used_time
                    else "",
                }
                for k in listed
            ]
            if args.json:
                print(json.dumps(rows))
            else:
                print_table(
                    rows,
                    [
                        "key_id",
                        "tenant",
                        "name",
                        "principal",
                        "roles",
                        "created",
                        "revoked",
                        "last_used",
                    ],
                )
        else:
            revoked = await keys.revoke(args.key_id)
            print(f"revoked key {revoked.key_id} of tenant {revoked.tenant_id}")
    except DomainError as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return 1
    finally:
        await infra.close()
    return 0


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain aligned table; `--json` is there for scripts."""
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


async def _version(args: argparse.Namespace) -> int:
    import convergio

    print(f"convergio-server {__version__}")
    print(f"convergio-sdk {getattr(convergio, '__version__', 'unknown')}")
    print("API: convergio.{common,conversation,workflow,approval,flag,cost}.v1")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file (or CONVERGIO_CONFIG_FILE)")
    parser.add_argument("--data-dir", type=Path, help="data directory (CONVERGIO_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convergio",
        description="Convergio: a gRPC platform that runs teams of AI agents. "
        "Settings come from flags, CONVERGIO_* environment variables, DATABASE_URL, "
        "REDIS_URL and an optional TOML file; see README.md for the table.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the gRPC server",
        description="Start the server. Without DATABASE_URL / REDIS_URL it starts an embedded "
        "PostgreSQL and Redis under the data directory. Migrations are applied at start. "
        "On first start it creates the development tenant's admin key and prints it. "
        "SIGTERM stops accepting calls and lets open streams finish within the grace period.",
    )
    _common(serve)
    serve.add_argument("--listen", help="host:port to listen on (CONVERGIO_LISTEN)")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--log-format", choices=["json", "text"])
    serve.set_defaults(handler=_serve)

    migrate = sub.add_parser(
        "migrate",
        help="apply database migrations and exit",
        description="Apply pending SQL migrations. Safe to run twice and from several "
        "processes at once (a PostgreSQL advisory lock serialises them).",
    )
    _common(migrate)
    migrate.set_defaults(handler=_migrate)

    health_cmd = sub.add_parser(
        "health",
        help="ask a running server whether it is serving",
        description="Call grpc.health.v1.Health/Check. Exit 0 when SERVING, 1 when not, "
        "2 when the server cannot be reached.",
    )
    _common(health_cmd)
    health_cmd.add_argument("--target", help="host:port (default: the listen setting)")
    health_cmd.add_argument("--service", default="", help="a service name; empty = overall")
    health_cmd.add_argument("--timeout", type=float, default=5.0, help="seconds")
    health_cmd.set_defaults(handler=_health)

    keys = sub.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Manage API keys directly in the database. Keys belong to a tenant and "
        "carry roles: admin (everything), operator (flags, budgets, breaker), approver "
        "(decide approvals), member (conversations, workflows).",
    )
    _common(keys)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True, help="tenant id (created if new)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["admin", "operator", "approver", "member"],
        help="repeat for several roles",
    )
    create.add_argument("--principal", help="the principal's name (default: the key's name)")
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="only this tenant")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the id shown by `keys list`")
    keys.set_defaults(handler=_keys)

    version = sub.add_parser("version", help="print versions")
    version.set_defaults(handler=_version)
    _register_extensions(sub)
    return parser


def _register_extensions(sub: Any) -> None:
    import importlib

    from convergio_server.commands import MODULES

    for name in MODULES:
        try:
            module = importlib.import_module(f"convergio_server.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"convergio_server.commands.{name}":
                raise
            continue
        module.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.handler
    try:
        code = _run(handler(args))
        sys.stdout.flush()  # here, so that a closed pipe is met inside this `try`
        return code
    except BrokenPipeError:
        # The reader of stdout left (`... | head -1`): nothing more to say. stdout now
        # points at /dev/null, else the interpreter's own flush at exit fails again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # bad settings
        print(f"convergio: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from convergio.errors import ConvergioError

        if isinstance(exc, ConvergioError):  # a server answer: say it, no traceback
            print(f"convergio: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
