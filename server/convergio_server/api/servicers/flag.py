"""FlagService: proto <-> the flag domain. Also builds the flag components every process
shares: `ctx.components["flag_manager"]` (FlagManager) and `ctx.components["flags"]` (the
platform's FeatureGate), started before the server accepts calls."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from convergio.flag.v1 import flag_pb2, flag_pb2_grpc

from convergio_server.api.context import current_principal
from convergio_server.api.flag_messages import (
    change_to_pb,
    context_from_pb,
    evaluation_to_pb,
    flag_to_pb,
    history_to_pb,
    spec_from_pb,
)
from convergio_server.api.idempotency import once
from convergio_server.api.page_fit import ENVELOPE_BYTES, fitting, item_bytes
from convergio_server.api.services import COMPONENT_SETUPS, FACTORIES, ServiceContext
from convergio_server.domain.errors import InvalidArgument, Unavailable, server_stopping
from convergio_server.domain.flags.gate import CacheFeatureGate
from convergio_server.domain.flags.model import Evaluation
from convergio_server.domain.flags.service import FlagManager
from convergio_server.domain.pagination import decode_token, encode_token, page_size
from convergio_server.storage.flags import PgFlagStore, RedisChangeBus

log = logging.getLogger("convergio.flags")

_SERVICE = "/convergio.flag.v1.FlagService/"
SNAPSHOT_CHUNK = 500
RESPONSE_CACHE = 4096


class FlagServicer(flag_pb2_grpc.FlagServiceServicer):
    def __init__(self, ctx: ServiceContext, manager: FlagManager) -> None:
        self._ctx = ctx
        self._flags = manager
        # Responses bigger than the server's max message size fail to be sent: lists of
        # flags and snapshots are cut to this size (a single flag always fits, see
        # validation.max_flag_bytes).
        self._budget = ctx.settings.max_message_bytes - ENVELOPE_BYTES
        self._responses: dict[Evaluation, flag_pb2.EvaluateFlagResponse] = {}

    async def ListFlags(
        self, request: flag_pb2.ListFlagsRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.ListFlagsResponse:
        tenant = current_principal().tenant_id
        cursor = decode_token(request.page_token, "flags")
        limit = page_size(request.page_size)
        after = str(cursor.after[0]) if cursor else None
        flags, more = await self._flags.list_flags(tenant, after, limit, self._budget)
        messages = [flag_to_pb(f) for f in flags]
        count = fitting(messages, self._budget)
        more = more or count < len(messages)
        token = encode_token([messages[count - 1].key], "flags") if more and count else ""
        return flag_pb2.ListFlagsResponse(flags=messages[:count], next_page_token=token)

    async def GetFlag(
        self, request: flag_pb2.GetFlagRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.GetFlagResponse:
        flag = await self._flags.get_flag(current_principal().tenant_id, request.key)
        return flag_pb2.GetFlagResponse(flag=flag_to_pb(flag))

    async def UpsertFlag(
        self, request: flag_pb2.UpsertFlagRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.UpsertFlagResponse:
        principal = current_principal()

        async def act() -> flag_pb2.UpsertFlagResponse:
            result = await self._flags.upsert(
                principal.tenant_id,
                spec_from_pb(request.flag),
                request.expected_version,
                principal.name,
                request.comment,
                request.request_id,
            )
            return flag_pb2.UpsertFlagResponse(flag=flag_to_pb(result.flag), created=result.created)

        return await once(
            self._ctx.idempotency,
            principal.tenant_id,
            _SERVICE + "UpsertFlag",
            request,
            flag_pb2.UpsertFlagResponse,
            act,
        )

    async def DeleteFlag(
        self, request: flag_pb2.DeleteFlagRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.DeleteFlagResponse:
        principal = current_principal()
        change = await self._flags.delete(
            principal.tenant_id,
            request.key,
            request.expected_version,
            principal.name,
            request.comment,
        )
        return flag_pb2.DeleteFlagResponse(version=change.flag.version)

    async def DisableAllFlags(
        self, request: flag_pb2.DisableAllFlagsRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.DisableAllFlagsResponse:
        principal = current_principal()

        async def act() -> flag_pb2.DisableAllFlagsResponse:
            changes = await self._flags.disable_all(
                principal.tenant_id, request.reason, principal.name, request.request_id
            )
            flags = [flag_to_pb(c.flag) for c in changes]
            return flag_pb2.DisableAllFlagsResponse(
                disabled_count=len(changes), flags=flags[: fitting(flags, self._budget)]
            )

        return await once(
            self._ctx.idempotency,
            principal.tenant_id,
            _SERVICE + "DisableAllFlags",
            request,
            flag_pb2.DisableAllFlagsResponse,
            act,
        )

    async def EvaluateFlag(
        self, request: flag_pb2.EvaluateFlagRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.EvaluateFlagResponse:
        tenant = current_principal().tenant_id
        if not self._flags.cache.has_tenant(tenant):  # first call of a new tenant
            await self._flags.ensure_tenant(tenant)
        result = self._flags.evaluate(tenant, request.key, context_from_pb(request.context))
        # Results repeat (a flag has few distinct outcomes): reuse their response messages.
        response = self._responses.get(result)
        if response is None:
            if len(self._responses) >= RESPONSE_CACHE:
                self._responses.clear()
            response = flag_pb2.EvaluateFlagResponse(evaluation=evaluation_to_pb(result))
            self._responses[result] = response
        return response

    async def EvaluateAllFlags(
        self, request: flag_pb2.EvaluateAllFlagsRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.EvaluateAllFlagsResponse:
        tenant = current_principal().tenant_id
        await self._flags.ensure_tenant(tenant)
        results = self._flags.evaluate_all(tenant, context_from_pb(request.context))
        return flag_pb2.EvaluateAllFlagsResponse(evaluations=[evaluation_to_pb(r) for r in results])

    async def WatchFlags(
        self, request: flag_pb2.WatchFlagsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[flag_pb2.WatchFlagsResponse]:
        tenant = current_principal().tenant_id
        keys = frozenset(request.keys)
        await self._flags.ensure_tenant(tenant)
        # Watch first, then read the snapshot: a change made in between is not lost; changes
        # the snapshot already includes are skipped by their sequence number.
        with self._flags.cache.watch(tenant) as watcher:
            snapshot = await self._flags.store.snapshot(tenant)
            flags = [f for f, _ in snapshot.flags.get(tenant, []) if not keys or f.key in keys]
            part: list[flag_pb2.Flag] = []
            size = 0
            for flag in flags:
                message = flag_to_pb(flag)
                item = item_bytes(message)
                if part and (len(part) >= SNAPSHOT_CHUNK or size + item > self._budget):
                    yield flag_pb2.WatchFlagsResponse(
                        snapshot=flag_pb2.FlagSnapshot(flags=part, complete=False)
                    )
                    part, size = [], 0
                part.append(message)
                size += item
            yield flag_pb2.WatchFlagsResponse(
                snapshot=flag_pb2.FlagSnapshot(flags=part, complete=True)
            )
            while True:
                change = await watcher.queue.get()
                if change is None:
                    raise server_stopping()
                if change.seq <= snapshot.seq or (keys and change.flag.key not in keys):
                    continue
                yield flag_pb2.WatchFlagsResponse(change=change_to_pb(change))
                if watcher.lagged and watcher.queue.empty():
                    raise Unavailable("this watch fell too far behind; watch again")

    async def ListFlagHistory(
        self, request: flag_pb2.ListFlagHistoryRequest, context: grpc.aio.ServicerContext
    ) -> flag_pb2.ListFlagHistoryResponse:
        tenant = current_principal().tenant_id
        filters = ["history", request.key]
        cursor = decode_token(request.page_token, filters)
        limit = page_size(request.page_size)
        before = int(cursor.after[0]) if cursor else None
        entries, more = await self._flags.history(tenant, request.key, before, limit, self._budget)
        messages = [history_to_pb(request.key, e) for e in entries]
        count = fitting(messages, self._budget)
        more = more or count < len(messages)
        token = encode_token([entries[count - 1].id], filters) if more and count else ""
        return flag_pb2.ListFlagHistoryResponse(entries=messages[:count], next_page_token=token)


# ---- composition -------------------------------------------------------------------------


def _read_flags_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the flags file {path}: {exc}") from exc


async def import_flags_file(
    manager: FlagManager, store: PgFlagStore, path: Path, tenant: str
) -> None:
    """Import the seed file at start-up (CONVERGIO_FLAGS_FILE); an invalid file stops the
    start with a message naming the field."""
    document = _read_flags_file(path)
    await store.ensure_tenant(tenant)
    try:
        result = await manager.import_seed(tenant, document, "convergio", f"import {path.name}")
    except InvalidArgument as exc:
        raise ValueError(f"invalid flags file {path}: {exc.message}") from exc
    log.info(
        "flags file imported",
        extra={
            "path": str(path),
            "tenant": tenant,
            # ("created" is a field of every log record: a key of that name fails the log)
            "flags_created": len(result.created),
            "flags_updated": len(result.updated),
            "flags_unchanged": len(result.unchanged),
        },
    )


def _setup(ctx: ServiceContext) -> None:
    store = PgFlagStore(ctx.infra.pool)
    bus = RedisChangeBus(ctx.infra.redis, ctx.redis_keys.k("flags", "changes"))
    manager = FlagManager(
        store,
        bus,
        reload_seconds=ctx.settings.flags_reload_seconds,
        max_message_bytes=ctx.settings.max_message_bytes,
    )
    ctx.components["flag_manager"] = manager
    ctx.components["flags"] = CacheFeatureGate(manager)

    async def start() -> None:
        await manager.start()
        if ctx.settings.flags_file is not None:
            tenant = ctx.settings.flags_file_tenant or ctx.settings.dev_tenant
            await import_flags_file(manager, store, ctx.settings.flags_file, tenant)

    ctx.starters.append(start)
    ctx.closers.append(manager.stop)
    ctx.drainers.append(manager.cache.end_watches)


COMPONENT_SETUPS.append(_setup)
FACTORIES["convergio.flag.v1.FlagService"] = lambda ctx: FlagServicer(
    ctx, ctx.components["flag_manager"]
)
