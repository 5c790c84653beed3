"""Tool results pass the input screening (`Guards.screen_tool_result`) before a model sees
them: a result that carries instructions is withheld (a failed call, kind BLOCKED) or marked,
secrets are redacted. What screening found is kept per call for the turn's events. The same
screening applies to knowledge-base documents put into agents' contexts (`team.py`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, ToolSchema
from pydantic import BaseModel

from convergio_server.domain.events.model import ScreeningFinding
from convergio_server.domain.guards import ScreenedResult
from convergio_server.domain.tools.base import ToolErrorKind, ToolOutcome
from convergio_server.domain.tools.registry import ToolCallFailed, cached_schema

Screen = Callable[[str], Awaitable[ScreenedResult]]


def findings_of(screened: ScreenedResult) -> list[ScreeningFinding]:
    """What screening found in a tool result or a document, as the events report it."""
    findings = []
    for rule in screened.rules:
        category = category_of(rule)
        if screened.blocked:
            detail = "withheld"
        elif category == "SECRET":
            detail = "redacted"
        else:
            detail = "marked as data, let through"
        findings.append(ScreeningFinding(category=category, rule=rule, detail=detail))
    return findings


def category_of(rule: str) -> str:
    head = rule.split(".", 1)[0].lower()
    if "secret" in head:
        return "SECRET"
    if "jailbreak" in head:
        return "JAILBREAK"
    return "PROMPT_INJECTION"


class ScreenedTool(BaseTool[BaseModel, Any]):
    """`inner`, with its results screened; each call first awaits `ready` when given (the
    turn's admission: see `admittance.py`)."""

    def __init__(
        self,
        inner: BaseTool[Any, Any],
        screen: Screen,
        attempts: dict[str, int] | None = None,
        screened: dict[str, ScreenedResult] | None = None,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(inner.args_type(), inner.return_type(), inner.name, inner.description)
        self.inner = inner
        self.screen = screen
        # Attempts per call id (retries of transient failures), for the ToolResult event.
        self.attempts = attempts if attempts is not None else {}
        # What screening found, per call id of a result that matched a rule.
        self.screened = screened if screened is not None else {}
        self.ready = ready

    def bind(
        self,
        inner: BaseTool[Any, Any],
        screen: Screen,
        attempts: dict[str, int],
        screened: dict[str, ScreenedResult],
        ready: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Serve another turn (a team kept between turns): its tool context, screening,
        records and admission."""
        self.inner, self.screen, self.attempts, self.screened, self.ready = (
            inner,
            screen,
            attempts,
            screened,
            ready,
        )

    @property
    def schema(self) -> ToolSchema:
        return cached_schema(self)

    async def run_json(
        self,
        args: Mapping[str, Any],
        cancellation_token: CancellationToken,
        call_id: str | None = None,
    ) -> Any:
        if self.ready is not None:
            await self.ready()
        try:
            result = await self.inner.run_json(args, cancellation_token, call_id=call_id)
        finally:
            outcomes = getattr(self.inner, "outcomes", None)
            if call_id and outcomes:
                self.attempts[call_id] = int(getattr(outcomes[-1], "attempts", 1))
        return await self._screened(self.inner.return_value_as_string(result), call_id)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        if self.ready is not None:
            await self.ready()
        result = await self.inner.run(args, cancellation_token)
        return await self._screened(self.inner.return_value_as_string(result), None)

    async def _screened(self, text: str, call_id: str | None) -> str:
        screened = await self.screen(text)
        if screened.rules and call_id:
            self.screened[call_id] = screened
        if screened.blocked:
            # A failed call to the model and to the client (kind BLOCKED): nothing of what
            # the tool returned goes on.
            withheld = ToolOutcome(
                self.name, screened.text.strip("[]"), True, ToolErrorKind.BLOCKED
            )
            raise ToolCallFailed(withheld)
        return screened.text

    def return_value_as_string(self, value: Any) -> str:
        return value if isinstance(value, str) else self.inner.return_value_as_string(value)
