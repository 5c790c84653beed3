"""The bare baseline of the conversation benchmark: a grpc.aio server on uvloop, in a
process of its own like `convergio serve`, that streams `count` messages of `size` bytes
(each starting with the time it was sent) at a given interval. Prints its port."""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import uvloop


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size, interval = struct.unpack("!IId", request)
    start = time.monotonic()
    padding = b"x" * max(0, size - 8)
    for i in range(count):
        if interval:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield struct.pack("!d", time.time()) + padding


async def _serve() -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Bare",
        {
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream, request_deserializer=lambda b: b, response_serializer=lambda b: b
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    # Ends when the benchmark closes stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0.2)


if __name__ == "__main__":
    uvloop.run(_serve())
