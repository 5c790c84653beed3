"""Domain errors. The API layer maps each class to a gRPC status code with
`google.rpc.ErrorInfo` (and field violations or quota failures where they apply)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One wrong input field: which field (dotted path) and what to fix."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota: which subject (for example `budget:tenant:daily`) and why."""

    subject: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every error a user can act on. `reason` is a stable UPPER_SNAKE code."""

    message: str
    reason: str = "INTERNAL"
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(DomainError):
    """The request was wrong; `violations` say which fields and how to fix them."""

    reason: str = "INVALID_ARGUMENT"
    violations: list[FieldViolation] = field(default_factory=list)

    @classmethod
    def for_field(cls, name: str, description: str) -> InvalidArgument:
        return cls(f"{name}: {description}", violations=[FieldViolation(name, description)])


@dataclass
class NotFound(DomainError):
    """The named resource does not exist (or belongs to another tenant)."""

    reason: str = "NOT_FOUND"


@dataclass
class AlreadyExists(DomainError):
    """A resource with that identity already exists."""

    reason: str = "ALREADY_EXISTS"


@dataclass
class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the call (for example, a turn is running)."""

    reason: str = "FAILED_PRECONDITION"


@dataclass
class Aborted(DomainError):
    """A concurrent change won (for example, an optimistic-concurrency version mismatch)."""

    reason: str = "ABORTED"


@dataclass
class QuotaExceeded(DomainError):
    """A budget or rate limit is exhausted; `retry_after_seconds` says when to try again."""

    reason: str = "QUOTA_EXCEEDED"
    violations: list[QuotaViolation] = field(default_factory=list)
    retry_after_seconds: float | None = None


@dataclass
class Unauthenticated(DomainError):
    """No credentials, or credentials that do not identify a principal."""

    reason: str = "UNAUTHENTICATED"


@dataclass
class PermissionDenied(DomainError):
    """The principal is known but lacks the role the call needs."""

    reason: str = "PERMISSION_DENIED"


@dataclass
class Unavailable(DomainError):
    """A dependency (PostgreSQL, Redis, a model endpoint) cannot be reached right now, or a
    circuit breaker is open; `retry_after_seconds` says when to try again, if known."""

    reason: str = "UNAVAILABLE"
    retry_after_seconds: float | None = None


@dataclass
class NotImplementedYet(DomainError):
    """A capability of the API that this release does not provide."""

    reason: str = "NOT_IMPLEMENTED"


@dataclass
class PayloadTooLarge(DomainError):
    """An input exceeds a size limit."""

    reason: str = "PAYLOAD_TOO_LARGE"


def store_unavailable(message: str, store: str) -> Unavailable:
    """A store (`store`: "postgresql" or "redis") cannot be reached: worth a retry in a
    moment, which the client is told."""
    return Unavailable(
        message, metadata={"dependency": store}, retry_after_seconds=STORE_RETRY_SECONDS
    )


# What a client is told to wait before retrying a call a store outage refused.
STORE_RETRY_SECONDS = 1.0


def server_stopping() -> Unavailable:
    """What a stream that runs nothing here ends with when the server begins to stop: its
    client goes on with another server (the SDK re-attaches by itself)."""
    return Unavailable(
        "this server is stopping; continue on another one (the SDK re-attaches by itself)",
        reason="SERVER_STOPPING",
        retry_after_seconds=0.5,
    )


def domain_cause(error: BaseException | None) -> DomainError | None:
    """The DomainError behind `error`, if any (AutoGen may wrap what a client raised)."""
    cause = error
    while cause is not None and not isinstance(cause, DomainError):
        cause = cause.__cause__
    return cause
