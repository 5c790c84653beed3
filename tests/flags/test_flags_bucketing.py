"""Bucketing agrees with flagd's reference implementation (openfeature-flagd-core), and the
evaluation rules users depend on: sticky, monotonic, independent per flag, no randomness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cbor2
import pytest
from convergio_server.domain.flags import bucketing
from convergio_server.domain.flags.evaluation import VARIANT_SUFFIX, CompiledFlag
from convergio_server.domain.flags.model import (
    EvalContext,
    Flag,
    FlagSpec,
    Gradual,
    Reason,
    Strategy,
    Variant,
)
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
USERS = [f"user-{i}" for i in range(1500)] + ["", "ü-ñicode-✓", "x" * 300]
NAMED = [u for u in USERS if u]


def compiled(spec: FlagSpec) -> CompiledFlag:
    return CompiledFlag(Flag(spec, 1, EPOCH, EPOCH, "test"))


def reference(flag_key: str, fractions: list[list[object]]) -> FlagdCore:
    core = FlagdCore()
    variants = {str(name): str(name) for name, _ in fractions}
    core.set_flags(
        {
            "flags": {
                flag_key: {
                    "state": "ENABLED",
                    "variants": variants,
                    "defaultVariant": str(fractions[-1][0]),
                    "targeting": {"fractional": fractions},
                }
            }
        }
    )
    return core


@pytest.mark.parametrize("text", ["", "a", "x" * 23, "x" * 24, "y" * 255, "z" * 256, "é✓" * 40_000])
def test_hash_input_is_canonical_cbor_of_the_key_pair(text: str) -> None:
    ours = bucketing.key_prefix("rag_in_loop") + bucketing.cbor_text(text)
    assert ours == cbor2.dumps(["rag_in_loop", text], canonical=True)


@pytest.mark.parametrize("percentage", [0.0, 0.01, 2.5, 5.0, 25.0, 33.33, 50.0, 99.99, 100.0])
def test_percentage_buckets_match_flagd(percentage: float) -> None:
    key = "rag_in_loop"
    weight = bucketing.percent_weight(percentage)
    core = reference(key, [["on", weight], ["off", bucketing.PERCENT_TOTAL - weight]])
    ours = compiled(FlagSpec(key, strategy=Strategy.PERCENTAGE, percentage=percentage))
    for user in NAMED:
        flagd = core.resolve_string_value(key, "off", EvaluationContext(targeting_key=user))
        mine = ours.evaluate(EvalContext(user))
        assert mine.value == (flagd.value == "on"), (user, percentage)


@pytest.mark.parametrize("percentage", [5, 25, 50])
def test_whole_percentages_match_flagds_natural_weights(percentage: int) -> None:
    """flagd users write [["on", 5], ["off", 95]]; total 10,000 gives the same buckets."""
    key = "true_streaming"
    core = reference(key, [["on", percentage], ["off", 100 - percentage]])
    ours = compiled(FlagSpec(key, strategy=Strategy.PERCENTAGE, percentage=percentage))
    for user in NAMED:
        flagd = core.resolve_string_value(key, "off", EvaluationContext(targeting_key=user))
        assert ours.evaluate(EvalContext(user)).value == (flagd.value == "on"), user


def test_variants_match_flagd_over_their_own_key() -> None:
    key = "speaker_policy"
    variants = (Variant("simple", 50), Variant("scoring", 30), Variant("tiered", 20))
    core = reference(key + VARIANT_SUFFIX, [[v.name, v.weight] for v in variants])
    ours = compiled(FlagSpec(key, strategy=Strategy.ON, variants=variants))
    seen = set()
    for user in NAMED:
        flagd = core.resolve_string_value(
            key + VARIANT_SUFFIX, "none", EvaluationContext(targeting_key=user)
        )
        mine = ours.evaluate(EvalContext(user))
        assert mine.value and mine.variant == flagd.value, user
        seen.add(mine.variant)
    assert seen == {"simple", "scoring", "tiered"}


def test_raising_the_percentage_keeps_everyone_in() -> None:
    previous: set[str] = set()
    for percentage in (5.0, 25.0, 50.0, 100.0):
        flag = compiled(
            FlagSpec("rag_in_loop", strategy=Strategy.PERCENTAGE, percentage=percentage)
        )
        inside = {u for u in USERS if flag.evaluate(EvalContext(u)).value}
        assert previous <= inside
        previous = inside
    assert previous == set(USERS) - {""}


def test_buckets_are_independent_per_flag_and_close_to_the_percentage() -> None:
    users = [f"u{i}" for i in range(20_000)]
    a = compiled(FlagSpec("rag_in_loop", strategy=Strategy.PERCENTAGE, percentage=50.0))
    b = compiled(FlagSpec("true_streaming", strategy=Strategy.PERCENTAGE, percentage=50.0))
    in_a = {u for u in users if a.evaluate(EvalContext(u)).value}
    in_b = {u for u in users if b.evaluate(EvalContext(u)).value}
    assert 0.48 < len(in_a) / len(users) < 0.52
    # Independent flags share about a quarter of the callers, not all of them.
    assert 0.23 < len(in_a & in_b) / len(users) < 0.27


def test_no_targeting_key_is_never_in_a_rollout() -> None:
    for strategy in (Strategy.PERCENTAGE, Strategy.CANARY, Strategy.WHITELIST):
        flag = compiled(FlagSpec("f", strategy=strategy, percentage=100.0, users=("ann",)))
        for _ in range(50):
            result = flag.evaluate(EvalContext(""))
            assert not result.value and result.reason is Reason.DEFAULT


def test_gradual_ramps_linearly_and_matches_the_percentage_it_reached() -> None:
    start = EPOCH
    ramp = Gradual(start, start + timedelta(days=10), 50.0)
    flag = compiled(FlagSpec("ramp", strategy=Strategy.GRADUAL, gradual=ramp))
    assert flag.gradual_weight(start - timedelta(days=1)) == 0
    assert flag.gradual_weight(start + timedelta(days=5)) == 2500
    assert flag.gradual_weight(start + timedelta(days=30)) == 5000
    midway = start + timedelta(days=5)
    same = compiled(FlagSpec("ramp", strategy=Strategy.PERCENTAGE, percentage=25.0))
    for user in USERS[:300]:
        assert flag.evaluate(EvalContext(user), midway) == same.evaluate(EvalContext(user))
    before = [flag.evaluate(EvalContext(u), start).value for u in USERS]
    assert not any(before)


def test_disabled_beats_every_strategy() -> None:
    flag = compiled(FlagSpec("f", enabled=False, strategy=Strategy.ON))
    result = flag.evaluate(EvalContext("ann"))
    assert (result.value, result.variant, result.reason) == (False, "off", Reason.DISABLED)
