"""The financial calculator: exact results, and clear errors for impossible inputs."""

from __future__ import annotations

from typing import Any

import pytest
from convergio_server.domain.tools.base import ToolContext, ToolErrorKind
from convergio_server.domain.tools.builtin import FinancialCalculatorTool

CTX = ToolContext(tenant_id="t1")


async def calc(**arguments: Any) -> str:
    outcome = await FinancialCalculatorTool().invoke(arguments, CTX)
    assert not outcome.is_error, outcome.content
    return outcome.content


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"operation": "npv", "rate": 0.08, "values": [-1000, 300, 400, 500]}, "NPV = 17.63 "),
        ({"operation": "npv", "rate": 0.1, "values": [-100, 110]}, "NPV = 0.00 "),
        ({"operation": "irr", "values": [-5000, 1500, 2000, 2500]}, "IRR = 8.90%"),
        ({"operation": "irr", "values": [-100, 110]}, "IRR = 10.00%"),
        ({"operation": "roi", "values": [1000, 1500]}, "ROI = 50.00%"),
        ({"operation": "cagr", "values": [100, 200, 5]}, "CAGR = 14.87%"),
        ({"operation": "break_even", "values": [10000, 50, 30]}, "Break-even = 500.00 units"),
        ({"operation": "loan_payment", "rate": 0.05, "values": [200000, 30]}, "= 1,073.64 "),
        ({"operation": "loan_payment", "values": [1200, 1]}, "= 100.00 "),
        ({"operation": "future_value", "rate": 0.07, "values": [10000, 10]}, "= 19,671.51 "),
        (
            {
                "operation": "future_value",
                "rate": 0.04,
                "values": [5000, 8],
                "periods_per_year": 12,
            },
            "= 6,881.98 after 8 years",
        ),
        (
            {
                "operation": "future_value",
                "rate": 0.06,
                "values": [0, 20],
                "periods_per_year": 12,
                "contribution": 500,
            },
            "= 231,020.45 ",
        ),
        (
            {"operation": "future_value", "rate": 0, "values": [1000, 2], "contribution": 100},
            "= 1,200.00 ",
        ),
        ({"operation": "future_value", "rate": 0.05, "values": [1000, 2.5]}, "= 1,129.73 "),
        ({"operation": "expression", "expression": "(1200-950)/950*100"}, "= 26.3157894737"),
        ({"operation": "expression", "expression": "0.1 + 0.2"}, "= 0.3"),
        ({"operation": "expression", "expression": "2^10 - 24 % 5"}, "= 1020"),
    ],
)
async def test_results(arguments: dict[str, Any], expected: str) -> None:
    assert expected in await calc(**arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"operation": "expression", "expression": "1/0"}, "division by zero"),
        ({"operation": "expression", "expression": "__import__('os').system('x')"}, "only numbers"),
        ({"operation": "expression", "expression": "9**999999"}, "exponents are limited"),
        ({"operation": "expression"}, "needs `expression`"),
        ({"operation": "npv", "values": [-1, 2]}, "needs `rate`"),
        ({"operation": "cagr", "values": [100, 200]}, "needs at least 3 values"),
        ({"operation": "irr", "values": [100, 200]}, "one negative and one positive"),
        ({"operation": "break_even", "values": [100, 5, 6]}, "price must exceed"),
        ({"operation": "roi", "values": [0, 5]}, "non-zero investment"),
        ({"operation": "median", "values": [1]}, "operation:"),
        ({"operation": "npv", "rate": -2, "values": [1]}, "rate:"),
        ({"operation": "future_value", "values": [10000, 10]}, "needs `rate`"),
        ({"operation": "future_value", "rate": 0.07, "values": [10000]}, "needs at least 2"),
        ({"operation": "future_value", "rate": 0.07, "values": [-1, 10]}, "cannot be negative"),
        ({"operation": "future_value", "rate": 0.07, "values": [100, 0]}, "years must be"),
        ({"operation": "future_value", "rate": 0.07, "values": [100, 1001]}, "at most 1000"),
        ({"operation": "future_value", "rate": 10, "values": [1e20, 1000]}, "more than 24 digits"),
        (
            {"operation": "future_value", "rate": 0.07, "values": [100, 1], "periods_per_year": 0},
            "periods_per_year:",
        ),
        (
            {
                "operation": "future_value",
                "rate": 0.07,
                "values": [100, 1],
                "periods_per_year": 1.5,
            },
            "periods_per_year:",
        ),
        (
            {"operation": "future_value", "rate": 0.07, "values": [100, 1], "contribution": -5},
            "contribution:",
        ),
        (
            {"operation": "future_value", "rate": 0.07, "values": [100, 2.5], "contribution": 5},
            "whole number of periods",
        ),
        (
            {"operation": "npv", "rate": 0.08, "values": [-1, 2], "periods_per_year": 12},
            "apply only to operation future_value",
        ),
    ],
)
async def test_errors_are_invalid_arguments(arguments: dict[str, Any], message: str) -> None:
    outcome = await FinancialCalculatorTool().invoke(arguments, CTX)
    assert outcome.is_error and outcome.error_kind is ToolErrorKind.INVALID_ARGUMENTS
    assert message in outcome.content


def test_the_schema_describes_future_value() -> None:
    schema = FinancialCalculatorTool().parameters_schema()
    properties = schema["properties"]
    assert "future_value" in properties["operation"]["enum"]
    assert "future_value" in properties["operation"]["description"]
    assert {"periods_per_year", "contribution"} <= set(properties)
    assert schema["required"] == ["operation"]  # both optional: yearly, nothing added
