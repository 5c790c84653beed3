"""Flags in PostgreSQL (current flags, full history, which tenants got their defaults) and
flag-change notifications over Redis pub/sub."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from convergio_server.domain.errors import Aborted, NotFound
from convergio_server.domain.flags.codec import change_from_dict, change_to_dict, spec_from_dict
from convergio_server.domain.flags.codec import spec_to_dict as _spec_dict
from convergio_server.domain.flags.model import (
    ChangeKind,
    Flag,
    FlagChange,
    FlagDelta,
    FlagSpec,
    HistoryEntry,
    Outcome,
    Snapshot,
)
from convergio_server.domain.flags.ports import UpsertResult

log = logging.getLogger("convergio.flags")

_FLAG_COLUMNS = "key, spec, version, create_time, update_time, updated_by, change_seq"
# Flags parsed between two turns of the event loop when reading many (a few milliseconds).
_BATCH = 500
# How far below the newest change seq a read looks for seqs it cannot see (writes still
# committing), and how many such seqs are kept: a flag write takes milliseconds, so a seq
# taken thousands of changes before a read and still uncommitted is not expected.
_GAP_WINDOW = 10_000
# What a page read counts per row besides the spec's JSON, which is at least as long as its
# protobuf encoding: the server-set fields, tags and the like.
_ROW_OVERHEAD = 256


def _spec_json(spec: FlagSpec) -> str:
    return json.dumps(_spec_dict(spec), sort_keys=True)


def _flag(row: asyncpg.Record) -> Flag:
    return Flag(
        spec=spec_from_dict(row["key"], json.loads(row["spec"])),
        version=row["version"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        updated_by=row["updated_by"],
    )


def _conflict(key: str, current_version: int, expected: int) -> Aborted:
    if current_version == 0:
        message = f"flag {key!r} does not exist any more (expected version {expected})"
    elif expected == 0:
        message = (
            f"flag {key!r} already exists at version {current_version}; "
            "pass expected_version to replace it"
        )
    else:
        message = (
            f"flag {key!r} is at version {current_version}, not {expected}: "
            "another change won; read it again and retry"
        )
    return Aborted(
        message,
        reason="VERSION_CONFLICT",
        metadata={"key": key, "current_version": str(current_version)},
    )


def _add_flags(flags: dict[str, list[tuple[Flag, int]]], rows: Sequence[asyncpg.Record]) -> None:
    for row in rows:
        try:
            flag = _flag(row)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable flag %s/%s skipped: %s", row["tenant_id"], row["key"], exc)
            continue
        flags.setdefault(row["tenant_id"], []).append((flag, row["change_seq"]))


async def _deletions(conn: Any, ids: list[int]) -> list[FlagChange]:
    """The flags whose newest change is one of `ids` but which no longer exist, as the
    deletions that removed them."""
    rows = await conn.fetch(
        "SELECT id, tenant_id, key, version, spec, actor, change_time FROM flag_history "
        "WHERE id = ANY($1::bigint[]) ORDER BY id",
        ids,
    )
    changes: list[FlagChange] = []
    for row in rows:
        try:
            spec = spec_from_dict(row["key"], json.loads(row["spec"]))
        except (ValueError, KeyError, TypeError) as exc:
            # Only the key and seq matter to a cache dropping the flag.
            log.error("unreadable flag %s/%s in history: %s", row["tenant_id"], row["key"], exc)
            spec = FlagSpec(row["key"])
        # The history does not keep the creation time; the cache keeps the one it knows.
        gone = Flag(spec, row["version"], row["change_time"], row["change_time"], row["actor"])
        changes.append(
            FlagChange(
                row["tenant_id"],
                ChangeKind.DELETED,
                gone,
                row["actor"],
                row["change_time"],
                row["id"],
            )
        )
    return changes


def _missing(
    since: int, unseen: Collection[int], read: Sequence[int], newest: int
) -> frozenset[int]:
    """Ids at or below `newest` still not seen: those of `unseen` not read, and the holes
    between the ids read after `since` (ascending). At most _GAP_WINDOW, the newest."""
    seen = set(read)
    holes = {i for i in unseen if i not in seen}
    previous = since
    for i in (*(i for i in read if i > since), newest + 1):
        if i > previous + 1:
            holes.update(range(max(previous + 1, i - _GAP_WINDOW), i))
        previous = max(previous, i)
    if len(holes) > _GAP_WINDOW:
        holes = set(sorted(holes)[-_GAP_WINDOW:])
    return frozenset(holes)


class PgFlagStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_flags(
        self, tenant_id: str, after_key: str | None, limit: int, max_bytes: int
    ) -> tuple[list[Flag], bool]:
        # One row more than the page tells whether more follow; the spec of a row past the
        # limit or starting past max_bytes is not fetched (flags may be megabytes each).
        rows = await self._pool.fetch(
            "SELECT key, version, create_time, update_time, updated_by, change_seq, "
            "CASE WHEN n <= $3 AND before < $4 THEN spec END AS spec FROM ("
            " SELECT *, row_number() OVER w AS n, sum(size) OVER w - size AS before FROM ("
            "  SELECT *, octet_length(spec::text) + $5 AS size FROM flags"
            "  WHERE tenant_id = $1 AND key > $2 ORDER BY key LIMIT $3 + 1"
            " ) candidates WINDOW w AS (ORDER BY key ROWS UNBOUNDED PRECEDING)"
            ") page ORDER BY key",
            tenant_id,
            after_key or "",
            limit,
            max_bytes,
            _ROW_OVERHEAD,
        )
        flags = [_flag(r) for r in rows if r["spec"] is not None]
        return flags, len(flags) < len(rows)

    async def get_flag(self, tenant_id: str, key: str) -> Flag | None:
        row = await self._pool.fetchrow(
            f"SELECT {_FLAG_COLUMNS} FROM flags WHERE tenant_id = $1 AND key = $2",
            tenant_id,
            key,
        )
        return None if row is None else _flag(row)

    @staticmethod
    async def _record(
        conn: Any,
        tenant_id: str,
        key: str,
        version: int,
        kind: ChangeKind,
        outcome: Outcome,
        spec: FlagSpec,
        expected_version: int,
        actor: str,
        comment: str,
        request_id: str,
    ) -> asyncpg.Record:
        row: asyncpg.Record | None = await conn.fetchrow(
            "INSERT INTO flag_history (tenant_id, key, version, kind, outcome, spec, "
            "expected_version, actor, comment, request_id) "
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10) "
            "RETURNING id, change_time",
            tenant_id,
            key,
            version,
            kind.value,
            outcome.value,
            _spec_json(spec),
            expected_version,
            actor,
            comment,
            request_id,
        )
        assert row is not None
        return row

    async def _create(
        self,
        conn: Any,
        tenant_id: str,
        spec: FlagSpec,
        actor: str,
        comment: str,
        request_id: str,
    ) -> FlagChange | None:
        """Create the flag, or None if it exists. A key deleted before continues after the
        highest version it ever had: a writer still holding a version of the deleted flag
        must get ABORTED, not replace the new one."""
        # Concurrent creates: the unique key makes all but one insert do nothing.
        created = await conn.fetchval(
            "INSERT INTO flags (tenant_id, key, spec, version, updated_by, change_seq) "
            "VALUES ($1, $2, $3::jsonb, 1, $4, 0) ON CONFLICT DO NOTHING RETURNING key",
            tenant_id,
            spec.key,
            _spec_json(spec),
            actor,
        )
        if created is None:
            return None
        # Read after the insert: a delete it waited for is committed and visible to this
        # statement, so its version is counted.
        version = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM flag_history "
            "WHERE tenant_id = $1 AND key = $2",
            tenant_id,
            spec.key,
        )
        entry = await self._record(
            conn,
            tenant_id,
            spec.key,
            version,
            ChangeKind.CREATED,
            Outcome.APPLIED,
            spec,
            0,
            actor,
            comment,
            request_id,
        )
        row = await conn.fetchrow(
            "UPDATE flags SET version = $3, change_seq = $4 WHERE tenant_id = $1 AND key = $2 "
            f"RETURNING {_FLAG_COLUMNS}",
            tenant_id,
            spec.key,
            version,
            entry["id"],
        )
        assert row is not None
        return FlagChange(
            tenant_id, ChangeKind.CREATED, _flag(row), actor, entry["change_time"], entry["id"]
        )

    async def upsert(
        self,
        tenant_id: str,
        spec: FlagSpec,
        expected_version: int,
        actor: str,
        comment: str,
        request_id: str,
    ) -> UpsertResult:
        key = spec.key
        conflict: Aborted | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if expected_version == 0:
                change = await self._create(conn, tenant_id, spec, actor, comment, request_id)
                if change is not None:
                    return UpsertResult(change.flag, True, change)
                current = await conn.fetchval(
                    "SELECT version FROM flags WHERE tenant_id = $1 AND key = $2",
                    tenant_id,
                    key,
                )
                current_version = int(current or 0)
                await self._record(
                    conn,
                    tenant_id,
                    key,
                    current_version,
                    ChangeKind.CREATED,
                    Outcome.VERSION_CONFLICT,
                    spec,
                    0,
                    actor,
                    comment,
                    request_id,
                )
                conflict = _conflict(key, current_version, 0)
            else:
                row = await conn.fetchrow(
                    f"SELECT {_FLAG_COLUMNS} FROM flags WHERE tenant_id = $1 AND key = $2 "
                    "FOR UPDATE",
                    tenant_id,
                    key,
                )
                if row is None:
                    raise NotFound(
                        f"no flag {key!r} to replace; use expected_version 0 to create it",
                        metadata={"key": key},
                    )
                current_flag = _flag(row)
                if current_flag.version != expected_version:
                    await self._record(
                        conn,
                        tenant_id,
                        key,
                        current_flag.version,
                        ChangeKind.UPDATED,
                        Outcome.VERSION_CONFLICT,
                        spec,
                        expected_version,
                        actor,
                        comment,
                        request_id,
                    )
                    conflict = _conflict(key, current_flag.version, expected_version)
                elif current_flag.spec == spec:
                    return UpsertResult(current_flag, False, None)
                else:
                    version = current_flag.version + 1
                    entry = await self._record(
                        conn,
                        tenant_id,
                        key,
                        version,
                        ChangeKind.UPDATED,
                        Outcome.APPLIED,
                        spec,
                        expected_version,
                        actor,
                        comment,
                        request_id,
                    )
                    updated = await conn.fetchrow(
                        "UPDATE flags SET spec = $3::jsonb, version = $4, update_time = $5, "
                        "updated_by = $6, change_seq = $7 WHERE tenant_id = $1 AND key = $2 "
                        f"RETURNING {_FLAG_COLUMNS}",
                        tenant_id,
                        key,
                        _spec_json(spec),
                        version,
                        entry["change_time"],
                        actor,
                        entry["id"],
                    )
                    assert updated is not None
                    flag = _flag(updated)
                    change = FlagChange(
                        tenant_id,
                        ChangeKind.UPDATED,
                        flag,
                        actor,
                        entry["change_time"],
                        entry["id"],
                    )
                    return UpsertResult(flag, False, change)
        # The refused attempt is committed in the history before the caller hears ABORTED.
        assert conflict is not None
        raise conflict

    async def delete(
        self,
        tenant_id: str,
        key: str,
        expected_version: int,
        actor: str,
        comment: str,
        request_id: str,
    ) -> FlagChange:
        conflict: Aborted | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_FLAG_COLUMNS} FROM flags WHERE tenant_id = $1 AND key = $2 FOR UPDATE",
                tenant_id,
                key,
            )
            if row is None:
                raise NotFound(f"no flag {key!r}", metadata={"key": key})
            flag = _flag(row)
            if expected_version and flag.version != expected_version:
                await self._record(
                    conn,
                    tenant_id,
                    key,
                    flag.version,
                    ChangeKind.DELETED,
                    Outcome.VERSION_CONFLICT,
                    flag.spec,
                    expected_version,
                    actor,
                    comment,
                    request_id,
                )
                conflict = _conflict(key, flag.version, expected_version)
            else:
                version = flag.version + 1
                entry = await self._record(
                    conn,
                    tenant_id,
                    key,
                    version,
                    ChangeKind.DELETED,
                    Outcome.APPLIED,
                    flag.spec,
                    expected_version,
                    actor,
                    comment,
                    request_id,
                )
                await conn.execute(
                    "DELETE FROM flags WHERE tenant_id = $1 AND key = $2", tenant_id, key
                )
                gone = Flag(flag.spec, version, flag.create_time, entry["change_time"], actor)
                return FlagChange(
                    tenant_id, ChangeKind.DELETED, gone, actor, entry["change_time"], entry["id"]
                )
        assert conflict is not None
        raise conflict

    async def disable_all(
        self, tenant_id: str, comment: str, actor: str, request_id: str
    ) -> list[FlagChange]:
        changes: list[FlagChange] = []
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT {_FLAG_COLUMNS} FROM flags WHERE tenant_id = $1 "
                "AND (spec->>'enabled')::boolean ORDER BY key FOR UPDATE",
                tenant_id,
            )
            for row in rows:
                old = _flag(row)
                spec = FlagSpec(**{**_fields(old.spec), "enabled": False})
                version = old.version + 1
                entry = await self._record(
                    conn,
                    tenant_id,
                    old.key,
                    version,
                    ChangeKind.UPDATED,
                    Outcome.APPLIED,
                    spec,
                    old.version,
                    actor,
                    comment,
                    request_id,
                )
                updated = await conn.fetchrow(
                    "UPDATE flags SET spec = $3::jsonb, version = $4, update_time = $5, "
                    "updated_by = $6, change_seq = $7 WHERE tenant_id = $1 AND key = $2 "
                    f"RETURNING {_FLAG_COLUMNS}",
                    tenant_id,
                    old.key,
                    _spec_json(spec),
                    version,
                    entry["change_time"],
                    actor,
                    entry["id"],
                )
                assert updated is not None
                changes.append(
                    FlagChange(
                        tenant_id,
                        ChangeKind.UPDATED,
                        _flag(updated),
                        actor,
                        entry["change_time"],
                        entry["id"],
                    )
                )
        return changes

    async def history(
        self, tenant_id: str, key: str, before_id: int | None, limit: int, max_bytes: int
    ) -> tuple[list[HistoryEntry], bool]:
        # As list_flags: a row past the page or past max_bytes is read without its spec.
        rows = await self._pool.fetch(
            "SELECT id, version, kind, outcome, expected_version, actor, change_time, comment, "
            "request_id, CASE WHEN n <= $4 AND before < $5 THEN spec END AS spec FROM ("
            " SELECT *, row_number() OVER w AS n, sum(size) OVER w - size AS before FROM ("
            "  SELECT *, octet_length(spec::text) + octet_length(comment) + $6 AS size"
            "  FROM flag_history WHERE tenant_id = $1 AND key = $2 AND id < $3"
            "  ORDER BY id DESC LIMIT $4 + 1"
            " ) candidates WINDOW w AS (ORDER BY id DESC ROWS UNBOUNDED PRECEDING)"
            ") page ORDER BY id DESC",
            tenant_id,
            key,
            before_id if before_id is not None else 2**62,
            limit,
            max_bytes,
            _ROW_OVERHEAD,
        )
        loaded = [r for r in rows if r["spec"] is not None]
        entries = [
            HistoryEntry(
                id=r["id"],
                version=r["version"],
                kind=ChangeKind(r["kind"]),
                outcome=Outcome(r["outcome"]),
                spec=spec_from_dict(key, json.loads(r["spec"])),
                expected_version=r["expected_version"],
                actor=r["actor"],
                change_time=r["change_time"],
                comment=r["comment"],
                request_id=r["request_id"],
            )
            for r in loaded
        ]
        return entries, len(loaded) < len(rows)

    async def key_known(self, tenant_id: str, key: str) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM flag_history WHERE tenant_id = $1 AND key = $2)",
                tenant_id,
                key,
            )
        )

    async def snapshot(self, tenant_id: str | None = None) -> Snapshot:
        flags: dict[str, list[tuple[Flag, int]]] = {}
        missing: frozenset[int] = frozenset()
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            seq = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM flag_history"))
            if tenant_id is None:
                seeded = await conn.fetch("SELECT tenant_id FROM flag_tenants")
                missing = frozenset(
                    await conn.fetchval(
                        "SELECT ARRAY(SELECT g FROM generate_series($1::bigint, $2::bigint) g "
                        "WHERE NOT EXISTS (SELECT 1 FROM flag_history WHERE id = g))",
                        max(seq - _GAP_WINDOW + 1, 1),
                        seq,
                    )
                )
                cursor = await conn.cursor(f"SELECT tenant_id, {_FLAG_COLUMNS} FROM flags")
            else:
                seeded = await conn.fetch(
                    "SELECT tenant_id FROM flag_tenants WHERE tenant_id = $1", tenant_id
                )
                cursor = await conn.cursor(
                    f"SELECT tenant_id, {_FLAG_COLUMNS} FROM flags WHERE tenant_id = $1",
                    tenant_id,
                )
            # In batches: each fetch lets the event loop serve other work, and parsing tens
            # of thousands of flags at once would stall it for a second.
            while True:
                rows = await cursor.fetch(_BATCH)
                _add_flags(flags, rows)
                if len(rows) < _BATCH:
                    break
        for n, items in enumerate(flags.values(), 1):
            items.sort(key=lambda item: item[0].key)
            if n % _BATCH == 0:
                await asyncio.sleep(0)
        return Snapshot(seq, frozenset(r["tenant_id"] for r in seeded), flags, missing)

    async def changes_since(
        self, seq: int, unseen: Collection[int], seeded_count: int
    ) -> FlagDelta:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            head = await conn.fetchrow(
                "SELECT coalesce((SELECT max(id) FROM flag_history), 0) AS newest, "
                "(SELECT count(*) FROM flag_tenants) AS seeded"
            )
            assert head is not None
            # Refused attempts too: every id read is one that is not missing.
            entries = await conn.fetch(
                "SELECT id, tenant_id, key, outcome = 'applied' AS applied FROM flag_history "
                "WHERE id > $1 OR id = ANY($2::bigint[]) ORDER BY id",
                seq,
                list(unseen),
            )
            seeded: frozenset[str] | None = None
            if head["seeded"] != seeded_count:
                seeded_rows = await conn.fetch("SELECT tenant_id FROM flag_tenants")
                seeded = frozenset(r["tenant_id"] for r in seeded_rows)
            # The newest applied change of each flag changed (entries are in seq order).
            latest = {(e["tenant_id"], e["key"]): e["id"] for e in entries if e["applied"]}
            flags: dict[str, list[tuple[Flag, int]]] = {}
            deleted: list[FlagChange] = []
            if latest:
                tenants, keys = zip(*latest, strict=True)
                rows = await conn.fetch(
                    f"SELECT tenant_id, {_FLAG_COLUMNS} FROM flags "
                    "WHERE (tenant_id, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                    list(tenants),
                    list(keys),
                )
                for i in range(0, len(rows), _BATCH):
                    _add_flags(flags, rows[i : i + _BATCH])
                    await asyncio.sleep(0)
                present = {(r["tenant_id"], r["key"]) for r in rows}
                gone = [last for ident, last in latest.items() if ident not in present]
                if gone:
                    deleted = await _deletions(conn, gone)
        newest = int(head["newest"])
        read = [int(e["id"]) for e in entries]
        return FlagDelta(newest, flags, deleted, _missing(seq, unseen, read, newest), seeded)

    async def seed(
        self, tenant_id: str, specs: Sequence[FlagSpec], actor: str, comment: str
    ) -> list[FlagChange] | None:
        changes: list[FlagChange] = []
        async with self._pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant_id)
            if exists is None:
                return None
            first = await conn.fetchval(
                "INSERT INTO flag_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING "
                "RETURNING tenant_id",
                tenant_id,
            )
            if first is None:
                return None
            for spec in specs:
                change = await self._create(conn, tenant_id, spec, actor, comment, "")
                if change is not None:  # else created by an operator first: keep theirs
                    changes.append(change)
        return changes

    async def ensure_tenant(self, tenant_id: str) -> None:
        """Create the tenant if needed (a flags file may be imported before any key exists)."""
        await self._pool.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", tenant_id
        )

    async def unseeded_tenants(self) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT id FROM tenants t WHERE NOT EXISTS "
            "(SELECT 1 FROM flag_tenants f WHERE f.tenant_id = t.id) ORDER BY id"
        )
        return [r["id"] for r in rows]


def _fields(spec: FlagSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in FlagSpec.__slots__}


class RedisChangeBus:
    """Flag changes on one pub/sub channel (`<prefix>:flags:changes`), as JSON."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._resync = asyncio.Event()

    async def _reconnected(self, connection: Any) -> None:
        # redis-py re-subscribes by itself after a dropped connection; notifications sent
        # meanwhile are lost, so the listener must reload everything.
        self._resync.set()

    async def publish(self, change: FlagChange) -> None:
        await self._client.publish(self._channel, json.dumps(change_to_dict(change)))

    async def run(
        self,
        on_connect: Callable[[], Awaitable[None]],
        on_change: Callable[[FlagChange], None],
        on_disconnect: Callable[[BaseException], None],
    ) -> None:
        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(self._reconnected)
                self._resync.clear()
                await on_connect()
                delay = 0.1
                while True:
                    if self._resync.is_set():
                        self._resync.clear()
                        await on_connect()
                    # A bounded wait keeps the loop responsive; the client's health checks
                    # detect a dead connection.
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        on_change(change_from_dict(json.loads(message["data"])))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.error("ignored a malformed flag notification: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                on_disconnect(exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:  # the connection is already gone
                    log.debug("closing a lost pub/sub connection failed")
