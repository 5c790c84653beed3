"""The clients: `AsyncClient` (grpc.aio) and `Client` (sync).

Both carry the typed service facades as attributes (`conversations`,
`workflows`, `approvals`, `flags`, `costs`), send the API key with every call,
and close their channel when used as a context manager.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from google.protobuf import wrappers_pb2

from convergio import _runtime, errors
from convergio._services import AsyncServices, Services
from convergio.conversations import AsyncConversations, Conversations

__all__ = ["API_KEY_ENV", "DEFAULT_TARGET", "AsyncClient", "Client", "__version__"]

# The version of the convergio-sdk distribution (sdk/pyproject.toml).
__version__ = "0.1.0"

DEFAULT_TARGET = "127.0.0.1:50051"
API_KEY_ENV = "CONVERGIO_API_KEY"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_RETRY = _runtime.RetryPolicy()

ChannelOptions = Sequence[tuple[str, Any]]

# The standard health check, without depending on grpcio-health-checking:
# HealthCheckRequest {string service = 1} and HealthCheckResponse
# {ServingStatus status = 1} have the wire format of StringValue and Int32Value.
_HEALTH_CHECK = _runtime.Method(
    "/grpc.health.v1.Health/Check",
    wrappers_pb2.StringValue,
    wrappers_pb2.Int32Value,
    # A probe reports the state now; retrying would hide an outage.
    idempotent=False,
)
_SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def channel_options(options: ChannelOptions | None = None) -> list[tuple[str, Any]]:
    """The client's channel options: these defaults, overridden by `options`."""
    merged: dict[str, Any] = {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        # Detect a dead connection under a long stream within about a minute.
        # Pings are only sent while calls are open (gRPC's default), and the
        # server sends heartbeats on idle streams, so its ping policy holds.
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
        "grpc.primary_user_agent": f"convergio-sdk-python/{__version__}",
    }
    merged.update(options or ())
    return sorted(merged.items())


def _channel_args(options: ChannelOptions | None, connections: int) -> list[tuple[str, Any]]:
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    # Several connections only if each channel has a subchannel pool of its own.
    pool = {"grpc.use_local_subchannel_pool": 1} if connections > 1 else {}
    return channel_options([*pool.items(), *dict(options or ()).items()])


def _api_key(api_key: str | None) -> str | None:
    return api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None


def _credentials(secure: bool, root_certificates: bytes | None) -> Any:
    if not secure and root_certificates is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


def _health_status(response: wrappers_pb2.Int32Value) -> str:
    return _SERVING_STATUS.get(response.value, str(response.value))


class AsyncClient(AsyncServices):
    """Asynchronous client of a Convergio server.

        async with AsyncClient("127.0.0.1:50051", api_key="...") as client:
            conversation = await client.conversations.create_conversation(title="Q3")

    Args:
        target: host:port of the server.
        api_key: sent as `authorization: Bearer <key>`; defaults to the
            environment variable CONVERGIO_API_KEY.
        secure: use TLS (implied by `root_certificates`).
        root_certificates: PEM root certificates for TLS; None = system roots.
        timeout: default deadline of unary calls in seconds (None = none).
            Streams have no deadline unless a call gives one.
        retry: how idempotent calls are retried on UNAVAILABLE.
        options: extra gRPC channel options; they override the defaults.
        connections: how many connections to open to the server, each call
            taking the next in turn. One HTTP/2 connection carries every
            stream of a channel: a process that follows many conversations
            at once (more than about 50 streaming turns) delivers their
            tokens sooner over several. With 1 (the default) the connection
            is shared with the other clients of the process to the same
            address, as gRPC does; with more, each is the client's own.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        secure: bool = False,
        root_certificates: bytes | None = None,
        timeout: float | None = 30.0,
        retry: _runtime.RetryPolicy = DEFAULT_RETRY,
        options: ChannelOptions | None = None,
        connections: int = 1,
    ) -> None:
        self.target = target
        credentials = _credentials(secure, root_certificates)
        channel_args = _channel_args(options, connections)

        def open_channel() -> grpc.aio.Channel:
            if credentials is None:
                return grpc.aio.insecure_channel(target, options=channel_args)
            return grpc.aio.secure_channel(target, credentials, options=channel_args)

        self._invoker = _runtime.AsyncInvoker(
            open_channel,
            api_key=_api_key(api_key),
            timeout=timeout,
            retry=retry,
            connections=connections,
        )
        super().__init__(self._invoker)
        self.conversations: AsyncConversations = AsyncConversations(self._invoker)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying grpc.aio channel (opened on first use); with several
        connections, the first."""
        return self._invoker.channel

    async def health(
        self,
        service: str = "",
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a gRPC deadline
    ) -> str:
        """The server's health as grpc.health.v1 reports it: "SERVING",
        "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN". `service` is "" for the
        whole server or a full service name such as
        "convergio.conversation.v1.ConversationService"."""
        try:
            response = await self._invoker.unary(
                _HEALTH_CHECK, wrappers_pb2.StringValue(value=service), timeout=timeout
            )
        except errors.NotFound:  # how grpc.health.v1 says it does not know the service
            return "SERVICE_UNKNOWN"
        return _health_status(response)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._invoker.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.target!r})"


class Client(Services):
    """Synchronous client of a Convergio server; the same as `AsyncClient`
    with blocking calls and iterators.

        with Client("127.0.0.1:50051", api_key="...") as client:
            conversation = client.conversations.create_conversation(title="Q3")
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        secure: bool = False,
        root_certificates: bytes | None = None,
        timeout: float | None = 30.0,
        retry: _runtime.RetryPolicy = DEFAULT_RETRY,
        options: ChannelOptions | None = None,
        connections: int = 1,
    ) -> None:
        self.target = target
        credentials = _credentials(secure, root_certificates)
        channel_args = _channel_args(options, connections)
        channels = [
            grpc.insecure_channel(target, options=channel_args)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=channel_args)
            for _ in range(connections)
        ]
        self._invoker = _runtime.Invoker(
            channels, api_key=_api_key(api_key), timeout=timeout, retry=retry
        )
        super().__init__(self._invoker)
        self.conversations: Conversations = Conversations(self._invoker)

    @property
    def channel(self) -> grpc.Channel:
        """The underlying grpc channel; with several connections, the first."""
        return self._invoker.channel

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health; see `AsyncClient.health`."""
        try:
            response = self._invoker.unary(
                _HEALTH_CHECK, wrappers_pb2.StringValue(value=service), timeout=timeout
            )
        except errors.NotFound:
            return "SERVICE_UNKNOWN"
        return _health_status(response)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._invoker.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"
