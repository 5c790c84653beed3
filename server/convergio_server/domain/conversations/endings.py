"""How many turns of a process write their ends at once while others are streaming.

A turn's end (its message stored, its team state saved, the turn closed, its ledger and
breakers updated) is a few milliseconds of work for the one event loop of the process. When
many turns end together (turns started together, answers of a similar length), their ends
fill every pass of the loop, and the token deltas of the turns still streaming wait behind
them: 200 paced turns ending within a second delayed tokens by 60-150 ms. While any turn of
the process is streaming an answer, only a few ends run at once and the others wait their
turn, so that a token waits for a few ends at most; a turn's end is a little later, its
tokens are not. With nothing streaming, ends do not wait: a burst of ends alone delays no
token, and limiting it would only slow it down. No end waits longer than `max_wait`: when
the stores are slow, ends are slow for want of answers, not of the loop, and holding them
back would only pile them up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class EndingGate:
    def __init__(self, limit: int, max_wait: float = 1.0) -> None:
        self.limit = limit  # 0 = no limit
        self.max_wait = max_wait
        self.ending = 0  # ends running now
        self.streaming = 0  # turns streaming an answer now
        self._handed = 0  # places given to waiters that have not resumed yet
        self._waiting: deque[asyncio.Future[None]] = deque()

    def _must_wait(self) -> bool:
        return bool(self.limit) and self.streaming > 0 and self.ending + self._handed >= self.limit

    @contextlib.asynccontextmanager
    async def slot(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold a place among the ends running now; `urgent` ones (a cancel, which must
        end its stream at once) never wait."""
        if not urgent and (self._waiting or self._must_wait()):
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                async with asyncio.timeout(self.max_wait):
                    await waiter
            except TimeoutError:  # waited long enough: goes now, beyond the limit
                self._leave(waiter)
            except BaseException:
                self._leave(waiter)
                self._wake()  # (its place, and those queued behind it, may go now)
                raise
            else:
                self._handed -= 1
        self.ending += 1
        try:
            yield
        finally:
            self.ending -= 1
            self._wake()

    def _leave(self, waiter: asyncio.Future[None]) -> None:
        """A waiter stops waiting: out of the queue, or, when it was let in just before
        (and has not taken its place), that place handed back."""
        if waiter in self._waiting:
            self._waiting.remove(waiter)
        elif not waiter.cancelled():
            self._handed -= 1

    def started_streaming(self) -> None:
        self.streaming += 1

    def stopped_streaming(self) -> None:
        self.streaming -= 1
        self._wake()

    def _wake(self) -> None:
        # In order of arrival; a waiter's place counts from now, not from when it resumes.
        while self._waiting and not self._must_wait():
            waiter = self._waiting.popleft()
            if not waiter.done():  # (a cancelled one leaves the queue itself, later)
                waiter.set_result(None)
                self._handed += 1
