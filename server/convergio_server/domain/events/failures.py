"""The Error event of a failure: the status code, reason and retry advice a client gets for
a failed model call or a refusal, the same wherever it is reported (the turn's stream, the
cost ledger)."""

from __future__ import annotations

from convergio_server.domain.costs.breaker import PROVIDER_PREFIX
from convergio_server.domain.errors import STORE_RETRY_SECONDS, DomainError, domain_cause
from convergio_server.domain.events.model import ErrorOccurred
from convergio_server.domain.models.errors import ModelError

_MODEL_ERROR_CODES = {
    "timeout": (4, "DEADLINE_EXCEEDED"),
    "rate_limited": (14, "UNAVAILABLE"),
    "unavailable": (14, "UNAVAILABLE"),
    "server_error": (14, "UNAVAILABLE"),
    "invalid_response": (14, "UNAVAILABLE"),
    "authentication": (9, "FAILED_PRECONDITION"),
    "permission_denied": (9, "FAILED_PRECONDITION"),
    "not_found": (9, "FAILED_PRECONDITION"),
    "bad_request": (9, "FAILED_PRECONDITION"),
    "context_length": (3, "INVALID_ARGUMENT"),
    "configuration": (9, "FAILED_PRECONDITION"),
}
_DOMAIN_CODES = {
    "INVALID_ARGUMENT": 3,
    "PAYLOAD_TOO_LARGE": 3,
    "INPUT_BLOCKED": 3,
    "NOT_FOUND": 5,
    "FAILED_PRECONDITION": 9,
    "QUOTA_EXCEEDED": 8,
    "BUDGET_EXHAUSTED": 8,
    "RATE_LIMITED": 8,
    "UNAVAILABLE": 14,
    "CIRCUIT_OPEN": 14,
}


_OUTAGE_REASONS = frozenset({"UNAVAILABLE", "CIRCUIT_OPEN"})


def outage_failure(exc: BaseException) -> bool:
    """Whether a turn ended by `exc` failed because a store it needs (PostgreSQL, Redis) was
    unreachable, or a breaker refused it: nothing the tenant's turns did, so nothing for the
    tenant's breaker to count (a short outage must not shut the tenant out after it)."""
    if isinstance(exc, OSError):
        return True
    cause = domain_cause(exc)
    return (
        cause is not None and not isinstance(cause, ModelError) and cause.reason in _OUTAGE_REASONS
    )


def endpoint_failure(exc: BaseException) -> bool:
    """Whether a turn ended by `exc` failed because of its model endpoint: a model call that
    failed, or a call refused by the endpoint's open breaker. Such failures count on the
    endpoint's own breaker, not on the tenant's (one caller's broken endpoint must not shut
    the whole tenant out)."""
    cause = domain_cause(exc)
    if isinstance(cause, ModelError):
        return True
    return (
        cause is not None
        and cause.reason == "CIRCUIT_OPEN"
        and cause.metadata.get("breaker", "").startswith(PROVIDER_PREFIX)
    )


def error_event(exc: BaseException) -> ErrorOccurred:
    """The Error event of a failure that ended a turn."""
    cause = domain_cause(exc)
    if isinstance(cause, ModelError):
        code, reason = _MODEL_ERROR_CODES.get(cause.kind, (14, "UNAVAILABLE"))
        return ErrorOccurred(
            code=code,
            reason=reason,
            message=f"the model call failed: {cause.message[:500]}",
            retryable=cause.retryable,
            retry_delay=1.0 if cause.retryable else 0.0,
            metadata=dict(cause.metadata),
        )
    if isinstance(cause, DomainError):
        retry = getattr(cause, "retry_after_seconds", None)
        code = _DOMAIN_CODES.get(cause.reason, 13)
        return ErrorOccurred(
            code=code,
            reason=cause.reason if cause.reason in _DOMAIN_CODES else "INTERNAL",
            message=cause.message[:500],
            retryable=code == 14 or cause.reason == "RATE_LIMITED",
            retry_delay=float(retry or 0.0),
            metadata=dict(cause.metadata),
        )
    if isinstance(exc, OSError):
        # A store's socket or host (its text names internal paths and addresses: not said).
        return ErrorOccurred(
            code=14,
            reason="UNAVAILABLE",
            message="the turn could not reach a store it needs (PostgreSQL or Redis); "
            "send the message again",
            retryable=True,
            retry_delay=STORE_RETRY_SECONDS,
        )
    text = str(exc) or type(exc).__name__
    return ErrorOccurred(
        code=14,
        reason="UNAVAILABLE",
        message=f"the model call failed: {text[:500]}",
        retryable=True,
        retry_delay=1.0,
    )
