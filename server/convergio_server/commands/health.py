"""`convergio health`: ask a running server whether it is serving."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from convergio_server.commands import EXIT_FAILED, EXIT_UNAVAILABLE, add_store_args


def positive_seconds(text: str) -> float:
    """An argparse `type=` for a timeout: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds above 0")
    return value


def register(subparsers: Any) -> None:
    health = subparsers.add_parser(
        "health",
        help="ask a running server whether it is serving",
        description="Call grpc.health.v1.Health/Check. Exit 0 when SERVING, 1 when not "
        "serving or when the server does not know --service, 2 when the server cannot be "
        "reached in --timeout seconds.",
    )
    add_store_args(health)
    health.add_argument("--target", help="host:port (default: the listen setting)")
    health.add_argument("--service", default="", help="a service name; empty = overall")
    health.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds (default 5)")
    health.set_defaults(handler=_health)


async def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from convergio_server.config import load_settings

    settings = load_settings({"data_dir": args.data_dir}, args.config)
    target = args.target or settings.listen
    service = args.service or "(overall)"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            # The server answered: it is up, but has no such service (grpc.health.v1 says
            # NOT_FOUND with no message).
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                print(f"{target}: unknown service {args.service}", file=sys.stderr)
                return EXIT_FAILED
            print(f"{target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target} {service}: {status}")
    return 0 if status == "SERVING" else EXIT_FAILED
