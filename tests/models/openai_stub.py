"""A local HTTP server that speaks the OpenAI chat-completions protocol (JSON and
server-sent events), scripted per request: answer, stream text, stream a tool call, fail
with a status, send garbage, hang, or keep streaming past `max_tokens`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

CREATED = 1_700_000_000


@dataclass
class Action:
    # "text", "tool", "status", "garbage", "truncated", "cut", "hang", and "runaway" (text,
    # or a tool call's arguments with "runaway_tool") that ignores max_tokens
    kind: str
    text: str = "Hello from the stub"
    status: int = 200
    retry_after_ms: int = 1
    tool_name: str = "financial_calculator"
    tool_arguments: str = '{"operation": "npv", "rate": 0.08, "values": [-100, 60, 70]}'
    report_usage: bool = True  # False: no usage chunk, even when asked for one
    words: int = 2000  # how much a runaway streams, one word (or number) per chunk
    linger_seconds: float = 5.0  # how long a runaway waits for a hang-up before it ends
    cut_after: tuple[str, ...] = ("Hello", " from", " the")  # what "cut" sends before it drops


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    # The client closed the connection before the stub had sent its whole answer.
    hung_up: bool = False


@dataclass
class OpenAIStub:
    script: list[Action] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    received: asyncio.Event = field(default_factory=asyncio.Event)  # set at each request

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *actions: Action) -> OpenAIStub:
        self.script.extend(actions)
        return self

    async def answered(self) -> None:
        """Waits until every request so far has had its whole answer (or its hang-up)."""
        await asyncio.wait_for(asyncio.gather(*self.handlers, return_exceptions=True), 30)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            request_line = (await reader.readline()).decode()
            if not request_line:
                return
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode()
                if line in ("\r\n", "\n", ""):
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            body = json.loads(raw) if raw else {}
            recorded = Recorded(request_line.split()[1], headers, body)
            self.requests.append(recorded)
            self.received.set()
            action = self.script.pop(0) if self.script else Action("text")
            if action.kind.startswith("runaway"):
                await self._runaway(action, body, reader, writer, recorded)
                return
            await self.respond(action, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def respond(
        self, action: Action, body: dict[str, Any], writer: asyncio.StreamWriter
    ) -> None:
        if action.kind == "hang":
            await asyncio.sleep(3600)
            return
        if action.kind == "status":
            payload = json.dumps(
                {"error": {"message": f"stub says {action.status}", "type": "stub"}}
            ).encode()
            writer.write(
                f"HTTP/1.1 {action.status} Stub\r\nContent-Type: application/json\r\n"
                f"retry-after-ms: {action.retry_after_ms}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        if action.kind == "garbage":
            payload = b"<html>this is not the API you are looking for</html>"
            kind = "text/event-stream" if body.get("stream") else "application/json"
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(payload)}"
                "\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        if body.get("stream"):
            await self.stream(action, body, writer)
        else:
            payload = json.dumps(self.completion(action, body)).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()

    def completion(self, action: Action, body: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": action.text}
        finish = "stop"
        if action.kind == "tool":
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": action.tool_name, "arguments": action.tool_arguments},
                    }
                ],
            }
            finish = "tool_calls"
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }

    async def stream(
        self, action: Action, body: dict[str, Any], writer: asyncio.StreamWriter
    ) -> None:
        if action.kind == "cut":
            await self._cut(action, body, writer)
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": body.get("model", "stub"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        if action.kind == "tool":
            half = len(action.tool_arguments) // 2
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": action.tool_name,
                                    "arguments": action.tool_arguments[:half],
                                },
                            }
                        ]
                    }
                )
            )
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "function": {"arguments": action.tool_arguments[half:]}}
                        ]
                    }
                )
            )
            events.append(chunk({}, "tool_calls"))
        else:
            for index, word in enumerate(action.text.split(" ")):
                events.append(chunk({"content": word if index == 0 else " " + word}))
            events.append(chunk({}, "stop"))
        if action.kind == "truncated":
            events = events[:2]
        for event in events:
            writer.write(f"data: {json.dumps(event)}\n\n".encode())
            await writer.drain()
        if action.kind == "truncated":
            return
        if action.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": body.get("model", "stub"),
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            }
            writer.write(f"data: {json.dumps(usage)}\n\n".encode())
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()

    async def _runaway(
        self,
        action: Action,
        body: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        recorded: Recorded,
    ) -> None:
        """Streams `action.words` pieces whatever max_tokens says, then waits a while for
        the client to hang up before it ends the answer and reports its usage honestly."""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )

        def event(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            )
            chunk = {
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED,
                "model": body.get("model", "stub"), "choices": choices, **extra,
            }  # fmt: skip
            return f"data: {json.dumps(chunk)}\n\n".encode()

        tool = action.kind == "runaway_tool"
        try:
            writer.write(event({"role": "assistant", "content": ""}))
            if tool:
                writer.write(event({"tool_calls": [{
                    "index": 0, "id": "call_1", "type": "function",
                    "function": {"name": action.tool_name, "arguments": '{"values": ['},
                }]}))  # fmt: skip
            for index in range(action.words):
                piece: dict[str, Any]
                if tool:
                    piece = {"tool_calls": [{"index": 0, "function": {"arguments": f"{index}, "}}]}
                else:
                    piece = {"content": f"word{index}" if index == 0 else f" word{index}"}
                writer.write(event(piece))
                await writer.drain()
            try:
                recorded.hung_up = (
                    await asyncio.wait_for(reader.read(), action.linger_seconds) == b""
                )
            except TimeoutError:
                pass
            if recorded.hung_up:
                return
            writer.write(event({}, "tool_calls" if tool else "stop"))
            usage = {"prompt_tokens": 11, "completion_tokens": action.words,
                     "total_tokens": 11 + action.words}  # fmt: skip
            writer.write(event(None, usage=usage) + b"data: [DONE]\n\n")
            await writer.drain()
        except ConnectionError:
            recorded.hung_up = True

    async def _cut(
        self, action: Action, body: dict[str, Any], writer: asyncio.StreamWriter
    ) -> None:
        """A chunked answer whose connection drops in the middle of its body."""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for word in action.cut_after:
            event = {
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED,
                "model": body.get("model", "stub"),
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }  # fmt: skip
            data = f"data: {json.dumps(event)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"1000\r\npartial")  # a chunk announced, never finished
        await writer.drain()
        writer.close()


@asynccontextmanager
async def openai_stub() -> AsyncIterator[OpenAIStub]:
    stub = OpenAIStub()
    server = await asyncio.start_server(stub.handle, "127.0.0.1", 0)
    stub.port = server.sockets[0].getsockname()[1]
    try:
        yield stub
    finally:
        server.close()
        for task in list(stub.handlers):  # hanging responses end with the stub
            task.cancel()
        await asyncio.gather(*stub.handlers, return_exceptions=True)
        await server.wait_closed()
