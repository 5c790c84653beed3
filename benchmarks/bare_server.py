"""The bare baseline of the conversation benchmark: a grpc.aio server on uvloop, in a
process of its own like `convergio serve`, that streams `count` token-delta events of
about `size` bytes, stamped with the time they were sent, at a given interval: the same
messages as Convergio's, with no platform behind them. Prints its port."""

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
from convergio.conversation.v1 import events_pb2


def _event(size: int) -> events_pb2.ConversationEvent:
    """A token-delta event whose serialized size is `size` bytes (at least its fields')."""
    event = events_pb2.ConversationEvent(
        conversation_id="00000000-0000-4000-8000-000000000000",
        turn_id="00000000-0000-4000-8000-000000000001",
        sequence=1000,
    )
    event.event_time.seconds, event.event_time.nanos = 1_800_000_000, 123_456_000
    event.token_delta.message_id = "00000000-0000-4000-8000-000000000002"
    event.token_delta.agent = "amy"
    event.token_delta.text = "x" * max(1, size - event.ByteSize() - 2)
    return event


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, size, interval = struct.unpack("!IId", request)
    start = time.monotonic()
    event = _event(size)
    for i in range(count):
        if interval:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        micros = time.time_ns() // 1000
        event.sequence = 1000 + i
        event.event_time.seconds, event.event_time.nanos = divmod(micros, 1_000_000)
        event.event_time.nanos *= 1000
        yield event.SerializeToString()


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
