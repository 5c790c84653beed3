"""Garbage-collector settings of a serving process.

CPython's full collections walk every object the collector tracks. After startup that is
about 140,000 objects (AutoGen, pydantic, protobuf, gRPC, the roster) that never become
garbage; walking them takes a full collection about 70 ms on a small machine, and the event
loop, with every stream of the process, waits meanwhile. Frozen, they are no longer walked.
"""

from __future__ import annotations

import gc

# CPython collects the young generation every 700 allocations, several times per token under
# load, and a full collection follows every hundred of those. Most objects die by reference
# counting anyway: collecting less often makes fewer pauses, and fewer long ones.
_YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Call once the process has started and before it serves: collect what startup left,
    then move everything that survives out of the collector's reach."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, older, oldest)
