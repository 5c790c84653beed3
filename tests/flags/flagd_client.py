"""Runs in its own process (OpenFeature's API and its provider are process-wide state):
OpenFeature's Python SDK with the flagd provider in RPC mode against a Convergio server.

    python tests/flags/flagd_client.py HOST PORT FLAG_KEY VARIANT_KEY

Prints one JSON line of evaluations, waits for a line on stdin, waits for the
configuration_change event naming FLAG_KEY, then prints a second JSON line.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent


def main() -> None:
    host, port, flag_key, variant_key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    changed = threading.Event()

    def on_change(details: EventDetails) -> None:
        if flag_key in (details.flags_changed or []):
            changed.set()

    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
    api.set_provider_and_wait(
        FlagdProvider(host=host, port=port, resolver_type=ResolverType.RPC, deadline_ms=5000)
    )
    client = api.get_client()

    def snapshot() -> dict[str, Any]:
        users = [f"user-{i}" for i in range(40)]
        percentage = {
            u: client.get_boolean_value(flag_key, False, EvaluationContext(targeting_key=u))
            for u in users
        }
        details = client.get_boolean_details(
            flag_key, False, EvaluationContext(targeting_key="user-1")
        )
        variants = {
            u: client.get_string_value(variant_key, "none", EvaluationContext(targeting_key=u))
            for u in users[:10]
        }
        group = client.get_boolean_details(
            variant_key,
            False,
            EvaluationContext(targeting_key="zed", attributes={"groups": ["beta_testers"]}),
        )
        missing = client.get_boolean_details("no.such.flag", True)
        mismatch = client.get_integer_details(flag_key, 7)
        return {
            "percentage": percentage,
            "reason": details.reason,
            "variant": details.variant,
            "variants": variants,
            "group": [group.value, group.reason],
            "missing": [missing.value, str(missing.error_code)],
            "mismatch": [mismatch.value, str(mismatch.error_code)],
        }

    print(json.dumps(snapshot()), flush=True)
    sys.stdin.readline()
    arrived = changed.wait(60)
    after = client.get_boolean_details(flag_key, True, EvaluationContext(targeting_key="user-1"))
    print(json.dumps({"event": arrived, "value": after.value, "reason": after.reason}), flush=True)
    api.shutdown()


if __name__ == "__main__":
    main()
