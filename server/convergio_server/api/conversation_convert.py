"""Proto <-> domain for conversations and their events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from convergio.common.v1 import common_pb2
from convergio.conversation.v1 import conversation_pb2 as pb
from convergio.conversation.v1 import events_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as ProtoMessage

from convergio_server.domain.agents.roster import AgentSpec, TeamPreset
from convergio_server.domain.conversations.model import (
    CANCEL,
    CONTINUE,
    Conversation,
    Message,
    TeamSpec,
    Turn,
    money,
)
from convergio_server.domain.conversations.team import selection_from_json, selection_to_json
from convergio_server.domain.errors import InvalidArgument
from convergio_server.domain.events.model import (
    Event,
    EventBody,
    TokenDelta,
    Usage,
    body_dict,
    event_time_micros,
)
from convergio_server.domain.models.selection import ModelInfoOverride, ModelSelection

# Proto enum type name -> the prefix of its value names.
_ENUM_PREFIX = {
    "StopReason": "STOP_REASON_",
    "MessageRole": "MESSAGE_ROLE_",
    "ToolErrorKind": "TOOL_ERROR_KIND_",
    "RiskLevel": "RISK_LEVEL_",
    "ErrorReason": "ERROR_REASON_",
    "ApprovalStatus": "APPROVAL_STATUS_",
    "BudgetScope": "BUDGET_SCOPE_",
    "BudgetPeriod": "BUDGET_PERIOD_",
    "ScreeningCategory": "SCREENING_CATEGORY_",
}
# Domain event kinds whose proto field name differs.
_ONEOF_FIELD = {"error": "error"}


def _fill(target: ProtoMessage, values: dict[str, Any]) -> None:
    fields = target.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        fd: Any = fields.get(name)  # the descriptor stubs are too loose to narrow
        if fd is None or value is None:
            continue
        if fd.type == FieldDescriptor.TYPE_ENUM:
            prefix = _ENUM_PREFIX.get(fd.enum_type.name, "")
            number = fd.enum_type.values_by_name.get(prefix + str(value))
            setattr(target, name, number.number if number is not None else 0)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            sub_name = fd.message_type.full_name
            if fd.message_type.GetOptions().map_entry:
                getattr(target, name).update(value)
            elif fd.label == FieldDescriptor.LABEL_REPEATED:
                for item in value:
                    _fill(getattr(target, name).add(), item)
            elif sub_name == "google.protobuf.Duration":
                if value:
                    getattr(target, name).FromNanoseconds(int(float(value) * 1e9))
            elif sub_name == "google.protobuf.Timestamp":
                if value:
                    getattr(target, name).FromDatetime(datetime.fromtimestamp(float(value), UTC))
            else:
                _fill(getattr(target, name), value)
        elif fd.label == FieldDescriptor.LABEL_REPEATED:
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)


def event_to_pb(event: Event) -> events_pb2.ConversationEvent:
    out = events_pb2.ConversationEvent(
        conversation_id=event.conversation_id,
        turn_id=event.turn_id,
        sequence=event.sequence,
    )
    micros = event_time_micros(event.event_time)
    out.event_time.seconds, out.event_time.nanos = micros // 1_000_000, micros % 1_000_000 * 1000
    body: EventBody = event.body
    if isinstance(body, TokenDelta):  # the hot path
        delta = out.token_delta
        delta.message_id, delta.agent, delta.text = body.message_id, body.agent, body.text
        return out
    field = _ONEOF_FIELD.get(body.KIND, body.KIND)
    _fill(getattr(out, field), body_dict(body))
    getattr(out, field).SetInParent()
    return out


def heartbeat_pb() -> events_pb2.ConversationEvent:
    out = events_pb2.ConversationEvent()
    out.heartbeat.SetInParent()
    return out


def usage_pb(usage: Usage | None) -> common_pb2.Usage:
    if usage is None:
        return common_pb2.Usage()
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        model_calls=usage.model_calls,
    )


_PROVIDER_TO_PB = {
    "offline": common_pb2.MODEL_PROVIDER_OFFLINE,
    "openai": common_pb2.MODEL_PROVIDER_OPENAI,
}


def selection_pb(data: dict[str, Any]) -> common_pb2.ModelSelection:
    selection = selection_from_json(data)
    out = common_pb2.ModelSelection()
    if selection is None:
        return out
    out.provider = _PROVIDER_TO_PB.get(selection.provider, common_pb2.MODEL_PROVIDER_UNSPECIFIED)
    out.model = selection.model
    if selection.temperature is not None:
        out.temperature = selection.temperature
    out.max_output_tokens = selection.max_output_tokens
    if selection.base_url or selection.api_key_ref or selection.timeout_seconds:
        out.endpoint.base_url = selection.base_url
        out.endpoint.api_key_ref = selection.api_key_ref
        if selection.timeout_seconds:
            out.endpoint.timeout.FromNanoseconds(int(selection.timeout_seconds * 1e9))
    if selection.model_info is not None:
        info = selection.model_info
        out.endpoint.model_info.function_calling = info.function_calling
        out.endpoint.model_info.vision = info.vision
        out.endpoint.model_info.json_output = info.json_output
        out.endpoint.model_info.structured_output = info.structured_output
        out.endpoint.model_info.family = info.family
        out.endpoint.model_info.context_window_tokens = info.context_window_tokens
    return out


def selection_from_pb(message: common_pb2.ModelSelection) -> dict[str, Any]:
    if message.ByteSize() == 0:
        return {}
    provider = {
        common_pb2.MODEL_PROVIDER_OFFLINE: "offline",
        common_pb2.MODEL_PROVIDER_OPENAI: "openai",
    }.get(message.provider, "")
    endpoint = message.endpoint
    info = None
    if endpoint.HasField("model_info"):
        mi = endpoint.model_info
        info = ModelInfoOverride(
            mi.function_calling,
            mi.vision,
            mi.json_output,
            mi.structured_output,
            mi.family,
            mi.context_window_tokens,
        )
    selection = ModelSelection(
        provider=provider,  # type: ignore[arg-type]
        model=message.model,
        base_url=endpoint.base_url,
        api_key_ref=endpoint.api_key_ref,
        timeout_seconds=(
            endpoint.timeout.ToNanoseconds() / 1e9 if endpoint.HasField("timeout") else None
        ),
        model_info=info,
        temperature=message.temperature if message.HasField("temperature") else None,
        max_output_tokens=message.max_output_tokens,
    )
    return selection_to_json(selection)


def team_from_pb(team: pb.Team) -> TeamSpec:
    # A member field set but empty is a caller's mistake, not a request for the default team.
    which = team.WhichOneof("members")
    if which == "agents":
        if not team.agents.names:
            raise InvalidArgument.for_field(
                "team.agents.names", "must hold 1 to 20 distinct agent names (see ListAgents)"
            )
        return TeamSpec(agents=tuple(team.agents.names))
    if which == "single_agent":
        if not team.single_agent:
            raise InvalidArgument.for_field(
                "team.single_agent", "is empty: name an agent (see ListAgents)"
            )
        return TeamSpec(single_agent=team.single_agent)
    if which == "preset":
        if not team.preset:
            raise InvalidArgument.for_field(
                "team.preset", "is empty: name a preset (see ListTeamPresets)"
            )
        return TeamSpec(preset=team.preset)
    return TeamSpec(preset="core")


def team_pb(team: TeamSpec) -> pb.Team:
    if team.single_agent:
        return pb.Team(single_agent=team.single_agent)
    if team.agents:
        return pb.Team(agents=pb.AgentNames(names=list(team.agents)))
    return pb.Team(preset=team.preset or "core")


def _ts(target: Any, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)


_CONVERSATION_STATUS = {
    "IDLE": pb.CONVERSATION_STATUS_IDLE,
    "RUNNING": pb.CONVERSATION_STATUS_RUNNING,
    "WAITING_FOR_APPROVAL": pb.CONVERSATION_STATUS_WAITING_FOR_APPROVAL,
}
CONVERSATION_STATUS_FROM_PB = {v: k for k, v in _CONVERSATION_STATUS.items()}
_TURN_STATUS = {
    "QUEUED": pb.TURN_STATUS_QUEUED,
    "RUNNING": pb.TURN_STATUS_RUNNING,
    "WAITING_FOR_APPROVAL": pb.TURN_STATUS_WAITING_FOR_APPROVAL,
    "ENDED": pb.TURN_STATUS_ENDED,
}
TURN_STATUS_FROM_PB = {v: k for k, v in _TURN_STATUS.items()}
_DISCONNECT = {CONTINUE: pb.DISCONNECT_POLICY_CONTINUE, CANCEL: pb.DISCONNECT_POLICY_CANCEL}
DISCONNECT_FROM_PB = {pb.DISCONNECT_POLICY_CANCEL: CANCEL}


def conversation_pb(c: Conversation) -> pb.Conversation:
    out = pb.Conversation(
        conversation_id=c.id,
        title=c.title,
        status=_CONVERSATION_STATUS[c.status],
        team=team_pb(c.team),
        participants=c.participants,
        model=selection_pb(c.model),
        max_turns_per_message=c.max_turns_per_message,
        speaker_policy=c.speaker_policy,
        labels=c.labels,
        created_by=c.created_by,
        turn_count=c.turn_count,
        message_count=c.message_count,
        last_sequence=c.last_sequence,
        active_turn_id=c.active_turn_id,
        queued_turn_count=c.queued_turn_count,
        usage=usage_pb(c.usage),
        cost_usd=money(c.cost_usd),
    )
    for name, selection in c.agent_models.items():
        out.agent_models[name].CopyFrom(selection_pb(selection))
    _ts(out.create_time, c.create_time)
    _ts(out.update_time, c.update_time)
    out.turn_timeout.FromNanoseconds(int(c.turn_timeout_seconds * 1e9))
    return out


def turn_pb(t: Turn) -> pb.Turn:
    out = pb.Turn(
        turn_id=t.id,
        conversation_id=t.conversation_id,
        request_id=t.request_id,
        status=_TURN_STATUS[t.status],
        stop_detail=t.stop_detail,
        user_message_id=t.user_message_id,
        message_count=t.message_count,
        usage=usage_pb(t.usage),
        cost_usd=money(t.cost_usd),
        created_by=t.created_by,
        on_disconnect=_DISCONNECT.get(t.options.on_disconnect, pb.DISCONNECT_POLICY_CONTINUE),
        first_sequence=t.first_sequence,
        last_sequence=t.last_sequence,
    )
    if t.stop_reason:
        out.stop_reason = events_pb2.StopReason.Value("STOP_REASON_" + t.stop_reason)
    if t.error:
        _fill(out.error, t.error)
    _ts(out.create_time, t.create_time)
    _ts(out.start_time, t.start_time)
    _ts(out.end_time, t.end_time)
    return out


def message_pb(m: Message) -> pb.Message:
    out = pb.Message(
        message_id=m.id,
        conversation_id=m.conversation_id,
        turn_id=m.turn_id,
        role=events_pb2.MessageRole.Value("MESSAGE_ROLE_" + m.role),
        source=m.source,
        content=m.content,
        model=m.model,
        cost_usd="" if m.cost_usd is None else money(m.cost_usd),
    )
    if m.usage is not None:
        out.usage.CopyFrom(usage_pb(m.usage))
    _ts(out.create_time, m.create_time)
    return out


def agent_pb(a: AgentSpec, presets: list[str]) -> pb.Agent:
    out = pb.Agent(
        name=a.name,
        display_name=a.display_name,
        role=a.role,
        description=a.description,
        expertise=list(a.expertise),
        category=a.category,
        tools=list(a.tools),
        priority=a.priority,
        presets=presets,
    )
    if a.default_model is not None:
        out.default_model.CopyFrom(selection_pb(selection_to_json(a.default_model)))
    return out


def preset_pb(p: TeamPreset) -> pb.TeamPreset:
    return pb.TeamPreset(name=p.name, description=p.description, agents=list(p.agents))
