"""Garbage-collector settings of a serving process.

CPython's full collections walk every object the collector tracks. After startup that is
about 140,000 objects (AutoGen, pydantic, protobuf, gRPC, the roster) that never become
garbage; walking them takes a full collection about 70 ms on a small machine, and the event
loop, with every stream of the process, waits meanwhile. Frozen, they are no longer walked:
a full collection then walks only what the running turns hold.

The generation thresholds stay CPython's: larger young generations made each young
collection cost several milliseconds under load, and did not make the long pauses rarer.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Call once the process has started and before it serves: collect what startup left,
    then move everything that survives out of the collector's reach."""
    gc.collect()
    gc.freeze()
