"""Prices: exact Decimal math, the shipped table, fallback prices, deployment overrides."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from convergio_server.domain.costs.money import fmt, to_nanos
from convergio_server.domain.costs.prices import ModelPrice, PriceTable, call_cost

FALLBACK_IN, FALLBACK_OUT = Decimal("1.00"), Decimal("2.00")


def table(override: Path | None = None) -> PriceTable:
    return PriceTable.load(override, FALLBACK_IN, FALLBACK_OUT)


def test_cost_is_exact_decimal_per_million() -> None:
    price = table().quote("openai", "gpt-4o-mini").price
    assert price == ModelPrice(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
    # 1234 prompt (200 cached), 567 completion:
    # (1034 x 0.15 + 200 x 0.075 + 567 x 0.60) / 1e6 = (155.1 + 15 + 340.2) / 1e6
    cost = call_cost(price, 1234, 567, 200)
    assert cost == Decimal("0.0005103")
    assert isinstance(cost, Decimal)
    # A float sum would give 0.0005103000000000001 or similar; ten thousand calls stay exact.
    assert sum((cost for _ in range(10_000)), Decimal(0)) == Decimal("5.103")


def test_original_prices_converted_to_per_million() -> None:
    prices = table()
    # The original listed USD per 1K tokens; the table is per million (x 1000).
    assert prices.quote("openai", "gpt-4-turbo").price.input == Decimal("10.00")
    assert prices.quote("openai", "gpt-4-turbo").price.output == Decimal("30.00")
    assert prices.quote("", "claude-3-opus").price.output == Decimal("75.00")
    assert prices.quote("", "claude-3-haiku").price.input == Decimal("0.25")


def test_offline_model_is_free() -> None:
    quote = table().quote("offline", "offline")
    assert quote.source == "table"
    assert call_cost(quote.price, 10_000, 10_000) == 0
    assert table().quote("offline", "").source == "table"  # empty model = offline


def test_unknown_model_uses_fallback_and_says_so() -> None:
    quote = table().quote("openai", "my-finetune-7b")
    assert quote.source == "fallback"
    assert quote.price == ModelPrice(FALLBACK_IN, FALLBACK_OUT, FALLBACK_IN)
    assert call_cost(quote.price, 1000, 1000) == Decimal("0.003")


def test_cached_tokens_cannot_exceed_prompt_tokens() -> None:
    price = ModelPrice(Decimal("1"), Decimal("2"), Decimal("0.5"))
    assert call_cost(price, 100, 0, 500) == call_cost(price, 100, 0, 100) == Decimal("0.00005")


def test_deployment_override_changes_and_adds_models(tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text(
        '[models."gpt-4o-mini"]\ninput = "0.20"\noutput = "0.80"\n'
        '[models."openai/llama-3-70b"]\ninput = "0.59"\noutput = "0.79"\ncached_input = "0.1"\n'
    )
    prices = table(override)
    mini = prices.quote("openai", "gpt-4o-mini")
    assert mini.price.input == Decimal("0.20") and mini.source == "table"
    assert mini.price.cached_input == Decimal("0.20")  # cached defaults to the input price
    assert prices.quote("openai", "llama-3-70b").price.output == Decimal("0.79")
    # The provider-qualified price applies to that provider only.
    assert prices.quote("other", "llama-3-70b").source == "fallback"


@pytest.mark.parametrize(
    "body",
    [
        '[models."m"]\ninput = 0.1\noutput = "1"\n',  # a float loses digits: refused
        '[models."m"]\ninput = "-1"\noutput = "1"\n',
        '[models."m"]\noutput = "1"\n',
        '[models."m"]\ninput = "abc"\noutput = "1"\n',
    ],
)
def test_bad_price_files_are_refused_with_the_model_named(tmp_path: Path, body: str) -> None:
    override = tmp_path / "prices.toml"
    override.write_text(body)
    with pytest.raises(ValueError, match="'m'"):
        table(override)


def test_amount_formatting_and_counter_units() -> None:
    assert fmt(Decimal("12.3456")) == "12.345600"
    assert fmt(Decimal("0.0005103")) == "0.0005103"  # never rounded away
    assert fmt(Decimal(0)) == "0.000000"
    assert to_nanos(Decimal("0.0000000001")) == 1  # counters round up, never down
    assert to_nanos(Decimal("50")) == 50_000_000_000


def test_default_budgets_come_from_settings_and_bad_values_stop_the_server(
    tmp_path: Path,
) -> None:
    from convergio_server.api.servicers.cost import default_budgets
    from convergio_server.config import Settings

    defaults = default_budgets(Settings.model_validate({"data_dir": tmp_path}))
    assert [(b.scope, b.daily, b.per_turn, b.total) for b in defaults] == [
        ("TENANT", Decimal("50.00"), Decimal("0.50"), None),
        ("CONVERSATION", None, None, Decimal("5.00")),
    ]
    none = default_budgets(
        Settings.model_validate(
            {
                "data_dir": tmp_path,
                "cost_default_tenant_daily_usd": "",
                "cost_default_tenant_per_turn_usd": "",
                "cost_default_conversation_total_usd": "",
            }
        )
    )
    assert none == []
    with pytest.raises(ValueError, match="cost_default_tenant_daily_usd"):
        default_budgets(
            Settings.model_validate({"data_dir": tmp_path, "cost_default_tenant_daily_usd": "x"})
        )
