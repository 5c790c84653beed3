"""The platform's FeatureGate (domain/features.py), answered from the flag cache.

`enabled(principal, key, groups=...)` evaluates the flag for the principal (targeting key =
principal name) without any network call. When the tenant's flags are not in the cache yet
(a new tenant being given its defaults, or a process still starting) it answers from the
default flags (week 1 of the rollout); when the store cannot be reached it answers from the
last known flags. It never answers "everything on" and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from convergio_server.domain.auth import Principal
from convergio_server.domain.flags.defaults import default_flags
from convergio_server.domain.flags.evaluation import CompiledFlag
from convergio_server.domain.flags.model import EvalContext, Evaluation, Flag, Reason
from convergio_server.domain.flags.service import FlagManager

log = logging.getLogger("convergio.flags")

GROUPS_LABEL = "groups"


def groups_from_labels(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The caller's groups for flag evaluation from labels (e.g. a conversation's): the
    comma-separated `groups` label, e.g. "enterprise,beta_testers"."""
    raw = labels.get(GROUPS_LABEL, "")
    return tuple(sorted({g.strip() for g in raw.split(",") if g.strip()}))


def _defaults() -> dict[str, CompiledFlag]:
    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        spec.key: CompiledFlag(Flag(spec, 1, epoch, epoch, "convergio")) for spec in default_flags()
    }


class CacheFeatureGate:
    def __init__(self, manager: FlagManager) -> None:
        self._manager = manager
        self._defaults = _defaults()

    def evaluate(
        self, principal: Principal, key: str, *, groups: tuple[str, ...] = ()
    ) -> Evaluation:
        """The full result (value, variant, reason), e.g. for a flag with variants."""
        ctx = EvalContext(principal.name, frozenset(groups))
        try:
            if self._manager.cache.has_tenant(principal.tenant_id):
                return self._manager.cache.evaluate(principal.tenant_id, key, ctx)
            if self._manager.cache.loaded:
                self._manager.seed_in_background(principal.tenant_id)
        except Exception:  # a gate must not break a turn
            log.exception("flag evaluation failed; using the default flags")
        default = self._defaults.get(key)
        if default is None:
            return Evaluation(key, False, "off", Reason.DEFAULT)
        result = default.evaluate(ctx)
        return Evaluation(key, result.value, result.variant, Reason.DEFAULT, 0)

    def enabled(self, principal: Principal, key: str, *, groups: tuple[str, ...] = ()) -> bool:
        return self.evaluate(principal, key, groups=groups).value
