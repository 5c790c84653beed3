"""The contract between the platform's features and the flag service: which
features a turn uses is decided per caller by flags (`rag_in_loop`,
`true_streaming`, `speaker_policy`, `graphflow`, `hitl`, `cost_safety`)."""

from __future__ import annotations

from typing import Protocol

from convergio_server.domain.auth import Principal

RAG_IN_LOOP = "rag_in_loop"
TRUE_STREAMING = "true_streaming"
SPEAKER_POLICY = "speaker_policy"
GRAPHFLOW = "graphflow"
HITL = "hitl"
COST_SAFETY = "cost_safety"
PLATFORM_FLAGS = (RAG_IN_LOOP, TRUE_STREAMING, SPEAKER_POLICY, GRAPHFLOW, HITL, COST_SAFETY)


class FeatureGate(Protocol):
    """Answers from an in-process cache; never raises, never blocks on the network.
    A gate that cannot reach the flag store answers from its last known values."""

    def enabled(self, principal: Principal, key: str, *, groups: tuple[str, ...] = ()) -> bool: ...


class AllOn:
    """The gate used before the flag service exists in a deployment: every platform
    feature on (the behaviour the seed's development phase asks for)."""

    def enabled(self, principal: Principal, key: str, *, groups: tuple[str, ...] = ()) -> bool:
        return True
