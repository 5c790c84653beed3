"""Financial arithmetic in Decimal: NPV, IRR, ROI, CAGR, break-even, loan payment, future
value with compound interest, and a safe evaluator for plain arithmetic expressions
(numbers, + - * / ** %, parentheses; no names, calls or attributes)."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext

CENT = Decimal("0.01")
MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 100
MAX_YEARS = 1000
# Results are reported to the cent; more digits than this do not fit the precision.
MAX_DIGITS = 24


class CalculationError(ValueError):
    """The inputs cannot give a result (division by zero, no IRR, bad expression)."""


def _d(value: float | int | str | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def npv(rate: Decimal, cash_flows: Sequence[Decimal]) -> Decimal:
    """Net present value; the first cash flow is at t=0 (not discounted)."""
    if rate <= -1:
        raise CalculationError("rate must be greater than -100%")
    total = Decimal(0)
    factor = Decimal(1)
    for flow in cash_flows:
        total += flow / factor
        factor *= 1 + rate
    return total


def irr(cash_flows: Sequence[Decimal]) -> Decimal:
    """Internal rate of return by bisection on NPV (needs a sign change in the flows)."""
    if not any(f < 0 for f in cash_flows) or not any(f > 0 for f in cash_flows):
        raise CalculationError("IRR needs at least one negative and one positive cash flow")
    low, high = Decimal("-0.9999"), Decimal("10")
    npv_low = npv(low, cash_flows)
    npv_high = npv(high, cash_flows)
    if (npv_low > 0) == (npv_high > 0):
        raise CalculationError("these cash flows have no IRR between -99.99% and 1000%")
    for _ in range(200):
        middle = (low + high) / 2
        value = npv(middle, cash_flows)
        if abs(value) < Decimal("1e-9") or high - low < Decimal("1e-12"):
            return middle
        if (value > 0) == (npv_low > 0):
            low, npv_low = middle, value
        else:
            high = middle
    return (low + high) / 2


def roi(investment: Decimal, final_value: Decimal) -> Decimal:
    """Return on investment as a fraction: (final - investment) / investment."""
    if investment == 0:
        raise CalculationError("ROI needs a non-zero investment")
    return (final_value - investment) / investment


def cagr(start: Decimal, end: Decimal, years: Decimal) -> Decimal:
    """Compound annual growth rate as a fraction."""
    if start <= 0 or end <= 0 or years <= 0:
        raise CalculationError("CAGR needs positive start and end values and years")
    return Decimal(float(end / start) ** (1 / float(years)) - 1)


def break_even_units(fixed_costs: Decimal, price: Decimal, variable_cost: Decimal) -> Decimal:
    """Units to sell before revenue covers fixed plus variable costs."""
    margin = price - variable_cost
    if margin <= 0:
        raise CalculationError("price must exceed the variable cost per unit to break even")
    return fixed_costs / margin


def loan_payment(principal: Decimal, annual_rate: Decimal, years: Decimal) -> Decimal:
    """Monthly payment of an amortising loan."""
    months = int(years * 12)
    if months <= 0:
        raise CalculationError("the loan term must be at least one month")
    monthly = annual_rate / 12
    if monthly == 0:
        return principal / months
    factor = (1 + monthly) ** months
    return principal * monthly * factor / (factor - 1)


def future_value(
    principal: Decimal,
    annual_rate: Decimal,
    years: Decimal,
    periods_per_year: int = 1,
    contribution: Decimal = Decimal(0),
) -> Decimal:
    """What `principal` grows to in `years` at `annual_rate` compounded `periods_per_year`
    times a year, with `contribution` added at the end of every period."""
    if principal < 0 or contribution < 0:
        raise CalculationError("the principal and the contribution cannot be negative")
    if years <= 0 or years > MAX_YEARS:
        raise CalculationError(f"years must be more than 0 and at most {MAX_YEARS}")
    if periods_per_year < 1:
        raise CalculationError("periods_per_year must be at least 1")
    if annual_rate <= -1:
        raise CalculationError("rate must be greater than -100%")
    periods = years * periods_per_year
    # A fractional period compounds the principal fine, but a contribution at its end
    # would be an invention.
    if contribution and periods != periods.to_integral_value():
        raise CalculationError(
            "with a contribution, years times periods_per_year must be a whole number of periods"
        )
    with localcontext() as context:
        context.prec = 34
        rate = annual_rate / periods_per_year
        try:
            growth = (1 + rate) ** periods
        except (InvalidOperation, Overflow) as exc:
            raise CalculationError("the future value is too large to compute") from exc
        saved = contribution * periods if rate == 0 else contribution * (growth - 1) / rate
        value = principal * growth + saved
    if value.adjusted() >= MAX_DIGITS:
        raise CalculationError(f"the future value has more than {MAX_DIGITS} digits")
    return value


_BINARY: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
}


def evaluate(expression: str) -> Decimal:
    """The value of an arithmetic expression, in Decimal. `^` means power."""
    text = expression.replace("^", "**").replace(",", "")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculationError(f"not an arithmetic expression: {expression!r}") from exc
    with localcontext() as context:
        context.prec = 34
        try:
            return _eval(tree.body)
        except (DivisionByZero, ZeroDivisionError) as exc:
            raise CalculationError("division by zero") from exc
        except (InvalidOperation, OverflowError) as exc:
            raise CalculationError(f"cannot evaluate {expression!r}") from exc


def _eval(node: ast.expr) -> Decimal:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise CalculationError("booleans are not numbers here")
        return _d(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise CalculationError(f"exponents are limited to {MAX_EXPONENT}")
            return left**right
        operation = _BINARY.get(type(node.op))
        if operation is not None:
            return operation(left, right)
    raise CalculationError(
        "only numbers, + - * / // % ** and parentheses are allowed in an expression"
    )


def plain(value: Decimal) -> str:
    """At most ten decimals, no trailing zeros, no exponent."""
    rounded = value.quantize(Decimal("1e-10")) if abs(value) < Decimal("1e20") else value
    text = f"{rounded:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: Decimal) -> str:
    return f"{value.quantize(CENT):,}"


def percent(value: Decimal) -> str:
    return f"{(value * 100).quantize(CENT)}%"
