"""Evaluating one flag for one caller, from a flag compiled once per change so that an
evaluation is a few dictionary and set lookups plus at most two hashes.

Variants are chosen with the same flagd algorithm over the key
[flag key + "/variants", targeting key], so which variant a caller gets is independent of
whether a percentage lets them in (and does not change when the percentage is raised).
"""

from __future__ import annotations

from datetime import UTC, datetime

from convergio_server.domain.flags import bucketing
from convergio_server.domain.flags.model import (
    EvalContext,
    Evaluation,
    Flag,
    Reason,
    Strategy,
)

ON, OFF = "on", "off"
VARIANT_SUFFIX = "/variants"


class CompiledFlag:
    """A flag prepared for fast evaluation."""

    __slots__ = (
        "_disabled",
        "_gradual",
        "_groups",
        "_off_static",
        "_on_static",
        "_prefix",
        "_strategy",
        "_users",
        "_variant_names",
        "_variant_prefix",
        "_variant_weights",
        "_weight",
        "flag",
        "key",
        "version",
    )

    def __init__(self, flag: Flag) -> None:
        spec = flag.spec
        self.flag = flag
        self.key = spec.key
        self.version = flag.version
        self._strategy: Strategy | None = spec.strategy
        self._prefix = bucketing.key_prefix(spec.key)
        self._variant_prefix = bucketing.key_prefix(spec.key + VARIANT_SUFFIX)
        self._weight = bucketing.percent_weight(spec.percentage)
        self._groups = frozenset(spec.groups)
        self._users = frozenset(spec.users)
        self._variant_names = tuple(v.name for v in spec.variants)
        self._variant_weights = tuple(v.weight for v in spec.variants)
        self._gradual = spec.gradual
        self._disabled = Evaluation(spec.key, False, OFF, Reason.DISABLED, flag.version)
        self._off_static = Evaluation(spec.key, False, OFF, Reason.STATIC, flag.version)
        self._on_static = Evaluation(spec.key, True, ON, Reason.STATIC, flag.version)
        if not spec.enabled:
            self._strategy = None

    def _off(self, reason: Reason) -> Evaluation:
        return Evaluation(self.key, False, OFF, reason, self.version)

    def _on(self, ctx: EvalContext, reason: Reason) -> Evaluation:
        if not self._variant_names:
            return Evaluation(self.key, True, ON, reason, self.version)
        if not ctx.targeting_key:  # sticky choice impossible: the first variant
            return Evaluation(self.key, True, self._variant_names[0], reason, self.version)
        h = bucketing.bucket_hash(self._variant_prefix, ctx.targeting_key)
        name = self._variant_names[bucketing.pick(h, self._variant_weights)]
        return Evaluation(self.key, True, name, reason, self.version)

    def _split(self, ctx: EvalContext, weight: int) -> Evaluation:
        if not ctx.targeting_key:
            return self._off(Reason.DEFAULT)
        h = bucketing.bucket_hash(self._prefix, ctx.targeting_key)
        if bucketing.bucket(h, bucketing.PERCENT_TOTAL) < weight:
            return self._on(ctx, Reason.SPLIT)
        return self._off(Reason.SPLIT)

    def _matches(self, ctx: EvalContext) -> bool:
        return bool(ctx.targeting_key and ctx.targeting_key in self._users) or bool(
            self._groups and not self._groups.isdisjoint(ctx.groups)
        )

    def gradual_weight(self, now: datetime) -> int:
        g = self._gradual
        if g is None or now <= g.start_time:
            return 0
        if now >= g.end_time:
            return bucketing.percent_weight(g.target_percentage)
        elapsed = (now - g.start_time) / (g.end_time - g.start_time)
        return int(bucketing.percent_weight(g.target_percentage) * elapsed)

    def evaluate(self, ctx: EvalContext, now: datetime | None = None) -> Evaluation:
        strategy = self._strategy
        if strategy is None:
            return self._disabled
        if strategy is Strategy.ON:
            if not self._variant_names:
                return self._on_static
            # The variant depends on the caller, so the result is not STATIC (cacheable).
            return self._on(ctx, Reason.SPLIT if ctx.targeting_key else Reason.DEFAULT)
        if strategy is Strategy.OFF:
            return self._off_static
        if strategy is Strategy.PERCENTAGE:
            return self._split(ctx, self._weight)
        if strategy is Strategy.CANARY:
            if self._matches(ctx):
                return self._on(ctx, Reason.TARGETING_MATCH)
            return self._split(ctx, self._weight)
        if strategy is Strategy.GROUP_BASED:
            if self._groups and not self._groups.isdisjoint(ctx.groups):
                return self._on(ctx, Reason.TARGETING_MATCH)
            return self._off(Reason.DEFAULT)
        if strategy is Strategy.WHITELIST:
            if ctx.targeting_key and ctx.targeting_key in self._users:
                return self._on(ctx, Reason.TARGETING_MATCH)
            return self._off(Reason.DEFAULT)
        # GRADUAL
        return self._split(ctx, self.gradual_weight(now or datetime.now(UTC)))
