"""Background work: stopping its tasks reliably at shutdown, and pacing and logging retries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

# How often a task that ignored its cancellation is cancelled again.
_RECANCEL_SECONDS = 0.2
# A failure a background loop meets again and again (a store down) is logged the first time,
# then once in so many: one line per retry would flood the log.
_SAY_AGAIN_EVERY = 30


def worth_logging(failures: int) -> bool:
    """Whether the `failures`-th failure in a row of a retrying loop is to be logged."""
    return failures == 1 or failures % _SAY_AGAIN_EVERY == 0


class Backoff:
    """The waits of a write retried while its store is unreachable: 0.1 s, doubling up to
    2 s, for `seconds` in all."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.delay = 0.1
        self.failures = 0

    def exhausted(self, give_up_at: float | None = None) -> bool:
        """Count a failure; whether to give up: the next wait would end past the deadline
        (or past `give_up_at`, when sooner)."""
        self.failures += 1
        limit = self.deadline if give_up_at is None else min(self.deadline, give_up_at)
        return time.monotonic() + self.delay > limit

    @property
    def worth_logging(self) -> bool:
        return worth_logging(self.failures)

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(2.0, self.delay * 2)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], limit_seconds: float = 10.0) -> None:
    """Cancel `tasks` and wait until they have ended, cancelling again until they do.

    A client library can swallow a cancellation that lands while one of its own timeouts
    fires (redis-py's pub/sub `get_message` does), and the task then goes on waiting. One
    `cancel()` followed by `await` would hang shutdown forever; repeating it does not. Tasks
    still running after `limit_seconds` are logged and left behind rather than block the exit.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.warning("background tasks did not stop within %.1fs: %s", limit_seconds, names)
            return
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_SECONDS, remaining))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("background task %s ended with %r", task.get_name(), task.exception())
