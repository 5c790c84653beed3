"""Exact money: Decimal amounts in USD, and the integer nano-dollars Redis counts in.

Redis scripts do arithmetic on doubles, which are exact for integers up to 2**53; in
nano-dollars that is about nine million dollars, well above the largest budget (one million).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
MAX_LIMIT_USD = Decimal("1000000")
_SIX = Decimal("0.000001")
# An amount as people and scripts write it: ASCII digits, at most nine decimals (a
# nano-dollar, what the counters count). No exponent, sign, separators or other digits.
_AMOUNT = re.compile(r"[0-9]{1,16}(\.[0-9]{1,9})?\Z")


def to_nanos(amount: Decimal) -> int:
    """Whole nano-dollars, rounded up so that counters never under-count spending."""
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


def fmt(amount: Decimal) -> str:
    """A USD amount as the API shows it: six decimals, or more when needed to stay exact."""
    six = amount.quantize(_SIX)
    if six == amount:
        return format(six, "f")
    return format(amount.normalize(), "f")


def parse_usd(text: str) -> Decimal | None:
    """A decimal string as Decimal; None if it is not a finite decimal number."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def parse_amount(text: str) -> Decimal | None:
    """An amount given by a user (a limit): plain ASCII decimal, at most nine decimals;
    None otherwise."""
    text = text.strip()
    return Decimal(text) if _AMOUNT.match(text) else None
