"""What the flag domain needs from storage: the flag store (PostgreSQL) and the change bus
(Redis pub/sub). Implementations live in `convergio_server.storage.flags`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from convergio_server.domain.flags.model import Flag, FlagChange, FlagSpec, HistoryEntry, Snapshot


@dataclass(frozen=True)
class UpsertResult:
    flag: Flag
    created: bool
    change: FlagChange | None  # None when the upsert changed nothing


class FlagStore(Protocol):
    async def list_flags(self, tenant_id: str, after_key: str | None, limit: int) -> list[Flag]: ...

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
        """Create (expected_version 0) or replace; a refused attempt is recorded in the
        history and raises Aborted (metadata current_version); NotFound to replace a
        missing flag."""
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
        self, tenant_id: str, key: str, before_id: int | None, limit: int
    ) -> list[HistoryEntry]: ...

    async def key_known(self, tenant_id: str, key: str) -> bool:
        """True if the key has any history (it exists or existed)."""
        ...

    async def snapshot(self, tenant_id: str | None = None) -> Snapshot:
        """Every flag (of one tenant, or of all), with the newest change seq included."""
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
