"""The in-process flag cache every evaluation reads: per tenant, flags compiled for fast
evaluation, kept current by change notifications and full reloads. It never raises on
evaluation and never blocks on the network. Watchers receive each change of a tenant."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime

from convergio_server.domain.flags.evaluation import CompiledFlag
from convergio_server.domain.flags.model import (
    ChangeKind,
    ErrorCode,
    EvalContext,
    Evaluation,
    Flag,
    FlagChange,
    FlagDelta,
    Reason,
    Snapshot,
)

WATCH_QUEUE = 10_000
# Flags compiled between two turns of the event loop when many are loaded (a few ms).
REPLACE_BATCH = 250


class Watcher:
    """A queue of one tenant's changes. `lagged` is set (and no more changes are queued)
    when the consumer falls WATCH_QUEUE changes behind: it must start again from a
    snapshot."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        # None: the server is stopping, the watch ends (`FlagCache.end_watches`).
        self.queue: asyncio.Queue[FlagChange | None] = asyncio.Queue(WATCH_QUEUE)
        self.lagged = False

    def push(self, change: FlagChange) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.lagged = True

    def end(self) -> None:
        self.lagged = True  # nothing more is queued
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class FlagCache:
    def __init__(self) -> None:
        self._tenants: dict[str, dict[str, CompiledFlag]] = {}
        # Newest change seq applied per (tenant, key), deletions included, so that a late
        # notification never brings back an older state.
        self._seqs: dict[tuple[str, str], int] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self.loaded = False
        # True while change notifications cannot be received: answers may be out of date.
        self.stale = False

    # ---- reading ---------------------------------------------------------------------

    def has_tenant(self, tenant_id: str) -> bool:
        return tenant_id in self._tenants

    def flags(self, tenant_id: str) -> list[Flag]:
        return [c.flag for _, c in sorted(self._tenants.get(tenant_id, {}).items())]

    def compiled(self, tenant_id: str, key: str) -> CompiledFlag | None:
        flags = self._tenants.get(tenant_id)
        return None if flags is None else flags.get(key)

    def evaluate(
        self, tenant_id: str, key: str, ctx: EvalContext, now: datetime | None = None
    ) -> Evaluation:
        flags = self._tenants.get(tenant_id)
        compiled = None if flags is None else flags.get(key)
        if compiled is None:
            if not self.loaded:
                return Evaluation(
                    key,
                    False,
                    "",
                    Reason.ERROR,
                    0,
                    ErrorCode.PROVIDER_NOT_READY,
                    "flags are not loaded yet",
                )
            return Evaluation(
                key,
                False,
                "",
                Reason.ERROR,
                0,
                ErrorCode.FLAG_NOT_FOUND,
                f"no flag {key!r}",
            )
        result = compiled.evaluate(ctx, now)
        if self.stale:
            return Evaluation(key, result.value, result.variant, Reason.STALE, result.flag_version)
        return result

    def evaluate_all(
        self, tenant_id: str, ctx: EvalContext, now: datetime | None = None
    ) -> list[Evaluation]:
        now = now or datetime.now(UTC)
        flags = self._tenants.get(tenant_id, {})
        return [self.evaluate(tenant_id, key, ctx, now) for key in sorted(flags)]

    # ---- writing ---------------------------------------------------------------------

    def apply(self, change: FlagChange) -> bool:
        """Apply one change unless a newer one for the flag was applied; True if applied."""
        ident = (change.tenant_id, change.flag.key)
        if self._seqs.get(ident, 0) >= change.seq:
            return False
        self._seqs[ident] = change.seq
        flags = self._tenants.setdefault(change.tenant_id, {})
        if change.kind is ChangeKind.DELETED:
            flags.pop(change.flag.key, None)
        else:
            flags[change.flag.key] = CompiledFlag(change.flag)
        self._notify(change)
        return True

    def replace(self, snapshot: Snapshot, tenant_id: str | None = None) -> list[FlagChange]:
        """Bring the cache to `snapshot` (of every tenant, or of `tenant_id`), keeping any
        change newer than the snapshot; returns the differences, which watchers also get."""
        changes: list[FlagChange] = []
        for _ in self._replacing(snapshot, tenant_id, changes, REPLACE_BATCH):
            pass
        return changes

    async def replace_gradually(self, snapshot: Snapshot) -> list[FlagChange]:
        """`replace` for every tenant, letting the event loop run between batches of flags:
        compiling tens of thousands at once would stall every stream for a second. Changes
        that arrive meanwhile are ordered by their seq as always."""
        changes: list[FlagChange] = []
        for _ in self._replacing(snapshot, None, changes, REPLACE_BATCH):
            await asyncio.sleep(0)
        return changes

    def _replacing(
        self, snapshot: Snapshot, tenant_id: str | None, changes: list[FlagChange], batch: int
    ) -> Iterator[None]:
        """`replace`, pausing (yielding) after every `batch` flags applied. A tenant's
        deletions are decided without a pause, on its flags as they are then."""
        tenants = (
            set(self._tenants) | set(snapshot.flags) | set(snapshot.seeded_tenants)
            if tenant_id is None
            else {tenant_id}
        )
        applied = 0
        for tenant in tenants:
            fresh = {flag.key: (flag, seq) for flag, seq in snapshot.flags.get(tenant, [])}
            for key, (flag, seq) in fresh.items():
                kind = (
                    ChangeKind.CREATED
                    if key not in self._tenants.get(tenant, {})
                    else ChangeKind.UPDATED
                )
                change = FlagChange(tenant, kind, flag, flag.updated_by, flag.update_time, seq)
                if self.apply(change):
                    changes.append(change)
                applied += 1
                if applied % batch == 0:
                    yield
            current = self._tenants.get(tenant, {})
            for key, known in list(current.items()):
                if key in fresh or self._seqs.get((tenant, key), 0) > snapshot.seq:
                    continue
                gone = FlagChange(
                    tenant, ChangeKind.DELETED, known.flag, "", datetime.now(UTC), snapshot.seq
                )
                self._seqs[(tenant, key)] = snapshot.seq
                current.pop(key, None)
                self._notify(gone)
                changes.append(gone)
            if tenant in snapshot.seeded_tenants or fresh:
                self._tenants.setdefault(tenant, {})
        if tenant_id is None:
            self.loaded = True

    async def merge(self, delta: FlagDelta) -> list[FlagChange]:
        """Apply what changed after the seq an earlier read ended at (a full `replace`
        only for the flags and tenants the delta names), letting the event loop run between
        batches; returns the changes applied, which watchers also get."""
        changes: list[FlagChange] = []
        for tenant in delta.seeded_tenants or ():
            self._tenants.setdefault(tenant, {})
        applied = 0
        for tenant, items in delta.flags.items():
            for flag, seq in items:
                known = self._tenants.get(tenant, {})
                kind = ChangeKind.CREATED if flag.key not in known else ChangeKind.UPDATED
                change = FlagChange(tenant, kind, flag, flag.updated_by, flag.update_time, seq)
                if self.apply(change):
                    changes.append(change)
                applied += 1
                if applied % REPLACE_BATCH == 0:
                    await asyncio.sleep(0)
        for change in delta.deleted:
            ident = (change.tenant_id, change.flag.key)
            known_flag = self.compiled(*ident)
            if known_flag is None:
                # Created and deleted between two reads, or already dropped: only remember
                # the deletion, so that a late notification of an older state is ignored.
                self._seqs[ident] = max(self._seqs.get(ident, 0), change.seq)
                continue
            gone = FlagChange(
                change.tenant_id,
                change.kind,
                dataclasses.replace(change.flag, create_time=known_flag.flag.create_time),
                change.actor,
                change.change_time,
                change.seq,
            )
            if self.apply(gone):
                changes.append(gone)
        return changes

    # ---- watching --------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, tenant_id: str) -> Iterator[Watcher]:
        watcher = Watcher(tenant_id)
        self._watchers.setdefault(tenant_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            watchers = self._watchers.get(tenant_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[tenant_id]

    def end_watches(self) -> None:
        """The server is stopping: every watch ends (after the changes it has queued), so
        that its client watches another server instead of holding the stop."""
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.end()

    def _notify(self, change: FlagChange) -> None:
        for watcher in tuple(self._watchers.get(change.tenant_id, ())):
            watcher.push(change)
