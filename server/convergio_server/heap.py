"""Garbage-collector settings of a serving process.

CPython's full collections walk every object the collector tracks, while the event loop, with
every stream of the process, waits. After startup that is about 140,000 objects (AutoGen,
pydantic, protobuf, gRPC, the roster) that never become garbage: walking them takes a full
collection about 70 ms on a small machine. Frozen, they are no longer walked.

What is left is what the open turns hold (about 76,000 objects with 200 turns open, 25-80 ms
to walk), so full collections are also made ten times rarer: CPython considers one after every
10 collections of the middle generation, this process after every 100. The price is cyclic
garbage (about a hundred objects a turn) that waits longer to be freed. The young generations
keep CPython's thresholds: larger ones made each young collection cost several milliseconds
under load.
"""

from __future__ import annotations

import gc

# Collections of the middle generation between two full collections (CPython: 10).
_OLDEST_THRESHOLD = 100


def settle() -> None:
    """Call once the process has started and before it serves: collect what startup left,
    move everything that survives out of the collector's reach, and space out full
    collections."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _OLDEST_THRESHOLD)
