"""The price table: USD per million tokens for each model, and the cost of a call.

cost = ((prompt - cached) x input + cached x cached_input + completion x output) / 1,000,000,
computed with Decimal only.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from convergio_server.domain.costs.money import parse_usd

MILLION = Decimal(1_000_000)
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal


@dataclass(frozen=True)
class PriceQuote:
    """The prices applied to a call and where they came from ("table" or "fallback")."""

    price: ModelPrice
    source: str


def call_cost(
    price: ModelPrice, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> Decimal:
    """The exact cost of a call in USD. Cached tokens are part of prompt_tokens."""
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    uncached = max(prompt_tokens, 0) - cached
    total = (
        uncached * price.input
        + cached * price.cached_input
        + max(completion_tokens, 0) * price.output
    )
    return total / MILLION


def _parse_price(name: str, raw: Any, where: str) -> ModelPrice:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: models.{name!r} must be a table with input and output")
    values: dict[str, Decimal] = {}
    for key in ("input", "output", "cached_input"):
        value = raw.get(key, raw.get("input") if key == "cached_input" else None)
        if value is None:
            raise ValueError(f"{where}: models.{name!r} lacks {key!r}")
        # Strings keep prices exact; a TOML float would already have lost digits.
        if not isinstance(value, str | int):
            raise ValueError(f'{where}: models.{name!r}.{key} must be a string such as "0.15"')
        parsed = parse_usd(str(value))
        if parsed is None or parsed < 0:
            raise ValueError(f"{where}: models.{name!r}.{key} must be a decimal >= 0")
        values[key] = parsed
    return ModelPrice(values["input"], values["output"], values["cached_input"])


def load_price_file(text: str, where: str) -> dict[str, ModelPrice]:
    data = tomllib.loads(text)
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ValueError(f"{where}: [models] must be a table")
    return {name: _parse_price(name, raw, where) for name, raw in models.items()}


class PriceTable:
    """Prices by model name (or "provider/model"), with a fallback for unknown models."""

    def __init__(self, prices: dict[str, ModelPrice], fallback: ModelPrice) -> None:
        self._prices = dict(prices)
        self.fallback = fallback

    @classmethod
    def load(
        cls, override: Path | None, fallback_input: Decimal, fallback_output: Decimal
    ) -> PriceTable:
        shipped = (DATA_DIR / "prices.toml").read_text()
        prices = load_price_file(shipped, "prices.toml")
        if override is not None:
            prices.update(load_price_file(override.read_text(), str(override)))
        return cls(prices, ModelPrice(fallback_input, fallback_output, fallback_input))

    def quote(self, provider: str, model: str) -> PriceQuote:
        name = model or "offline"
        price = self._prices.get(f"{provider}/{name}") or self._prices.get(name)
        if price is None:
            return PriceQuote(self.fallback, "fallback")
        return PriceQuote(price, "table")

    def models(self) -> dict[str, ModelPrice]:
        return dict(self._prices)
