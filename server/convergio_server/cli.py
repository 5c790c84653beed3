"""`convergio`: run and operate the Convergio server."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from convergio_server import __version__, heap
from convergio_server.config import Settings, load_settings, prepare_data_dir
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
    prepare_data_dir(settings)
    try:
        infra = await open_infrastructure(settings)
    except StartupError as exc:
        print(f"convergio: cannot start: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    collector: asyncio.Task[None] | None = None
    try:
        server = ConvergioServer(settings, infra)
        try:
            await server.start()
        except StartupError as exc:
            print(f"convergio: cannot start: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
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
        if dev_key is not None and dev_key.token is None:
            print(f"No development API key printed: {dev_key.problem}", flush=True)
        elif dev_key is not None and dev_key.token is not None:
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
        from convergio.errors import ConvergioError, Unauthenticated

        if isinstance(exc, ConvergioError):  # a server answer: say it, no traceback
            print(f"convergio: {exc}", file=sys.stderr)
            if isinstance(exc, Unauthenticated) and not getattr(args, "api_key", None):
                # What the server asks for is a header; here it is an option.
                print(
                    "convergio: give an API key with --api-key or CONVERGIO_API_KEY (the "
                    "development key is read from .convergio/dev-api-key, or "
                    "$CONVERGIO_DATA_DIR/dev-api-key, when neither is set)",
                    file=sys.stderr,
                )
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
