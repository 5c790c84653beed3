"""A tool with the financial calculator's name, description and arguments, for tests of how
a model chooses and calls tools (it does nothing itself)."""

from __future__ import annotations

from typing import Literal

from autogen_core.tools import FunctionTool


async def calculator(
    operation: Literal["npv", "irr", "roi", "expression"],
    values: list[float],
    rate: float | None = None,
    expression: str | None = None,
) -> str:
    return "ok"


CALCULATOR = FunctionTool(
    calculator, name="financial_calculator", description="Financial calculator for cash flows."
)
