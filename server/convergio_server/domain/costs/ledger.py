"""The cost ledger: one entry per model call, written in batches off the streaming path.

`add()` never waits on PostgreSQL: entries are queued and a background task writes them every
`flush_interval` seconds or as soon as `batch_size` are waiting (at once after the entry of a
call that no budget counter counted, which seeds of the counters must find). `close()` (run at
graceful shutdown) writes everything still queued. A failed write keeps the entries and
retries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from convergio_server.domain.costs.prices import ModelPrice
from convergio_server.domain.errors import Unavailable

log = logging.getLogger(__name__)
# Entries kept while PostgreSQL is unreachable; beyond this the oldest are dropped (logged).
MAX_PENDING = 200_000
# A seed waits this long at most for uncounted entries to be written: a PostgreSQL that hangs
# must not hold a model call for every row of a batch retried one by one. Stopping a write half
# way loses nothing: rows leave the queue once written, and are written once (by their id).
_UNCOUNTED_WRITE_TIMEOUT = 5.0


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    tenant_id: str
    time: datetime
    principal: str
    conversation_id: str
    turn_id: str
    execution_id: str
    step_id: str
    agent: str
    provider: str
    model: str
    call_kind: str  # AGENT_REPLY | SPEAKER_SELECTION | TOOL_CHOICE
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    price_source: str  # TABLE | FALLBACK
    price: ModelPrice
    latency_ms: int
    outcome: str  # OK | ERROR | CANCELLED | CLIENT_GONE
    error_reason: str = ""


class LedgerStore(Protocol):
    async def insert_entries(self, entries: Sequence[LedgerEntry]) -> None: ...


class LedgerWriter:
    def __init__(self, store: LedgerStore, flush_interval: float, batch_size: int) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._pending: list[LedgerEntry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._late: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.written = 0
        # Positions in the queue: entries ever queued, entries that left it (written or
        # dropped), and the last uncounted one.
        self._queued = 0
        self._left = 0
        self._uncounted = 0

    def add(self, entry: LedgerEntry, uncounted: bool = False) -> None:
        """Queue `entry`. `uncounted`: no budget counter counted its call (Redis had lost
        them), so seeds of those counters must find it in the ledger: it is written at once,
        and `write_uncounted` waits for it."""
        if self._closed:  # after shutdown began: write it directly rather than lose it
            task = asyncio.get_running_loop().create_task(self._write_now([entry]))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            return
        self._pending.append(entry)
        self._queued += 1
        if uncounted:
            self._uncounted = self._queued
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            self._left += dropped
            log.error("cost ledger backlog full: dropped %d oldest entries", dropped)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cost-ledger")
        if uncounted or len(self._pending) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def write_uncounted(self) -> None:
        """Before a budget counter is seeded from the ledger: write the queue if it still holds
        an uncounted entry (see `add`), which the seed must find; otherwise return at once,
        leaving the queue to its batches. A failure is only logged: the seed reads PostgreSQL
        next, and fails there if it is down."""
        if self._left >= self._uncounted:
            return
        try:
            await asyncio.wait_for(self.flush(), _UNCOUNTED_WRITE_TIMEOUT)
        except (Unavailable, OSError, TimeoutError) as exc:
            log.warning("cost ledger: uncounted entries not written before a seed: %s", exc)
        except Exception:
            log.warning("cost ledger: uncounted entries not written before a seed", exc_info=True)

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except (Unavailable, OSError) as exc:  # PostgreSQL down: no traceback each time
                log.warning("cost ledger write failed; retrying: %s", exc)
            except Exception:
                log.warning("cost ledger write failed; retrying", exc_info=True)

    async def flush(self) -> None:
        """Write every queued entry (in batches). Raises if PostgreSQL refuses; the entries
        stay queued."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self.batch_size]
                try:
                    await self.store.insert_entries(batch)
                except Exception:
                    if len(batch) == 1:
                        raise
                    await self._write_one_by_one(batch)
                else:
                    self.written += len(batch)
                del self._pending[: len(batch)]
                self._left += len(batch)

    async def _write_one_by_one(self, batch: list[LedgerEntry]) -> None:
        """A refused batch, row by row: one row PostgreSQL will never take (say, of a
        tenant that no longer exists) must not hold back every later entry. Rows refused
        while others of the batch went in are dropped and logged; if none went in, the
        store itself is failing, and the whole batch stays queued."""
        refused: list[tuple[LedgerEntry, Exception]] = []
        for entry in batch:
            try:
                await self.store.insert_entries([entry])
                self.written += 1
            except Exception as exc:
                refused.append((entry, exc))
        if len(refused) == len(batch):
            raise refused[0][1]
        for dropped, error in refused:
            log.error(
                "cost ledger entry refused and dropped",
                extra={
                    "entry_id": dropped.entry_id,
                    "tenant": dropped.tenant_id,
                    "error": str(error),
                },
            )

    async def _write_now(self, entries: list[LedgerEntry]) -> None:
        try:
            await self.store.insert_entries(entries)
            self.written += len(entries)
        except Exception:
            log.exception("could not write %d cost ledger entries after shutdown", len(entries))

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            # Let the writer finish the batch it may be writing, then write the rest here.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
        for attempt in range(3):
            try:
                await self.flush()
                return
            except Exception:
                if attempt == 2:
                    log.exception(
                        "cost ledger: %d entries could not be written at shutdown", self.pending
                    )
                else:
                    await asyncio.sleep(0.2)
