"""Flag operations for the API, the CLI and the platform: validated changes that reach the
local cache at once and every other process through the change bus, the synchronisation
loop, default flags for new tenants, and seed import/export.

Synchronisation: changes arrive as notifications; a full reload on every (re)connect of the
subscription repairs any notification missed meanwhile. As a safety net against a
notification lost otherwise, each process also catches up with the store periodically: it
reads only the flags changed after the change seq it last read (nothing at all when the
store has not changed, the common case), and everything only when that cannot tell
(nothing read yet, the history went back, a tenant went away) or once every
`full_reload_seconds`, which also covers what bypasses the history."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from convergio_server.domain.background import cancel_and_wait
from convergio_server.domain.errors import InvalidArgument, NotFound
from convergio_server.domain.flags.cache import FlagCache
from convergio_server.domain.flags.codec import parse_seed, to_seed
from convergio_server.domain.flags.defaults import default_flags
from convergio_server.domain.flags.model import (
    EvalContext,
    Evaluation,
    Flag,
    FlagChange,
    FlagSpec,
    HistoryEntry,
)
from convergio_server.domain.flags.ports import ChangeBus, FlagStore, UpsertResult
from convergio_server.domain.flags.validation import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_key,
    check_size,
    max_flag_bytes,
    normalize,
)

log = logging.getLogger("convergio.flags")

SYSTEM_ACTOR = "convergio"
MAX_COMMENT = 500
SEED_RETRY_SECONDS = 5.0
# A change seq not visible yet is asked for again at every periodic reload until it shows
# up (a write that was still committing) or this long has passed (it was rolled back).
UNSEEN_PATIENCE_SECONDS = 300.0


@dataclass
class SyncStats:
    """What the periodic and (re)connect reloads did since the process started."""

    full_reloads: int = 0  # every flag of every tenant read
    incremental_reloads: int = 0  # only the flags changed since the previous read
    unchanged_reloads: int = 0  # the store had not changed: no flag read
    flags_read: int = 0  # by all of them


@dataclass(frozen=True)
class ImportResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]


def _comment(comment: str, field: str = "comment") -> str:
    if len(comment) > MAX_COMMENT:
        raise InvalidArgument.for_field(field, f"at most {MAX_COMMENT} characters")
    return comment


class FlagManager:
    def __init__(
        self,
        store: FlagStore,
        bus: ChangeBus,
        *,
        reload_seconds: float = 30.0,
        full_reload_seconds: float = 3600.0,
        cache: FlagCache | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.store = store
        # Every flag must fit in a single response of every call that returns it.
        self.max_flag_bytes = max_flag_bytes(max_message_bytes)
        self.bus = bus
        self.cache = cache or FlagCache()
        self._reload_seconds = reload_seconds
        self._full_reload_seconds = full_reload_seconds
        self.stats = SyncStats()
        # Where the last read of the store ended: the newest change seq it saw (None before
        # any full read), the seqs below it it could not see yet (with when each was first
        # missed), the tenants seeded then, and when everything was last read.
        self._seq: int | None = None
        self._unseen: dict[int, float] = {}
        self._seeded: frozenset[str] = frozenset()
        self._full_reload_time = 0.0
        # Reads of the store one at a time, so that the above describes a single read.
        self._sync_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._seeding: dict[str, asyncio.Task[None]] = {}
        self._seed_attempts: dict[str, float] = {}
        self._connected = asyncio.Event()
        self._store_down = False  # the last reload failed

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Seed new tenants, load every flag, then follow changes in the background."""
        await self.reload()
        self._tasks = [
            asyncio.create_task(
                self.bus.run(self._on_connect, self._on_change, self._on_lost),
                name="flag-change-listener",
            ),
            asyncio.create_task(self._reload_periodically(), name="flag-reload"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._seeding.values()]
        await cancel_and_wait(tasks)
        self._tasks.clear()
        self._seeding.clear()

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True once change notifications are being received (for tests and benchmarks)."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
            return True
        except TimeoutError:
            return False

    async def reload(self) -> None:
        """Give new tenants their defaults, then bring the cache to every flag of the
        store."""
        async with self._sync_lock:
            await self._seed_new_tenants()
            await self._load_everything()

    async def _seed_new_tenants(self) -> None:
        for tenant_id in await self.store.unseeded_tenants():
            await self._seed(tenant_id)

    async def _load_everything(self) -> None:
        snapshot = await self.store.snapshot()
        await self.cache.replace_gradually(snapshot)
        now = asyncio.get_running_loop().time()
        self._seq = snapshot.seq
        self._seeded = snapshot.seeded_tenants
        # Seqs missed by earlier reads may still be below the snapshot's window.
        self._remember_unseen(snapshot.missing | self._unseen.keys(), now)
        self._full_reload_time = now
        self.stats.full_reloads += 1
        self.stats.flags_read += sum(len(items) for items in snapshot.flags.values())

    def _remember_unseen(self, missing: Iterable[int], now: float) -> None:
        first_missed = {i: self._unseen.get(i, now) for i in missing}
        self._unseen = {i: t for i, t in first_missed.items() if now - t < UNSEEN_PATIENCE_SECONDS}

    async def _catch_up(self) -> None:
        """Read what changed since the last read, or everything when that cannot tell."""
        async with self._sync_lock:
            await self._seed_new_tenants()
            now = asyncio.get_running_loop().time()
            if self._seq is None or now - self._full_reload_time >= self._full_reload_seconds:
                await self._load_everything()
                return
            delta = await self.store.changes_since(
                self._seq, self._unseen.keys(), len(self._seeded)
            )
            if delta.seq < self._seq or (
                delta.seeded_tenants is not None and not self._seeded <= delta.seeded_tenants
            ):
                # The history went back (a restored database) or a tenant was removed with
                # its history: what the cache must drop shows only in a full read.
                await self._load_everything()
                return
            if delta.empty:
                self.stats.unchanged_reloads += 1
            else:
                await self.cache.merge(delta)
                self.stats.incremental_reloads += 1
                self.stats.flags_read += sum(len(items) for items in delta.flags.values())
                self.stats.flags_read += len(delta.deleted)
            self._seq = delta.seq
            if delta.seeded_tenants is not None:
                self._seeded = delta.seeded_tenants
            self._remember_unseen(delta.missing, asyncio.get_running_loop().time())

    async def _on_connect(self) -> None:
        # A notification may have been missed while disconnected: reload everything.
        await self.reload()
        self.cache.stale = False
        self._connected.set()

    def _on_change(self, change: FlagChange) -> None:
        self.cache.apply(change)

    def _on_lost(self, exc: BaseException) -> None:
        if not self.cache.stale:
            log.warning("flag change notifications lost: %s; answering from last known flags", exc)
        self.cache.stale = True
        self._connected.clear()

    async def _reload_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._reload_seconds)
            await self.refresh()

    async def refresh(self) -> None:
        """Catch up with the store (only what changed since the last read); while the store
        cannot be reached, keep the last known flags and answer them as STALE."""
        try:
            await self._catch_up()
        except Exception as exc:
            if not self._store_down:
                log.warning("flag reload failed: %s; answering from last known flags", exc)
            self._store_down = True
            self.cache.stale = True
            return
        if self._store_down:
            log.info("flag store reachable again")
        self._store_down = False
        # (still stale while change notifications are not received)
        self.cache.stale = not self._connected.is_set()

    async def _publish(self, changes: Sequence[FlagChange]) -> None:
        for change in changes:
            self.cache.apply(change)
        try:
            for change in changes:
                await self.bus.publish(change)
        except Exception as exc:  # committed anyway; others catch up on their next reload
            log.warning("could not publish a flag change: %s", exc)

    # ---- default flags of new tenants ------------------------------------------------

    async def _seed(self, tenant_id: str) -> None:
        changes = await self.store.seed(
            tenant_id, default_flags(), SYSTEM_ACTOR, "default flags of a new tenant"
        )
        if changes:
            await self._publish(changes)
        if not self.cache.has_tenant(tenant_id):
            self.cache.replace(await self.store.snapshot(tenant_id), tenant_id)

    def _may_try(self, tenant_id: str) -> bool:
        # At most one attempt per tenant every few seconds: a tenant that does not exist
        # (an anonymous flagd call naming one) must not cost queries on every call.
        now = asyncio.get_running_loop().time()
        if now - self._seed_attempts.get(tenant_id, -SEED_RETRY_SECONDS) < SEED_RETRY_SECONDS:
            return False
        self._seed_attempts[tenant_id] = now
        return True

    async def ensure_tenant(self, tenant_id: str) -> None:
        """Make sure the tenant has had its default flags (once per tenant and process)."""
        if self.cache.has_tenant(tenant_id) or not self._may_try(tenant_id):
            return
        await self._seed(tenant_id)

    def seed_in_background(self, tenant_id: str) -> None:
        if tenant_id in self._seeding or self.cache.has_tenant(tenant_id):
            return
        if not self._may_try(tenant_id):
            return
        task = asyncio.get_running_loop().create_task(self._seed(tenant_id))
        self._seeding[tenant_id] = task
        task.add_done_callback(lambda _: self._seeding.pop(tenant_id, None))

    # ---- reads -----------------------------------------------------------------------

    async def list_flags(
        self, tenant_id: str, after_key: str | None, limit: int, max_bytes: int
    ) -> tuple[list[Flag], bool]:
        """A page of flags by key (see FlagStore.list_flags) and whether more follow."""
        await self.ensure_tenant(tenant_id)
        return await self.store.list_flags(tenant_id, after_key, limit, max_bytes)

    async def get_flag(self, tenant_id: str, key: str) -> Flag:
        check_key(key)
        await self.ensure_tenant(tenant_id)
        flag = await self.store.get_flag(tenant_id, key)
        if flag is None:
            raise NotFound(f"no flag {key!r}", metadata={"key": key})
        return flag

    async def history(
        self, tenant_id: str, key: str, before_id: int | None, limit: int, max_bytes: int
    ) -> tuple[list[HistoryEntry], bool]:
        """A page of the flag's history, newest first, and whether more follow."""
        check_key(key)
        await self.ensure_tenant(tenant_id)
        entries, more = await self.store.history(tenant_id, key, before_id, limit, max_bytes)
        if not entries and before_id is None:
            raise NotFound(f"no flag {key!r} ever existed", metadata={"key": key})
        return entries, more

    def evaluate(self, tenant_id: str, key: str, ctx: EvalContext) -> Evaluation:
        if not self.cache.has_tenant(tenant_id) and self.cache.loaded:
            self.seed_in_background(tenant_id)
        return self.cache.evaluate(tenant_id, key, ctx)

    def evaluate_all(self, tenant_id: str, ctx: EvalContext) -> list[Evaluation]:
        if not self.cache.has_tenant(tenant_id) and self.cache.loaded:
            self.seed_in_background(tenant_id)
        return self.cache.evaluate_all(tenant_id, ctx)

    # ---- changes ---------------------------------------------------------------------

    async def upsert(
        self,
        tenant_id: str,
        spec: FlagSpec,
        expected_version: int,
        actor: str,
        comment: str = "",
        request_id: str = "",
    ) -> UpsertResult:
        spec = normalize(spec)
        check_size(spec, self.max_flag_bytes)
        if expected_version < 0:
            raise InvalidArgument.for_field("expected_version", "must not be negative")
        _comment(comment)
        await self.ensure_tenant(tenant_id)
        result = await self.store.upsert(
            tenant_id, spec, expected_version, actor, comment, request_id
        )
        if result.change is not None:
            await self._publish([result.change])
        return result

    async def delete(
        self,
        tenant_id: str,
        key: str,
        expected_version: int,
        actor: str,
        comment: str = "",
        request_id: str = "",
    ) -> FlagChange:
        check_key(key)
        if expected_version < 0:
            raise InvalidArgument.for_field("expected_version", "must not be negative")
        _comment(comment)
        await self.ensure_tenant(tenant_id)
        change = await self.store.delete(
            tenant_id, key, expected_version, actor, comment, request_id
        )
        await self._publish([change])
        return change

    async def disable_all(
        self, tenant_id: str, reason: str, actor: str, request_id: str = ""
    ) -> list[FlagChange]:
        if not reason.strip():
            raise InvalidArgument.for_field("reason", "say why every flag is being turned off")
        _comment(reason, "reason")
        await self.ensure_tenant(tenant_id)
        changes = await self.store.disable_all(
            tenant_id, f"disable all: {reason.strip()}", actor, request_id
        )
        await self._publish(changes)
        return changes

    # ---- seed files ------------------------------------------------------------------

    async def import_seed(
        self, tenant_id: str, document: object, actor: str, comment: str = "import"
    ) -> ImportResult:
        """Create or replace the document's flags; flags that already match are left alone
        (importing the same file twice changes nothing). Other flags are kept."""
        specs = parse_seed(document)
        for spec in specs:  # before any change: a refused file changes nothing
            check_size(spec, self.max_flag_bytes, f"flags.{spec.key}.")
        await self.ensure_tenant(tenant_id)
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        for spec in specs:
            current = await self.store.get_flag(tenant_id, spec.key)
            if current is not None and current.spec == spec:
                unchanged.append(spec.key)
                continue
            result = await self.upsert(
                tenant_id, spec, 0 if current is None else current.version, actor, comment
            )
            (created if result.created else updated).append(spec.key)
        return ImportResult(created, updated, unchanged)

    async def export_seed(self, tenant_id: str) -> dict[str, object]:
        await self.ensure_tenant(tenant_id)
        snapshot = await self.store.snapshot(tenant_id)
        return to_seed([flag.spec for flag, _ in snapshot.flags.get(tenant_id, [])])
