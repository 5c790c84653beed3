"""Errors of model calls, in one shape the turn runner turns into an error event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from convergio_server.domain.errors import DomainError

ModelErrorKind = Literal[
    "timeout",  # no answer within the timeout (after retries)
    "rate_limited",  # 429 after retries
    "unavailable",  # the endpoint cannot be reached
    "server_error",  # 5xx after retries
    "authentication",  # 401: missing or wrong API key
    "permission_denied",  # 403
    "not_found",  # 404: unknown model or wrong base URL
    "bad_request",  # 400/422: the endpoint rejected the request
    "context_length",  # the prompt is longer than the model accepts
    "invalid_response",  # not the OpenAI protocol (garbage, truncated stream)
    "configuration",  # the selection cannot be served (unknown secret, bad URL)
]

_RETRYABLE = {"timeout", "rate_limited", "unavailable", "server_error"}


@dataclass
class ModelError(DomainError):
    """A model call failed. `kind` says why; `retryable` says whether trying again later
    may work (the client already retried with backoff). The message never contains the
    API key."""

    reason: str = "MODEL_ERROR"
    kind: ModelErrorKind = "invalid_response"
    status_code: int | None = None
    sent: bool = True  # False: the request never reached the endpoint (no connection)

    @property
    def retryable(self) -> bool:
        return self.kind in _RETRYABLE

    def __post_init__(self) -> None:
        super().__post_init__()
        self.metadata = {**self.metadata, "kind": self.kind, "retryable": str(self.retryable)}
