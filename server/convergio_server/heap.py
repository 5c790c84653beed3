"""Garbage-collector settings of a serving process.

CPython's full collections walk every object the collector tracks, while the event loop, with
every stream of the process, waits. After startup that is about 140,000 objects (AutoGen,
pydantic, protobuf, gRPC, the roster) that never become garbage: walking them takes a full
collection about 70 ms on a small machine. Frozen, they are no longer walked.

What is left is what the open turns hold (about 76,000 objects with 200 turns open, 25-90 ms
to walk). CPython starts a full collection after every 10 collections of the middle
generation: under load, every few seconds, each a pause of every stream. So full collections
run on a timer instead (`CONVERGIO_GC_FULL_INTERVAL_SECONDS`, 30 s by default): at most one
pause per interval, none while the process is idle. The price is cyclic garbage (about a
hundred objects a turn) that waits for the next one. The young generations keep CPython's
thresholds: larger ones made each young collection cost several milliseconds under load.
"""

from __future__ import annotations

import asyncio
import gc
import logging

log = logging.getLogger(__name__)

# Collections of the middle generation between two automatic full collections, when they are
# not on a timer (CPython: 10).
_OLDEST_THRESHOLD = 100
# ...and when they are: never (a full collection needs this many middle ones).
_NEVER = 1 << 30


def settle(full_interval_seconds: float) -> None:
    """Call once the process has started and before it serves: collect what startup left,
    move everything that survives out of the collector's reach, and leave full collections
    to `collect_fully` (with an interval), or space them out."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER if full_interval_seconds > 0 else _OLDEST_THRESHOLD)


async def collect_fully(interval_seconds: float) -> None:
    """A full collection every interval, unless nothing reached the oldest generation since
    the last one (an idle process)."""
    middle_then = -1
    while True:
        await asyncio.sleep(interval_seconds)
        middle_now = gc.get_stats()[1]["collections"]
        if middle_now == middle_then:
            continue
        collected = gc.collect(2)
        middle_then = gc.get_stats()[1]["collections"]
        log.debug("full garbage collection: %d objects freed", collected)
