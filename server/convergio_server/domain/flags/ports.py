"""What the flag domain needs from storage: the flag store (PostgreSQL) and the change bus
(Redis pub/sub). Implementations live in `convergio_server.storage.flags`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from convergio_server.domain.flags.model import (
    Flag,
    FlagChange,
    FlagDelta,
    FlagSpec,
    HistoryEntry,
    Snapshot,
)


@dataclass(frozen=True)
class UpsertResult:
    flag: Flag
    created: bool
    change: FlagChange | None  # None when the upsert changed nothing


class FlagStore(Protocol):
    async def list_flags(
        self, tenant_id: str, after_key: str | None, limit: int, max_bytes: int
    ) -> tuple[list[Flag], bool]:
        """Up to `limit` flags after `after_key`, by key, and whether more follow. The page
        ends early once the flags read reach about `max_bytes` (at least one is read), so
        that large flags are not all loaded to be cut from the response."""
        ...

    async def get_flag(self, tenant_id: str, key: str) -> Flag | None: ...

    async def upsert(
        self,
        tenant_id: str,
        spec: FlagSpec,
        expected_version: int,
        actor: str,
        comment: str,
        request_id: str,
    ) -> UpsertResult:
        """Create (expected_version 0; a recreated key continues after the highest version
        it ever had) or replace; a refused attempt is recorded in the history and raises
        Aborted (metadata current_version); NotFound to replace a missing flag."""
        ...

    async def delete(
        self,
        tenant_id: str,
        key: str,
        expected_version: int,
        actor: str,
        comment: str,
        request_id: str,
    ) -> FlagChange: ...

    async def disable_all(
        self, tenant_id: str, comment: str, actor: str, request_id: str
    ) -> list[FlagChange]: ...

    async def history(
        self, tenant_id: str, key: str, before_id: int | None, limit: int, max_bytes: int
    ) -> tuple[list[HistoryEntry], bool]:
        """Up to `limit` entries before `before_id`, newest first, and whether more follow;
        ends early near `max_bytes` as list_flags does."""
        ...

    async def key_known(self, tenant_id: str, key: str) -> bool:
        """True if the key has any history (it exists or existed)."""
        ...

    async def snapshot(self, tenant_id: str | None = None) -> Snapshot:
        """Every flag (of one tenant, or of all), with the newest change seq included and,
        for all tenants, the recent seqs it could not see yet."""
        ...

    async def changes_since(
        self, seq: int, unseen: Collection[int], seeded_count: int
    ) -> FlagDelta:
        """The flags changed after `seq` or by one of the `unseen` seqs (see FlagDelta);
        the seeded tenants are listed only when there are not `seeded_count` of them. Reads
        nothing else: a store that has not changed costs two index lookups and a count of the
        seeded tenants (a few ms of database time with 10,000 of them)."""
        ...

    async def seed(
        self, tenant_id: str, specs: Sequence[FlagSpec], actor: str, comment: str
    ) -> list[FlagChange] | None:
        """Give a tenant its default flags once; None if it already had them."""
        ...

    async def unseeded_tenants(self) -> list[str]: ...


class ChangeBus(Protocol):
    async def publish(self, change: FlagChange) -> None: ...

    async def run(
        self,
        on_connect: Callable[[], Awaitable[None]],
        on_change: Callable[[FlagChange], None],
        on_disconnect: Callable[[BaseException], None],
    ) -> None:
        """Listen for changes until cancelled, reconnecting after failures; `on_connect`
        runs after every (re)subscription, before any change is delivered."""
        ...
