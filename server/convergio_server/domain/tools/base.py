"""The base of every tool an agent can call.

A tool declares a pydantic model of its arguments (validated before it runs, so a bad call
never reaches the tool), a timeout, how often a transient failure is retried, and a risk
level that approval rules can use. `invoke` never raises for a failing tool: it returns a
`ToolOutcome` marked as an error with a kind from `ToolErrorKind`, so a turn goes on and
the model sees what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from autogen_core import CancellationToken
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from convergio_server.domain import tracing
from convergio_server.domain.auth import Principal
from convergio_server.domain.errors import DomainError, Unavailable

log = logging.getLogger(__name__)

ArgsT = TypeVar("ArgsT", bound=BaseModel)


class ToolErrorKind(StrEnum):
    """Why a tool call failed."""

    INVALID_ARGUMENTS = "INVALID_ARGUMENTS"  # the arguments do not match the schema
    TIMEOUT = "TIMEOUT"  # it did not finish within its timeout
    TRANSIENT = "TRANSIENT"  # a dependency failed in a way that may pass (retried)
    PERMANENT = "PERMANENT"  # it cannot succeed with these arguments
    DENIED = "DENIED"  # not allowed for this caller or tenant
    UNKNOWN_TOOL = "UNKNOWN_TOOL"  # the agent asked for a tool it does not have
    BLOCKED = "BLOCKED"  # input screening withheld the result (instructions in it)


class RiskLevel(IntEnum):
    """How much harm a call could do; HIGH and CRITICAL are for approval rules."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class ToolError(Exception):
    """Raised by a tool to fail with a known kind. `TRANSIENT` failures are retried."""

    def __init__(self, kind: ToolErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.kind is ToolErrorKind.TRANSIENT


@dataclass(frozen=True)
class ToolContext:
    """Who calls a tool and where: every tool reads and writes only the caller's tenant.

    `pool` is the asyncpg pool (None where there is no database); `components` are the
    server's shared domain services (e.g. `components.get("costs")`).
    """

    tenant_id: str
    principal: Principal | None = None
    conversation_id: str = ""
    turn_id: str = ""
    pool: Any = None
    components: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one call: text for the model, or an error with its kind."""

    tool: str
    content: str
    is_error: bool = False
    error_kind: ToolErrorKind | None = None
    attempts: int = 1

    def for_model(self) -> str:
        if not self.is_error:
            return self.content
        kind = self.error_kind.value if self.error_kind else "ERROR"
        return f"error ({kind}): {self.content}"


def describe_validation_error(error: ValidationError) -> str:
    """`field: what is wrong` for each problem, in one line a model can act on."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ())) or "arguments"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(problems)


_JSON_TYPES: tuple[tuple[type[Any], str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
)


def parse_arguments(arguments: object) -> dict[str, Any]:
    """A call's arguments as a dict, from the JSON text a model sent (blank is `{}`, as for
    a tool without parameters) or from parsed values; ToolError(INVALID_ARGUMENTS) saying
    the arguments are not a JSON object, and why, otherwise."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"arguments are not a JSON object: not valid JSON ({exc})",
            ) from exc
    if isinstance(arguments, Mapping):
        return dict(arguments)
    got = "null" if arguments is None else type(arguments).__name__
    for python_type, json_type in _JSON_TYPES:
        if isinstance(arguments, python_type):
            got = json_type
            break
    raise ToolError(ToolErrorKind.INVALID_ARGUMENTS, f"arguments are not a JSON object: got {got}")


# Errors from lower layers that usually pass on their own.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    OSError,
    Unavailable,
)


class ConvergioTool(ABC, Generic[ArgsT]):
    """Subclass with `name`, `description`, `args_model` and `run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    args_model: ClassVar[type[BaseModel]]
    risk_level: ClassVar[RiskLevel] = RiskLevel.LOW
    timeout_seconds: ClassVar[float] = 10.0
    max_retries: ClassVar[int] = 2  # for TRANSIENT failures
    retry_backoff_seconds: ClassVar[float] = 0.05  # doubled after each attempt

    @abstractmethod
    async def run(self, args: ArgsT, ctx: ToolContext) -> str:
        """Do the work; return text for the model. Raise ToolError for known failures."""

    def parameters_schema(self) -> dict[str, Any]:
        return self.args_model.model_json_schema()

    def validate(self, arguments: Mapping[str, Any] | str) -> ArgsT:
        """The typed arguments, or ToolError(INVALID_ARGUMENTS) naming each bad field."""
        values = parse_arguments(arguments)
        try:
            return self.args_model.model_validate(values)  # type: ignore[return-value]
        except ValidationError as exc:
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS, describe_validation_error(exc)
            ) from exc

    async def invoke(
        self,
        arguments: Mapping[str, Any] | str,
        ctx: ToolContext,
        cancellation_token: CancellationToken | None = None,
    ) -> ToolOutcome:
        """Validate, run with a timeout, retry transient failures with backoff. Returns an
        error outcome instead of raising; cancellation (CancelledError) propagates. Traced
        as a span of its turn when tracing is on."""
        if not tracing.enabled():
            return await self._invoke(arguments, ctx, cancellation_token)
        with tracing.tracer().start_as_current_span(
            f"execute_tool {self.name}",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": self.name,
                "convergio.risk_level": self.risk_level.name,
            },
        ) as span:
            outcome = await self._invoke(arguments, ctx, cancellation_token)
            span.set_attribute("convergio.attempts", outcome.attempts)
            if outcome.is_error:
                kind = outcome.error_kind.value if outcome.error_kind else "ERROR"
                span.set_attribute("convergio.error_kind", kind)
                span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.content[:300]))
            return outcome

    async def _invoke(
        self,
        arguments: Mapping[str, Any] | str,
        ctx: ToolContext,
        cancellation_token: CancellationToken | None,
    ) -> ToolOutcome:
        try:
            args = self.validate(arguments)
        except ToolError as exc:
            return ToolOutcome(self.name, exc.message, True, exc.kind, attempts=0)
        attempts = 0
        delay = self.retry_backoff_seconds
        while True:
            attempts += 1
            error: ToolError
            try:
                task = asyncio.ensure_future(self.run(args, ctx))
                if cancellation_token is not None:
                    cancellation_token.link_future(task)
                content = await asyncio.wait_for(task, self.timeout_seconds)
                return ToolOutcome(self.name, content, attempts=attempts)
            except TimeoutError:
                # wait_for's own timeout; a TimeoutError raised inside run() is the same
                # kind of failure for the caller.
                error = ToolError(
                    ToolErrorKind.TIMEOUT,
                    f"{self.name} did not finish within {self.timeout_seconds:g} seconds",
                )
            except ToolError as exc:
                error = exc
            except _TRANSIENT_ERRORS as exc:
                error = ToolError(ToolErrorKind.TRANSIENT, f"{type(exc).__name__}: {exc}")
            except asyncio.CancelledError:
                raise
            except DomainError as exc:
                # A domain refusal (not found, permission, bad input) will not pass by retrying.
                kind = (
                    ToolErrorKind.DENIED
                    if exc.reason in ("PERMISSION_DENIED", "UNAUTHENTICATED")
                    else ToolErrorKind.INVALID_ARGUMENTS
                    if exc.reason == "INVALID_ARGUMENT"
                    else ToolErrorKind.PERMANENT
                )
                error = ToolError(kind, exc.message)
            except Exception as exc:
                log.warning("tool %s failed", self.name, exc_info=True)
                error = ToolError(ToolErrorKind.PERMANENT, f"{type(exc).__name__}: {exc}")
            if error.retryable and attempts <= self.max_retries:
                await asyncio.sleep(delay)
                delay *= 2
                continue
            return ToolOutcome(self.name, error.message, True, error.kind, attempts=attempts)
