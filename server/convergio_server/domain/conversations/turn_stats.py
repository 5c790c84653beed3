"""What the turns of a process did, for the metrics: how they ended and how long they
took, how soon their first token came, the agents' messages, the tokens and cost of their
model calls, and their tool results."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from convergio_server.domain.events.model import Usage
from convergio_server.domain.histogram import Histogram

# Seconds. A first token within milliseconds (offline) to seconds (a remote model); a turn
# within a second to an hour (its longest timeout).
FIRST_TOKEN_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class TurnStats:
    def __init__(self) -> None:
        self.ended: Counter[str] = Counter()  # by stop reason
        self.durations = Histogram(DURATION_BOUNDS)
        self.first_tokens = Histogram(FIRST_TOKEN_BOUNDS)
        self.messages: Counter[str] = Counter()  # completed, by agent
        self.tokens: Counter[str] = Counter()  # prompt, completion
        self.model_calls = 0
        self.cost_usd = Decimal(0)
        self.tool_results: Counter[tuple[str, str]] = Counter()  # (tool, "ok" or error kind)

    def turn_ended(
        self,
        stop_reason: str,
        seconds: float | None,
        usage: Usage | None = None,
        cost_usd: Decimal = Decimal(0),
    ) -> None:
        """A turn ended by this process (`seconds` None: it did not run here, e.g. a queued
        turn cancelled, or the turn of a process that died)."""
        self.ended[stop_reason] += 1
        if seconds is not None:
            self.durations.observe(seconds)
        if usage is not None:
            self.tokens["prompt"] += usage.prompt_tokens
            self.tokens["completion"] += usage.completion_tokens
            self.model_calls += usage.model_calls
        self.cost_usd += cost_usd

    def first_token(self, seconds: float) -> None:
        self.first_tokens.observe(seconds)

    def message(self, agent: str) -> None:
        self.messages[agent] += 1

    def tool_result(self, tool: str, error_kind: str | None) -> None:
        self.tool_results[(tool, error_kind or "ok")] += 1
