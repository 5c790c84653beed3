"""The flags a new tenant starts with: week 1 of the staged rollout (RAG and token
streaming at 5%, streaming also for beta testers, speaker policy and cost safety on,
graphflow for enterprise only, human approvals off)."""

from __future__ import annotations

from convergio_server.domain.flags.codec import parse_seed
from convergio_server.domain.flags.model import FlagSpec

WEEK_ONE = {
    "flags": {
        "rag_in_loop": {"enabled": True, "strategy": "percentage", "percentage": 5.0},
        "true_streaming": {
            "enabled": True,
            "strategy": "canary",
            "percentage": 5.0,
            "whitelist_groups": ["beta_testers"],
        },
        "speaker_policy": {"enabled": True, "strategy": "on"},
        "graphflow": {
            "enabled": True,
            "strategy": "group_based",
            "whitelist_groups": ["enterprise"],
        },
        "hitl": {"enabled": False, "strategy": "off"},
        "cost_safety": {"enabled": True, "strategy": "on"},
    }
}


def default_flags() -> list[FlagSpec]:
    return parse_seed(WEEK_ONE)
