"""Per-method validation rules (the rules every request shares live in validation.py).

They check shape only (required fields, id syntax, ranges); whether a resource
exists is the domain's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf.message import Message

from convergio_server.api.validation import Rule, key_field, required, uuid_field
from convergio_server.domain.errors import FieldViolation

_CONV = "/convergio.conversation.v1.ConversationService/"
_FLOW = "/convergio.workflow.v1.WorkflowService/"
_APPROVAL = "/convergio.approval.v1.ApprovalService/"
_FLAG = "/convergio.flag.v1.FlagService/"


def non_negative(path: str) -> Rule:
    def rule(message: Message) -> Iterable[FieldViolation]:
        value = getattr(message, path)
        if value < 0:
            yield FieldViolation(path, f"must not be negative, got {value}")

    return rule


RULES: dict[str, Sequence[Rule]] = {
    _CONV + "GetConversation": [uuid_field("conversation_id")],
    _CONV + "UpdateConversation": [uuid_field("conversation_id")],
    _CONV + "DeleteConversation": [uuid_field("conversation_id")],
    _CONV + "GetAgent": [required("name")],
    _CONV + "ListMessages": [uuid_field("conversation_id"), uuid_field("turn_id", optional=True)],
    _CONV + "SendMessage": [uuid_field("conversation_id"), required("content")],
    _CONV + "StreamEvents": [
        uuid_field("conversation_id"),
        uuid_field("turn_id", optional=True),
        non_negative("after_sequence"),
    ],
    _CONV + "CancelTurn": [uuid_field("conversation_id"), uuid_field("turn_id", optional=True)],
    _CONV + "GetTurn": [uuid_field("conversation_id"), uuid_field("turn_id")],
    _CONV + "ListTurns": [uuid_field("conversation_id")],
    _FLOW + "GetWorkflow": [required("workflow_id")],
    _FLOW + "StartExecution": [required("workflow_id")],
    _FLOW + "GetExecution": [uuid_field("execution_id")],
    _FLOW + "CancelExecution": [uuid_field("execution_id")],
    _FLOW + "WatchExecution": [uuid_field("execution_id"), non_negative("after_sequence")],
    _APPROVAL + "ListApprovals": [
        uuid_field("conversation_id", optional=True),
        uuid_field("execution_id", optional=True),
    ],
    _APPROVAL + "GetApproval": [uuid_field("approval_id")],
    _APPROVAL + "DecideApproval": [uuid_field("approval_id"), required("decision")],
    _APPROVAL + "WatchApprovals": [
        uuid_field("conversation_id", optional=True),
        uuid_field("execution_id", optional=True),
    ],
    _FLAG + "GetFlag": [key_field("key")],
    _FLAG + "UpsertFlag": [
        required("flag"),
        key_field("flag.key"),
        non_negative("expected_version"),
    ],
    _FLAG + "DeleteFlag": [key_field("key"), non_negative("expected_version")],
    _FLAG + "EvaluateFlag": [key_field("key")],
    _FLAG + "ListFlagHistory": [key_field("key")],
    _FLAG + "WatchFlags": [key_field("keys")],
}
