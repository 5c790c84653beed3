"""ConversationService: proto <-> the conversation domain. Also wires the conversation
components (event log, turn runner, leases) of this process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import conversation_pb2_grpc, events_pb2

from convergio_server.api.context import current_principal
from convergio_server.api.conversation_convert import (
    CONVERSATION_STATUS_FROM_PB,
    DISCONNECT_FROM_PB,
    TURN_STATUS_FROM_PB,
    agent_pb,
    conversation_pb,
    event_to_pb,
    heartbeat_pb,
    message_pb,
    preset_pb,
    selection_from_pb,
    team_from_pb,
    turn_pb,
)
from convergio_server.api.idempotency import once
from convergio_server.api.page_fit import FittingPage
from convergio_server.api.services import FACTORIES, ServiceContext
from convergio_server.api.text_fit import fit_event, fit_message, surely_fits
from convergio_server.domain.agents.roster import Roster, split_dirs
from convergio_server.domain.auth import Principal, Role
from convergio_server.domain.conversations.model import CANCEL, CONTINUE
from convergio_server.domain.conversations.runner import RunnerConfig, TurnRunner
from convergio_server.domain.conversations.service import ConversationService, ServiceConfig
from convergio_server.domain.conversations.team import AutogenTeamBuilder, selection_from_json
from convergio_server.domain.errors import FailedPrecondition, InvalidArgument
from convergio_server.domain.events.log import EventLog
from convergio_server.domain.events.model import Event, TokenDelta, TurnCompleted
from convergio_server.domain.features import AllOn, FeatureGate
from convergio_server.domain.guards import Guards, NoGuards
from convergio_server.domain.knowledge import KnowledgeBase
from convergio_server.domain.models.factory import check_selection
from convergio_server.domain.models.selection import ModelSelection
from convergio_server.domain.pagination import decode_token, encode_token, page_size
from convergio_server.domain.tools.registry import ToolRegistry
from convergio_server.storage.conversations import PgConversationStore
from convergio_server.storage.events import PgDurableEvents, RedisLiveEvents
from convergio_server.storage.knowledge import PgKnowledgeStore
from convergio_server.storage.redis import create_redis
from convergio_server.storage.turn_leases import CancelChannel, RedisLeases
from convergio_server.telemetry import watch_turns

_SERVICE = "/convergio.conversation.v1.ConversationService/"


class ConversationServicer(conversation_pb2_grpc.ConversationServiceServicer):
    def __init__(self, ctx: ServiceContext, service: ConversationService, cancels: CancelChannel):
        self.ctx = ctx
        self.service = service
        self.roster = service.roster
        self.cancels = cancels
        self._listening = False

    def _principal(self) -> Principal:
        if not self._listening:
            self._listening = True
            runner = self.service.runner
            self.cancels.listen(
                lambda turn, reason, detail: runner.cancel_local(turn, reason, detail)
            )
        return current_principal()

    # ------------------------------------------------------------- conversations

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateConversationResponse:
        principal = self._principal()

        async def act() -> pb.CreateConversationResponse:
            conversation = await self.service.create(
                principal,
                title=request.title,
                labels=dict(request.labels),
                team=team_from_pb(request.team) if request.HasField("team") else None,
                model=selection_from_pb(request.model),
                agent_models={k: selection_from_pb(v) for k, v in request.agent_models.items()},
                max_turns_per_message=request.max_turns_per_message,
                speaker_policy=request.speaker_policy,
                turn_timeout_seconds=(
                    request.turn_timeout.ToNanoseconds() / 1e9
                    if request.HasField("turn_timeout")
                    else None
                ),
            )
            return pb.CreateConversationResponse(conversation=conversation_pb(conversation))

        async def replayed(response: pb.CreateConversationResponse) -> None:
            created = response.conversation.conversation_id
            if not await self.service.exists(principal, created):
                raise FailedPrecondition(
                    f"request_id {request.request_id!r} created conversation {created}, "
                    "which has been deleted since; use a new request_id to create another",
                    metadata={"conversation_id": created},
                )

        return await once(
            self.ctx.idempotency,
            principal.tenant_id,
            _SERVICE + "CreateConversation",
            request,
            pb.CreateConversationResponse,
            act,
            replayed,
        )

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConversationResponse:
        conversation = await self.service.get(self._principal(), request.conversation_id)
        return pb.GetConversationResponse(conversation=conversation_pb(conversation))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        # Conversations with many long labels are big.
        page = FittingPage(conversation_pb, self.ctx.settings.max_message_bytes)
        _, token = await self.service.list_conversations(
            self._principal(),
            status=CONVERSATION_STATUS_FROM_PB.get(request.status, ""),
            labels=dict(request.labels),
            size=request.page_size,
            token=request.page_token,
            fits=page,
        )
        return pb.ListConversationsResponse(conversations=page.messages, next_page_token=token)

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateConversationResponse:
        conversation = await self.service.update(
            self._principal(),
            request.conversation_id,
            fields=list(request.update_mask.paths),
            title=request.title,
            labels=dict(request.labels),
        )
        return pb.UpdateConversationResponse(conversation=conversation_pb(conversation))

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteConversationResponse:
        await self.service.delete(self._principal(), request.conversation_id, request.force)
        return pb.DeleteConversationResponse()

    # ----------------------------------------------------------------- roster

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        self._principal()
        agents = self.roster.agents()
        if request.preset:
            try:
                members = set(self.roster.preset(request.preset).agents)
            except Exception as exc:
                raise InvalidArgument.for_field("preset", str(exc)) from None
            agents = [a for a in agents if a.name in members]
        filters = {"preset": request.preset}
        cursor = decode_token(request.page_token, filters)
        start = int(cursor.after[0]) if cursor is not None else 0
        size = page_size(request.page_size)
        page = agents[start : start + size]
        token = encode_token([start + size], filters) if start + size < len(agents) else ""
        return pb.ListAgentsResponse(
            agents=[agent_pb(a, self.roster.presets_of(a.name)) for a in page],
            next_page_token=token,
        )

    async def GetAgent(
        self, request: pb.GetAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAgentResponse:
        self._principal()
        agent = self.roster.get(request.name)
        return pb.GetAgentResponse(agent=agent_pb(agent, self.roster.presets_of(agent.name)))

    async def ListTeamPresets(
        self, request: pb.ListTeamPresetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTeamPresetsResponse:
        self._principal()
        presets = sorted(self.roster.presets(), key=lambda p: p.name)
        cursor = decode_token(request.page_token, {})
        start = int(cursor.after[0]) if cursor is not None else 0
        size = page_size(request.page_size)
        token = encode_token([start + size], {}) if start + size < len(presets) else ""
        return pb.ListTeamPresetsResponse(
            presets=[preset_pb(p) for p in presets[start : start + size]], next_page_token=token
        )

    # ------------------------------------------------------------------ turns

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        page = FittingPage(message_pb, self.ctx.settings.max_message_bytes, fit_message)
        _, token = await self.service.list_messages(
            self._principal(),
            request.conversation_id,
            turn_id=request.turn_id,
            size=request.page_size,
            token=request.page_token,
            fits=page,
        )
        return pb.ListMessagesResponse(messages=page.messages, next_page_token=token)

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SendMessageResponse]:
        principal = self._principal()
        started = await self.service.send(
            principal,
            request.conversation_id,
            content=request.content,
            request_id=request.request_id,
            documents=[
                {
                    "document_id": d.document_id,
                    "title": d.title,
                    "content": d.content,
                    "source": d.source,
                }
                for d in request.documents
            ],
            on_disconnect=DISCONNECT_FROM_PB.get(request.on_disconnect, CONTINUE),
            enqueue=request.if_busy == pb.BUSY_POLICY_ENQUEUE,
            max_turns=request.max_turns,
        )
        events = self.service.follow(
            principal,
            started.conversation_id,
            after=started.after_sequence,
            turn_id=started.turn_id,
            known=True,
            subscription=started.subscription,
        )
        cancel = started.on_disconnect == CANCEL
        try:
            async with contextlib.aclosing(
                self._sent(principal, started.conversation_id, started.turn_id, events, cancel)
            ) as sent:
                async for event in sent:
                    yield pb.SendMessageResponse(event=event)
        finally:
            if started.subscription is not None:
                started.subscription.close()  # in case the stream ended before it began

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        principal = self._principal()
        follow = request.mode != pb.STREAM_EVENTS_MODE_REPLAY
        cancel = DISCONNECT_FROM_PB.get(request.on_disconnect, CONTINUE) == CANCEL
        if cancel and not (request.turn_id and follow):
            raise InvalidArgument.for_field(
                "on_disconnect", "CANCEL needs a turn_id and FOLLOW mode (it is for that turn)"
            )
        events = self.service.follow(
            principal,
            request.conversation_id,
            after=request.after_sequence,
            turn_id=request.turn_id,
            follow=follow,
        )
        async with contextlib.aclosing(
            self._sent(principal, request.conversation_id, request.turn_id, events, cancel)
        ) as sent:
            async for event in sent:
                yield pb.StreamEventsResponse(event=event)

    async def _sent(
        self,
        principal: Principal,
        conversation_id: str,
        turn_id: str,
        events: AsyncIterator[Event | None],
        cancel_on_disconnect: bool,
    ) -> AsyncGenerator[events_pb2.ConversationEvent, None]:
        """A stream's events as sent (heartbeats for None); with `cancel_on_disconnect`, the
        turn is cancelled if the stream ends before it does (its client went away)."""
        limit = self.ctx.settings.max_message_bytes
        finished = False
        try:
            async for event in events:
                if event is None:
                    yield heartbeat_pb()
                    continue
                if isinstance(event.body, TurnCompleted):
                    finished = True
                yield _fitted(event, limit)
            finished = True  # (also when the turn's end came before the stream's start)
        finally:
            # (A stopping server ends streams itself: that is no client gone.)
            if cancel_on_disconnect and not finished and not self.service.draining:
                self.service.cancel_on_disconnect(principal, conversation_id, turn_id)

    async def CancelTurn(
        self, request: pb.CancelTurnRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelTurnResponse:
        if len(request.reason) > 500:
            raise InvalidArgument.for_field("reason", "at most 500 characters")
        turn = await self.service.cancel(
            self._principal(), request.conversation_id, request.turn_id, request.reason
        )
        return pb.CancelTurnResponse(turn=turn_pb(turn))

    async def GetTurn(
        self, request: pb.GetTurnRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTurnResponse:
        turn = await self.service.get_turn(
            self._principal(), request.conversation_id, request.turn_id
        )
        return pb.GetTurnResponse(turn=turn_pb(turn))

    async def ListTurns(
        self, request: pb.ListTurnsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTurnsResponse:
        page = FittingPage(turn_pb, self.ctx.settings.max_message_bytes)
        _, token = await self.service.list_turns(
            self._principal(),
            request.conversation_id,
            status=TURN_STATUS_FROM_PB.get(request.status, ""),
            size=request.page_size,
            token=request.page_token,
            fits=page,
        )
        return pb.ListTurnsResponse(turns=page.messages, next_page_token=token)


def build(ctx: ServiceContext) -> ConversationServicer:
    settings = ctx.settings
    pool: Any = ctx.infra.pool
    keys = ctx.redis_keys
    # Blocking reads (XREAD BLOCK, pub/sub) get a client of their own without socket timeout.
    blocking = create_redis(ctx.infra.redis_url, socket_timeout=None)
    hot = ctx.infra.hot_redis
    live = RedisLiveEvents(
        ctx.infra.redis, hot, blocking, keys, window_seconds=settings.event_window_seconds
    )
    events = EventLog(live, PgDurableEvents(pool))
    store = PgConversationStore(pool)
    leases = RedisLeases(hot, keys, seconds=settings.turn_lease_seconds)
    cancels = CancelChannel(ctx.infra.redis, blocking, keys)
    tools = ctx.components.get("tools")
    if tools is None:
        tools = ctx.components["tools"] = ToolRegistry.builtin(knowledge_store=PgKnowledgeStore)
    roster = ctx.components.get("roster")
    if roster is None:
        roster = ctx.components["roster"] = Roster.load(
            split_dirs(settings.agents_dir), known_tools=tools.names()
        )

    no_guards = NoGuards()  # one, so that a team kept between turns sees the same guards

    def guards() -> Guards:
        found: Guards | None = ctx.components.get("guards")
        return found if found is not None else no_guards

    def flags() -> FeatureGate:
        found: FeatureGate | None = ctx.components.get("flags")
        return found if found is not None else AllOn()

    builder = AutogenTeamBuilder(
        roster=roster,
        tools=tools,
        settings=settings,
        flags=flags,
        guards=guards,
        components=ctx.components,
        pool=pool,
        knowledge=ctx.components.setdefault("knowledge", KnowledgeBase(PgKnowledgeStore(pool))),
    )
    runner = TurnRunner(
        store=store,
        events=events,
        leases=leases,
        builder=builder,
        guards=guards,
        config=RunnerConfig(
            coalesce_seconds=settings.token_coalesce_ms / 1000,
            lease_seconds=settings.turn_lease_seconds,
            end_retry_seconds=settings.turn_end_retry_seconds,
            endings_at_once=settings.turn_endings_at_once,
            teams_kept=settings.teams_kept,
            teams_kept_bytes=settings.teams_kept_mib << 20,
            team_idle_seconds=settings.team_idle_seconds,
            max_running_turns=settings.max_running_turns,
        ),
        principal_of=lambda tenant, name: Principal(tenant, name, frozenset({Role.MEMBER}), ""),
    )
    watch_turns(runner)
    service = ConversationService(
        store=store,
        events=events,
        runner=runner,
        leases=leases,
        roster=roster,
        guards=guards,
        publish_cancel=cancels.publish,
        config=ServiceConfig(
            heartbeat_seconds=settings.stream_heartbeat_seconds,
            lease_seconds=settings.turn_lease_seconds,
        ),
        check_model=lambda data, field: check_selection(
            selection_from_json(data) or ModelSelection(), settings, field=field
        ),
    )
    ctx.components["conversations"] = service

    async def close() -> None:
        await runner.close()
        await events.close()
        await cancels.close()
        with contextlib.suppress(Exception):
            await blocking.aclose()

    ctx.closers.append(close)
    ctx.stoppers.append(runner.close)
    ctx.starters.append(runner.start_sweeping)
    ctx.drainers.append(runner.drain)
    ctx.drainers.append(service.drain)
    return ConversationServicer(ctx, service, cancels)


FACTORIES["convergio.conversation.v1.ConversationService"] = build


def _fitted(event: Event, limit: int) -> events_pb2.ConversationEvent:
    """The event as sent: its text cut to the message limit if it would not fit."""
    body = event.body
    if type(body) is TokenDelta and surely_fits(body.text, limit):
        return event_to_pb(event)
    return fit_event(event_to_pb(event), limit)
