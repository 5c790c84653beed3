"""Flag messages <-> the flag domain (used by FlagService and the `convergio flags` CLI)."""

from __future__ import annotations

from datetime import datetime

from convergio.flag.v1 import flag_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from convergio_server.api.timestamps import timestamp_field
from convergio_server.domain.errors import InvalidArgument
from convergio_server.domain.flags.model import (
    ChangeKind,
    ErrorCode,
    EvalContext,
    Evaluation,
    Flag,
    FlagChange,
    FlagSpec,
    Gradual,
    HistoryEntry,
    Outcome,
    Reason,
    Strategy,
    Variant,
)

_STRATEGY_TO_PB = {
    Strategy.ON: flag_pb2.FLAG_STRATEGY_ON,
    Strategy.OFF: flag_pb2.FLAG_STRATEGY_OFF,
    Strategy.PERCENTAGE: flag_pb2.FLAG_STRATEGY_PERCENTAGE,
    Strategy.CANARY: flag_pb2.FLAG_STRATEGY_CANARY,
    Strategy.GROUP_BASED: flag_pb2.FLAG_STRATEGY_GROUP_BASED,
    Strategy.WHITELIST: flag_pb2.FLAG_STRATEGY_WHITELIST,
    Strategy.GRADUAL: flag_pb2.FLAG_STRATEGY_GRADUAL,
}
_STRATEGY_FROM_PB = {v: k for k, v in _STRATEGY_TO_PB.items()}
_REASON_TO_PB = {
    Reason.STATIC: flag_pb2.EVALUATION_REASON_STATIC,
    Reason.DEFAULT: flag_pb2.EVALUATION_REASON_DEFAULT,
    Reason.TARGETING_MATCH: flag_pb2.EVALUATION_REASON_TARGETING_MATCH,
    Reason.SPLIT: flag_pb2.EVALUATION_REASON_SPLIT,
    Reason.DISABLED: flag_pb2.EVALUATION_REASON_DISABLED,
    Reason.ERROR: flag_pb2.EVALUATION_REASON_ERROR,
    Reason.STALE: flag_pb2.EVALUATION_REASON_STALE,
}
_ERROR_TO_PB = {
    ErrorCode.FLAG_NOT_FOUND: flag_pb2.EVALUATION_ERROR_CODE_FLAG_NOT_FOUND,
    ErrorCode.PARSE_ERROR: flag_pb2.EVALUATION_ERROR_CODE_PARSE_ERROR,
    ErrorCode.INVALID_CONTEXT: flag_pb2.EVALUATION_ERROR_CODE_INVALID_CONTEXT,
    ErrorCode.PROVIDER_NOT_READY: flag_pb2.EVALUATION_ERROR_CODE_PROVIDER_NOT_READY,
    ErrorCode.GENERAL: flag_pb2.EVALUATION_ERROR_CODE_GENERAL,
}
_KIND_TO_PB = {
    ChangeKind.CREATED: flag_pb2.FLAG_CHANGE_KIND_CREATED,
    ChangeKind.UPDATED: flag_pb2.FLAG_CHANGE_KIND_UPDATED,
    ChangeKind.DELETED: flag_pb2.FLAG_CHANGE_KIND_DELETED,
}
_OUTCOME_TO_PB = {
    Outcome.APPLIED: flag_pb2.FLAG_CHANGE_OUTCOME_APPLIED,
    Outcome.VERSION_CONFLICT: flag_pb2.FLAG_CHANGE_OUTCOME_VERSION_CONFLICT,
}


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def spec_to_pb(spec: FlagSpec) -> flag_pb2.Flag:
    message = flag_pb2.Flag(
        key=spec.key,
        description=spec.description,
        enabled=spec.enabled,
        strategy=_STRATEGY_TO_PB[spec.strategy],
        percentage=spec.percentage,
        groups=spec.groups,
        users=spec.users,
        variants=[flag_pb2.FlagVariant(name=v.name, weight=v.weight) for v in spec.variants],
    )
    if spec.gradual is not None:
        message.gradual.CopyFrom(
            flag_pb2.GradualRollout(
                start_time=_ts(spec.gradual.start_time),
                end_time=_ts(spec.gradual.end_time),
                target_percentage=spec.gradual.target_percentage,
            )
        )
    return message


def flag_to_pb(flag: Flag) -> flag_pb2.Flag:
    message = spec_to_pb(flag.spec)
    message.version = flag.version
    message.create_time.CopyFrom(_ts(flag.create_time))
    message.update_time.CopyFrom(_ts(flag.update_time))
    message.updated_by = flag.updated_by
    return message


def spec_from_pb(message: flag_pb2.Flag) -> FlagSpec:
    strategy = _STRATEGY_FROM_PB.get(message.strategy)
    if strategy is None:
        valid = ", ".join(n for n in flag_pb2.FlagStrategy.keys() if not n.endswith("UNSPECIFIED"))
        raise InvalidArgument.for_field("flag.strategy", f"is required: one of {valid}")
    gradual: Gradual | None = None
    if strategy is Strategy.GRADUAL:
        g = message.gradual
        start = timestamp_field(g, "start_time", "flag.gradual.start_time")
        end = timestamp_field(g, "end_time", "flag.gradual.end_time")
        if start is None:
            raise InvalidArgument.for_field("flag.gradual.start_time", "is required for GRADUAL")
        if end is None:
            raise InvalidArgument.for_field("flag.gradual.end_time", "is required for GRADUAL")
        gradual = Gradual(start, end, g.target_percentage)
    return FlagSpec(
        key=message.key,
        description=message.description,
        enabled=message.enabled,
        strategy=strategy,
        percentage=message.percentage,
        groups=tuple(message.groups),
        users=tuple(message.users),
        variants=tuple(Variant(v.name, v.weight) for v in message.variants),
        gradual=gradual,
    )


def evaluation_to_pb(result: Evaluation) -> flag_pb2.FlagEvaluation:
    return flag_pb2.FlagEvaluation(
        key=result.key,
        value=result.value,
        variant=result.variant,
        reason=_REASON_TO_PB[result.reason],
        error_code=_ERROR_TO_PB[result.error_code]
        if result.error_code
        else flag_pb2.EVALUATION_ERROR_CODE_UNSPECIFIED,
        error_message=result.error_message,
        flag_version=result.flag_version,
    )


_NO_GROUPS: frozenset[str] = frozenset()


def context_from_pb(message: flag_pb2.EvaluationContext) -> EvalContext:
    groups = message.groups
    return EvalContext(message.targeting_key, frozenset(groups) if groups else _NO_GROUPS)


def change_to_pb(change: FlagChange) -> flag_pb2.FlagChange:
    return flag_pb2.FlagChange(
        kind=_KIND_TO_PB[change.kind],
        flag=flag_to_pb(change.flag),
        actor=change.actor,
        change_time=_ts(change.change_time),
    )


def history_to_pb(key: str, entry: HistoryEntry) -> flag_pb2.FlagHistoryEntry:
    flag = spec_to_pb(entry.spec)
    flag.version = entry.version
    flag.updated_by = entry.actor
    flag.update_time.CopyFrom(_ts(entry.change_time))
    return flag_pb2.FlagHistoryEntry(
        version=entry.version,
        kind=_KIND_TO_PB[entry.kind],
        outcome=_OUTCOME_TO_PB[entry.outcome],
        flag=flag,
        expected_version=entry.expected_version,
        actor=entry.actor,
        change_time=_ts(entry.change_time),
        comment=entry.comment,
        request_id=entry.request_id,
    )
