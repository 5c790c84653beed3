"""Convergio SDK: typed Python client of the Convergio gRPC API.

    from convergio import Client

    with Client("127.0.0.1:50051", api_key="...") as client:
        print(client.health())

The generated messages live in `convergio.<area>.v1` (e.g.
`convergio.conversation.v1.conversation_pb2`).
"""

from convergio._runtime import AsyncStream, RetryPolicy, Stream
from convergio.client import AsyncClient, Client, __version__
from convergio.conversations import AsyncEventStream, EventStream
from convergio.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ConvergioError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    from_rpc_error,
)

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncStream",
    "Cancelled",
    "Client",
    "ConvergioError",
    "DataLoss",
    "DeadlineExceeded",
    "EventStream",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "QuotaExceeded",
    "QuotaViolation",
    "RetryPolicy",
    "Stream",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "__version__",
    "from_rpc_error",
]
