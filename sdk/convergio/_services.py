"""Typed facades of the Convergio services. Generated from proto/ by `make gen`
(tools/gen_facade.py); do not edit.

Every method takes either the request message or its fields as keyword
arguments (None leaves a field unset; a field named like a keyword argument of
the method itself gets a trailing underscore), plus `timeout` (seconds) and
`metadata`. Errors are raised as `convergio.errors.ConvergioError` subclasses.
"""

# The deadline is a per-call argument, as in grpc itself.
# ruff: noqa: ASYNC109

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2

from convergio import _runtime
from convergio.approval.v1 import approval_pb2 as _approval_pb2
from convergio.common.v1 import common_pb2 as _common_pb2
from convergio.conversation.v1 import conversation_pb2 as _conversation_pb2
from convergio.cost.v1 import cost_pb2 as _cost_pb2
from convergio.flag.v1 import flag_pb2 as _flag_pb2
from convergio.workflow.v1 import workflow_pb2 as _workflow_pb2

__all__ = [
    "ApprovalService",
    "ApprovalServiceMethods",
    "AsyncApprovalService",
    "AsyncConversationService",
    "AsyncCostService",
    "AsyncFlagService",
    "AsyncServices",
    "AsyncWorkflowService",
    "ConversationService",
    "ConversationServiceMethods",
    "CostService",
    "CostServiceMethods",
    "FlagService",
    "FlagServiceMethods",
    "Services",
    "WorkflowService",
    "WorkflowServiceMethods",
]


class ApprovalServiceMethods:
    """The RPCs of convergio.approval.v1.ApprovalService."""

    LIST_APPROVALS = _runtime.Method(
        "/convergio.approval.v1.ApprovalService/ListApprovals",
        _approval_pb2.ListApprovalsRequest,
        _approval_pb2.ListApprovalsResponse,
        idempotent=True,
    )

    GET_APPROVAL = _runtime.Method(
        "/convergio.approval.v1.ApprovalService/GetApproval",
        _approval_pb2.GetApprovalRequest,
        _approval_pb2.GetApprovalResponse,
        idempotent=True,
    )

    DECIDE_APPROVAL = _runtime.Method(
        "/convergio.approval.v1.ApprovalService/DecideApproval",
        _approval_pb2.DecideApprovalRequest,
        _approval_pb2.DecideApprovalResponse,
        idempotent=True,
    )

    WATCH_APPROVALS = _runtime.Method(
        "/convergio.approval.v1.ApprovalService/WatchApprovals",
        _approval_pb2.WatchApprovalsRequest,
        _approval_pb2.WatchApprovalsResponse,
        idempotent=True,
    )


class ConversationServiceMethods:
    """The RPCs of convergio.conversation.v1.ConversationService."""

    CREATE_CONVERSATION = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/CreateConversation",
        _conversation_pb2.CreateConversationRequest,
        _conversation_pb2.CreateConversationResponse,
        idempotent=True,
    )

    GET_CONVERSATION = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/GetConversation",
        _conversation_pb2.GetConversationRequest,
        _conversation_pb2.GetConversationResponse,
        idempotent=True,
    )

    LIST_CONVERSATIONS = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/ListConversations",
        _conversation_pb2.ListConversationsRequest,
        _conversation_pb2.ListConversationsResponse,
        idempotent=True,
    )

    UPDATE_CONVERSATION = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/UpdateConversation",
        _conversation_pb2.UpdateConversationRequest,
        _conversation_pb2.UpdateConversationResponse,
        idempotent=True,
    )

    DELETE_CONVERSATION = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/DeleteConversation",
        _conversation_pb2.DeleteConversationRequest,
        _conversation_pb2.DeleteConversationResponse,
        idempotent=True,
    )

    LIST_AGENTS = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/ListAgents",
        _conversation_pb2.ListAgentsRequest,
        _conversation_pb2.ListAgentsResponse,
        idempotent=True,
    )

    GET_AGENT = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/GetAgent",
        _conversation_pb2.GetAgentRequest,
        _conversation_pb2.GetAgentResponse,
        idempotent=True,
    )

    LIST_TEAM_PRESETS = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/ListTeamPresets",
        _conversation_pb2.ListTeamPresetsRequest,
        _conversation_pb2.ListTeamPresetsResponse,
        idempotent=True,
    )

    LIST_MESSAGES = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/ListMessages",
        _conversation_pb2.ListMessagesRequest,
        _conversation_pb2.ListMessagesResponse,
        idempotent=True,
    )

    SEND_MESSAGE = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/SendMessage",
        _conversation_pb2.SendMessageRequest,
        _conversation_pb2.SendMessageResponse,
        idempotent=True,
    )

    STREAM_EVENTS = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/StreamEvents",
        _conversation_pb2.StreamEventsRequest,
        _conversation_pb2.StreamEventsResponse,
        idempotent=True,
    )

    CANCEL_TURN = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/CancelTurn",
        _conversation_pb2.CancelTurnRequest,
        _conversation_pb2.CancelTurnResponse,
        idempotent=True,
    )

    GET_TURN = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/GetTurn",
        _conversation_pb2.GetTurnRequest,
        _conversation_pb2.GetTurnResponse,
        idempotent=True,
    )

    LIST_TURNS = _runtime.Method(
        "/convergio.conversation.v1.ConversationService/ListTurns",
        _conversation_pb2.ListTurnsRequest,
        _conversation_pb2.ListTurnsResponse,
        idempotent=True,
    )


class CostServiceMethods:
    """The RPCs of convergio.cost.v1.CostService."""

    GET_COST_SUMMARY = _runtime.Method(
        "/convergio.cost.v1.CostService/GetCostSummary",
        _cost_pb2.GetCostSummaryRequest,
        _cost_pb2.GetCostSummaryResponse,
        idempotent=True,
    )

    LIST_LEDGER_ENTRIES = _runtime.Method(
        "/convergio.cost.v1.CostService/ListLedgerEntries",
        _cost_pb2.ListLedgerEntriesRequest,
        _cost_pb2.ListLedgerEntriesResponse,
        idempotent=True,
    )

    GET_BUDGET = _runtime.Method(
        "/convergio.cost.v1.CostService/GetBudget",
        _cost_pb2.GetBudgetRequest,
        _cost_pb2.GetBudgetResponse,
        idempotent=True,
    )

    LIST_BUDGETS = _runtime.Method(
        "/convergio.cost.v1.CostService/ListBudgets",
        _cost_pb2.ListBudgetsRequest,
        _cost_pb2.ListBudgetsResponse,
        idempotent=True,
    )

    SET_BUDGET = _runtime.Method(
        "/convergio.cost.v1.CostService/SetBudget",
        _cost_pb2.SetBudgetRequest,
        _cost_pb2.SetBudgetResponse,
        idempotent=True,
    )

    DELETE_BUDGET = _runtime.Method(
        "/convergio.cost.v1.CostService/DeleteBudget",
        _cost_pb2.DeleteBudgetRequest,
        _cost_pb2.DeleteBudgetResponse,
        idempotent=True,
    )

    GET_CIRCUIT_BREAKER = _runtime.Method(
        "/convergio.cost.v1.CostService/GetCircuitBreaker",
        _cost_pb2.GetCircuitBreakerRequest,
        _cost_pb2.GetCircuitBreakerResponse,
        idempotent=True,
    )

    LIST_CIRCUIT_BREAKERS = _runtime.Method(
        "/convergio.cost.v1.CostService/ListCircuitBreakers",
        _cost_pb2.ListCircuitBreakersRequest,
        _cost_pb2.ListCircuitBreakersResponse,
        idempotent=True,
    )

    RESET_CIRCUIT_BREAKER = _runtime.Method(
        "/convergio.cost.v1.CostService/ResetCircuitBreaker",
        _cost_pb2.ResetCircuitBreakerRequest,
        _cost_pb2.ResetCircuitBreakerResponse,
        idempotent=True,
    )

    GET_RATE_LIMIT_STATUS = _runtime.Method(
        "/convergio.cost.v1.CostService/GetRateLimitStatus",
        _cost_pb2.GetRateLimitStatusRequest,
        _cost_pb2.GetRateLimitStatusResponse,
        idempotent=True,
    )


class FlagServiceMethods:
    """The RPCs of convergio.flag.v1.FlagService."""

    LIST_FLAGS = _runtime.Method(
        "/convergio.flag.v1.FlagService/ListFlags",
        _flag_pb2.ListFlagsRequest,
        _flag_pb2.ListFlagsResponse,
        idempotent=True,
    )

    GET_FLAG = _runtime.Method(
        "/convergio.flag.v1.FlagService/GetFlag",
        _flag_pb2.GetFlagRequest,
        _flag_pb2.GetFlagResponse,
        idempotent=True,
    )

    UPSERT_FLAG = _runtime.Method(
        "/convergio.flag.v1.FlagService/UpsertFlag",
        _flag_pb2.UpsertFlagRequest,
        _flag_pb2.UpsertFlagResponse,
        idempotent=True,
    )

    DELETE_FLAG = _runtime.Method(
        "/convergio.flag.v1.FlagService/DeleteFlag",
        _flag_pb2.DeleteFlagRequest,
        _flag_pb2.DeleteFlagResponse,
        idempotent=True,
    )

    DISABLE_ALL_FLAGS = _runtime.Method(
        "/convergio.flag.v1.FlagService/DisableAllFlags",
        _flag_pb2.DisableAllFlagsRequest,
        _flag_pb2.DisableAllFlagsResponse,
        idempotent=True,
    )

    EVALUATE_FLAG = _runtime.Method(
        "/convergio.flag.v1.FlagService/EvaluateFlag",
        _flag_pb2.EvaluateFlagRequest,
        _flag_pb2.EvaluateFlagResponse,
        idempotent=True,
    )

    EVALUATE_ALL_FLAGS = _runtime.Method(
        "/convergio.flag.v1.FlagService/EvaluateAllFlags",
        _flag_pb2.EvaluateAllFlagsRequest,
        _flag_pb2.EvaluateAllFlagsResponse,
        idempotent=True,
    )

    WATCH_FLAGS = _runtime.Method(
        "/convergio.flag.v1.FlagService/WatchFlags",
        _flag_pb2.WatchFlagsRequest,
        _flag_pb2.WatchFlagsResponse,
        idempotent=True,
    )

    LIST_FLAG_HISTORY = _runtime.Method(
        "/convergio.flag.v1.FlagService/ListFlagHistory",
        _flag_pb2.ListFlagHistoryRequest,
        _flag_pb2.ListFlagHistoryResponse,
        idempotent=True,
    )


class WorkflowServiceMethods:
    """The RPCs of convergio.workflow.v1.WorkflowService."""

    LIST_WORKFLOWS = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/ListWorkflows",
        _workflow_pb2.ListWorkflowsRequest,
        _workflow_pb2.ListWorkflowsResponse,
        idempotent=True,
    )

    GET_WORKFLOW = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/GetWorkflow",
        _workflow_pb2.GetWorkflowRequest,
        _workflow_pb2.GetWorkflowResponse,
        idempotent=True,
    )

    START_EXECUTION = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/StartExecution",
        _workflow_pb2.StartExecutionRequest,
        _workflow_pb2.StartExecutionResponse,
        idempotent=True,
    )

    GET_EXECUTION = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/GetExecution",
        _workflow_pb2.GetExecutionRequest,
        _workflow_pb2.GetExecutionResponse,
        idempotent=True,
    )

    LIST_EXECUTIONS = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/ListExecutions",
        _workflow_pb2.ListExecutionsRequest,
        _workflow_pb2.ListExecutionsResponse,
        idempotent=True,
    )

    CANCEL_EXECUTION = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/CancelExecution",
        _workflow_pb2.CancelExecutionRequest,
        _workflow_pb2.CancelExecutionResponse,
        idempotent=True,
    )

    WATCH_EXECUTION = _runtime.Method(
        "/convergio.workflow.v1.WorkflowService/WatchExecution",
        _workflow_pb2.WatchExecutionRequest,
        _workflow_pb2.WatchExecutionResponse,
        idempotent=True,
    )


class AsyncApprovalService:
    """Human approval of risky actions. When an agent wants to run a HIGH or
    CRITICAL risk tool call, or a workflow reaches a step with an approval
    gate, the server creates a pending Approval and the turn or execution waits
    durably (it survives server restarts) until an approver decides or the
    approval expires. An expired approval counts as a denial.
    """

    def __init__(self, invoker: _runtime.AsyncInvoker) -> None:
        self._invoker = invoker

    async def list_approvals(
        self,
        request: _approval_pb2.ListApprovalsRequest | None = None,
        /,
        *,
        status: _approval_pb2.ApprovalStatus.ValueType | None = None,
        min_risk_level: _common_pb2.RiskLevel.ValueType | None = None,
        conversation_id: str | None = None,
        execution_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _approval_pb2.ListApprovalsResponse:
        """Lists approvals, newest first. Role: approver, or member (a member sees
        the approvals of the conversations and executions of the tenant).
        INVALID_ARGUMENT for a bad page_size or page_token.
        """
        return await self._invoker.unary(
            ApprovalServiceMethods.LIST_APPROVALS,
            _runtime.build_request(
                _approval_pb2.ListApprovalsRequest,
                request,
                {
                    "status": status,
                    "min_risk_level": min_risk_level,
                    "conversation_id": conversation_id,
                    "execution_id": execution_id,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_approval(
        self,
        request: _approval_pb2.GetApprovalRequest | None = None,
        /,
        *,
        approval_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _approval_pb2.GetApprovalResponse:
        """Gets one approval with its audit trail. Role: approver or member.
        NOT_FOUND if the approval does not exist.
        """
        return await self._invoker.unary(
            ApprovalServiceMethods.GET_APPROVAL,
            _runtime.build_request(
                _approval_pb2.GetApprovalRequest, request, {"approval_id": approval_id}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def decide_approval(
        self,
        request: _approval_pb2.DecideApprovalRequest | None = None,
        /,
        *,
        approval_id: str | None = None,
        request_id: str | None = None,
        decision: _approval_pb2.Decision.ValueType | None = None,
        comment: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _approval_pb2.DecideApprovalResponse:
        """Approves or denies a pending approval; the waiting turn or execution
        resumes at once. Role: approver. NOT_FOUND if the approval does not exist;
        FAILED_PRECONDITION if it is no longer pending (already decided, expired
        or cancelled; the attempt is still written to the audit trail);
        INVALID_ARGUMENT if decision is unset or comment is too long. A repeated
        request_id returns the first result.
        """
        return await self._invoker.unary(
            ApprovalServiceMethods.DECIDE_APPROVAL,
            _runtime.build_request(
                _approval_pb2.DecideApprovalRequest,
                request,
                {
                    "approval_id": approval_id,
                    "request_id": request_id,
                    "decision": decision,
                    "comment": comment,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def watch_approvals(
        self,
        request: _approval_pb2.WatchApprovalsRequest | None = None,
        /,
        *,
        min_risk_level: _common_pb2.RiskLevel.ValueType | None = None,
        conversation_id: str | None = None,
        execution_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.AsyncStream[_approval_pb2.WatchApprovalsResponse]:
        """Watches approvals: first a snapshot of the pending approvals that match
        the filters, then every change (created, decided, expired, cancelled) of a
        matching approval as it happens. The stream does not end by itself. There
        is no resume position: a client that reconnects gets a fresh snapshot.
        Role: approver or member.
        """
        return self._invoker.stream(
            ApprovalServiceMethods.WATCH_APPROVALS,
            _runtime.build_request(
                _approval_pb2.WatchApprovalsRequest,
                request,
                {
                    "min_risk_level": min_risk_level,
                    "conversation_id": conversation_id,
                    "execution_id": execution_id,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )


class ApprovalService:
    """Human approval of risky actions. When an agent wants to run a HIGH or
    CRITICAL risk tool call, or a workflow reaches a step with an approval
    gate, the server creates a pending Approval and the turn or execution waits
    durably (it survives server restarts) until an approver decides or the
    approval expires. An expired approval counts as a denial.
    """

    def __init__(self, invoker: _runtime.Invoker) -> None:
        self._invoker = invoker

    def list_approvals(
        self,
        request: _approval_pb2.ListApprovalsRequest | None = None,
        /,
        *,
        status: _approval_pb2.ApprovalStatus.ValueType | None = None,
        min_risk_level: _common_pb2.RiskLevel.ValueType | None = None,
        conversation_id: str | None = None,
        execution_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _approval_pb2.ListApprovalsResponse:
        """Lists approvals, newest first. Role: approver, or member (a member sees
        the approvals of the conversations and executions of the tenant).
        INVALID_ARGUMENT for a bad page_size or page_token.
        """
        return self._invoker.unary(
            ApprovalServiceMethods.LIST_APPROVALS,
            _runtime.build_request(
                _approval_pb2.ListApprovalsRequest,
                request,
                {
                    "status": status,
                    "min_risk_level": min_risk_level,
                    "conversation_id": conversation_id,
                    "execution_id": execution_id,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_approval(
        self,
        request: _approval_pb2.GetApprovalRequest | None = None,
        /,
        *,
        approval_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _approval_pb2.GetApprovalResponse:
        """Gets one approval with its audit trail. Role: approver or member.
        NOT_FOUND if the approval does not exist.
        """
        return self._invoker.unary(
            ApprovalServiceMethods.GET_APPROVAL,
            _runtime.build_request(
                _approval_pb2.GetApprovalRequest, request, {"approval_id": approval_id}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def decide_approval(
        self,
        request: _approval_pb2.DecideApprovalRequest | None = None,
        /,
        *,
        approval_id: str | None = None,
        request_id: str | None = None,
        decision: _approval_pb2.Decision.ValueType | None = None,
        comment: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _approval_pb2.DecideApprovalResponse:
        """Approves or denies a pending approval; the waiting turn or execution
        resumes at once. Role: approver. NOT_FOUND if the approval does not exist;
        FAILED_PRECONDITION if it is no longer pending (already decided, expired
        or cancelled; the attempt is still written to the audit trail);
        INVALID_ARGUMENT if decision is unset or comment is too long. A repeated
        request_id returns the first result.
        """
        return self._invoker.unary(
            ApprovalServiceMethods.DECIDE_APPROVAL,
            _runtime.build_request(
                _approval_pb2.DecideApprovalRequest,
                request,
                {
                    "approval_id": approval_id,
                    "request_id": request_id,
                    "decision": decision,
                    "comment": comment,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def watch_approvals(
        self,
        request: _approval_pb2.WatchApprovalsRequest | None = None,
        /,
        *,
        min_risk_level: _common_pb2.RiskLevel.ValueType | None = None,
        conversation_id: str | None = None,
        execution_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.Stream[_approval_pb2.WatchApprovalsResponse]:
        """Watches approvals: first a snapshot of the pending approvals that match
        the filters, then every change (created, decided, expired, cancelled) of a
        matching approval as it happens. The stream does not end by itself. There
        is no resume position: a client that reconnects gets a fresh snapshot.
        Role: approver or member.
        """
        return self._invoker.stream(
            ApprovalServiceMethods.WATCH_APPROVALS,
            _runtime.build_request(
                _approval_pb2.WatchApprovalsRequest,
                request,
                {
                    "min_risk_level": min_risk_level,
                    "conversation_id": conversation_id,
                    "execution_id": execution_id,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )


class AsyncConversationService:
    """Conversations with a team of specialist agents (or a single agent).

    A client creates a conversation, then sends messages. Each message starts a
    turn: the team answers, and SendMessage streams the turn's events (tokens,
    speaker choices, tool calls, costs) as they happen. The turn runs in a task
    the server owns, not in the client's call, so by default a client that
    disconnects loses nothing: it re-attaches with StreamEvents and resumes
    after the last sequence number it saw.

    Conversations belong to the tenant of the API key; every principal of the
    tenant with the member role can use them.
    """

    def __init__(self, invoker: _runtime.AsyncInvoker) -> None:
        self._invoker = invoker

    async def create_conversation(
        self,
        request: _conversation_pb2.CreateConversationRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        title: str | None = None,
        labels: Mapping[str, str] | None = None,
        team: _conversation_pb2.Team | None = None,
        model: _common_pb2.ModelSelection | None = None,
        agent_models: Mapping[str, _common_pb2.ModelSelection] | None = None,
        max_turns_per_message: int | None = None,
        speaker_policy: str | None = None,
        turn_timeout: _duration_pb2.Duration | datetime.timedelta | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.CreateConversationResponse:
        """Creates a conversation. Role: member. INVALID_ARGUMENT for an unknown
        preset, a bad label or a bad model selection; NOT_FOUND for an unknown
        agent name; RESOURCE_EXHAUSTED (RATE_LIMITED) when the caller created too
        many conversations in the last hour (default 20). A repeated request_id
        returns the conversation created by the first call (FAILED_PRECONDITION if
        that conversation was deleted since; INVALID_ARGUMENT for a different body).
        """
        return await self._invoker.unary(
            ConversationServiceMethods.CREATE_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.CreateConversationRequest,
                request,
                {
                    "request_id": request_id,
                    "title": title,
                    "labels": labels,
                    "team": team,
                    "model": model,
                    "agent_models": agent_models,
                    "max_turns_per_message": max_turns_per_message,
                    "speaker_policy": speaker_policy,
                    "turn_timeout": turn_timeout,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_conversation(
        self,
        request: _conversation_pb2.GetConversationRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.GetConversationResponse:
        """Gets a conversation. Role: member. NOT_FOUND if the conversation does not
        exist.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.GET_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.GetConversationRequest,
                request,
                {"conversation_id": conversation_id},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_conversations(
        self,
        request: _conversation_pb2.ListConversationsRequest | None = None,
        /,
        *,
        status: _conversation_pb2.ConversationStatus.ValueType | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListConversationsResponse:
        """Lists conversations, most recently updated first. Role: member.
        INVALID_ARGUMENT for a bad page_size, page_token or label filter.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.LIST_CONVERSATIONS,
            _runtime.build_request(
                _conversation_pb2.ListConversationsRequest,
                request,
                {
                    "status": status,
                    "labels": labels,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def update_conversation(
        self,
        request: _conversation_pb2.UpdateConversationRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        title: str | None = None,
        labels: Mapping[str, str] | None = None,
        update_mask: _field_mask_pb2.FieldMask | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.UpdateConversationResponse:
        """Changes a conversation's title or labels: only the fields named in
        update_mask ("title", "labels"; labels are replaced as a whole). Role:
        member. INVALID_ARGUMENT for an empty mask, an unknown path, a title over
        500 characters or a bad label; NOT_FOUND if the conversation does not
        exist. The conversation's update_time moves, so it lists first.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.UPDATE_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.UpdateConversationRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "title": title,
                    "labels": labels,
                    "update_mask": update_mask,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def delete_conversation(
        self,
        request: _conversation_pb2.DeleteConversationRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        force: bool | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.DeleteConversationResponse:
        """Deletes a conversation with its transcript, turns, saved team state and
        event log (cost ledger entries are kept). Role: member. NOT_FOUND if the
        conversation does not exist (a retried delete may see this);
        FAILED_PRECONDITION if a turn is running or queued and force is false.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.DELETE_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.DeleteConversationRequest,
                request,
                {"conversation_id": conversation_id, "force": force},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_agents(
        self,
        request: _conversation_pb2.ListAgentsRequest | None = None,
        /,
        *,
        preset: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListAgentsResponse:
        """Lists the agent roster of the tenant (built-in specialists plus the ones
        the deployment adds), by priority then name. Role: member.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.LIST_AGENTS,
            _runtime.build_request(
                _conversation_pb2.ListAgentsRequest,
                request,
                {"preset": preset, "page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_agent(
        self,
        request: _conversation_pb2.GetAgentRequest | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.GetAgentResponse:
        """Gets one agent of the roster. Role: member. NOT_FOUND if no agent has
        that name.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.GET_AGENT,
            _runtime.build_request(_conversation_pb2.GetAgentRequest, request, {"name": name}),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_team_presets(
        self,
        request: _conversation_pb2.ListTeamPresetsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListTeamPresetsResponse:
        """Lists the team presets that CreateConversation accepts (e.g. "core",
        "finance"), by name. Role: member.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.LIST_TEAM_PRESETS,
            _runtime.build_request(
                _conversation_pb2.ListTeamPresetsRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_messages(
        self,
        request: _conversation_pb2.ListMessagesRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        turn_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListMessagesResponse:
        """Lists the transcript of a conversation, oldest first: the users'
        messages and every agent's completed message. Role: member. NOT_FOUND if
        the conversation does not exist.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.LIST_MESSAGES,
            _runtime.build_request(
                _conversation_pb2.ListMessagesRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "turn_id": turn_id,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def send_message(
        self,
        request: _conversation_pb2.SendMessageRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        request_id: str | None = None,
        content: str | None = None,
        documents: Sequence[_conversation_pb2.InputDocument] | None = None,
        on_disconnect: _conversation_pb2.DisconnectPolicy.ValueType | None = None,
        if_busy: _conversation_pb2.BusyPolicy.ValueType | None = None,
        max_turns: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.AsyncStream[_conversation_pb2.SendMessageResponse]:
        """Sends a user message and streams the events of the turn it starts.

        The first event is TurnStarted (or TurnQueued when the request asked to
        enqueue behind a running turn); the last event is always TurnCompleted,
        which says how the turn ended, even after an Error event. After it the
        server ends the stream with status OK. The stream carries the events of
        this turn only.

        Problems found before the turn is accepted end the call with an error
        status and no event: NOT_FOUND (conversation), INVALID_ARGUMENT (empty
        content, bad document), INVALID_ARGUMENT with PAYLOAD_TOO_LARGE (content
        or documents over their limits), INVALID_ARGUMENT with INPUT_BLOCKED
        (screening), FAILED_PRECONDITION (a turn is running and if_busy is
        REJECT), RESOURCE_EXHAUSTED with RATE_LIMITED (turns per minute, default
        10) or BUDGET_EXHAUSTED, UNAVAILABLE with CIRCUIT_OPEN, UNAVAILABLE with
        SERVER_BUSY (the server process runs its limit of turns at once; retry
        after the RetryInfo delay, here or on another process). Problems during the
        turn (model endpoint down, budget spent mid-turn) arrive as an Error event
        followed by TurnCompleted.

        If the stream breaks (UNAVAILABLE, client gone), the turn goes on unless
        on_disconnect is CANCEL; re-attach with StreamEvents(conversation_id,
        after_sequence = last sequence seen, turn_id, on_disconnect). A repeated
        request_id does not start a second turn: it streams the first call's turn
        from its first event (replay, then live), under the disconnect policy the
        turn was started with; with another message it is INVALID_ARGUMENT.
        Role: member.
        """
        return self._invoker.stream(
            ConversationServiceMethods.SEND_MESSAGE,
            _runtime.build_request(
                _conversation_pb2.SendMessageRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "request_id": request_id,
                    "content": content,
                    "documents": documents,
                    "on_disconnect": on_disconnect,
                    "if_busy": if_busy,
                    "max_turns": max_turns,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def stream_events(
        self,
        request: _conversation_pb2.StreamEventsRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        after_sequence: int | None = None,
        turn_id: str | None = None,
        mode: _conversation_pb2.StreamEventsMode.ValueType | None = None,
        on_disconnect: _conversation_pb2.DisconnectPolicy.ValueType | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.AsyncStream[_conversation_pb2.StreamEventsResponse]:
        """Streams the events of a conversation after a given sequence number:
        first those already in the event log, then (in FOLLOW mode) new ones as
        they happen, with no gap and no duplicate. Used to re-attach to a running
        turn from any server process, or to read a conversation's history of
        events. With turn_id set, only that turn's events are sent and the stream
        ends after its TurnCompleted. Role: member. NOT_FOUND if the conversation
        or the turn does not exist; INVALID_ARGUMENT if after_sequence is
        negative. An after_sequence beyond the end waits for new events.
        """
        return self._invoker.stream(
            ConversationServiceMethods.STREAM_EVENTS,
            _runtime.build_request(
                _conversation_pb2.StreamEventsRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "after_sequence": after_sequence,
                    "turn_id": turn_id,
                    "mode": mode,
                    "on_disconnect": on_disconnect,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def cancel_turn(
        self,
        request: _conversation_pb2.CancelTurnRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        turn_id: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.CancelTurnResponse:
        """Cancels a running or queued turn. A running turn stops within about 100
        ms (down to the model call in flight), keeps the usage so far (it is
        billed) and ends with TurnCompleted(stop_reason CANCELLED). Returns the
        turn once it has ended, or its current state if it has not ended within
        2 seconds. Cancelling a turn that already ended returns it unchanged.
        Role: member. NOT_FOUND if the conversation or the turn does not exist;
        FAILED_PRECONDITION if turn_id is empty and no turn is running or queued
        (clients that retry should pass the turn_id).
        """
        return await self._invoker.unary(
            ConversationServiceMethods.CANCEL_TURN,
            _runtime.build_request(
                _conversation_pb2.CancelTurnRequest,
                request,
                {"conversation_id": conversation_id, "turn_id": turn_id, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_turn(
        self,
        request: _conversation_pb2.GetTurnRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        turn_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.GetTurnResponse:
        """Gets one turn. Role: member. NOT_FOUND if the conversation or the turn
        does not exist.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.GET_TURN,
            _runtime.build_request(
                _conversation_pb2.GetTurnRequest,
                request,
                {"conversation_id": conversation_id, "turn_id": turn_id},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_turns(
        self,
        request: _conversation_pb2.ListTurnsRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        status: _conversation_pb2.TurnStatus.ValueType | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListTurnsResponse:
        """Lists the turns of a conversation, newest first. Role: member. NOT_FOUND
        if the conversation does not exist.
        """
        return await self._invoker.unary(
            ConversationServiceMethods.LIST_TURNS,
            _runtime.build_request(
                _conversation_pb2.ListTurnsRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "status": status,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )


class ConversationService:
    """Conversations with a team of specialist agents (or a single agent).

    A client creates a conversation, then sends messages. Each message starts a
    turn: the team answers, and SendMessage streams the turn's events (tokens,
    speaker choices, tool calls, costs) as they happen. The turn runs in a task
    the server owns, not in the client's call, so by default a client that
    disconnects loses nothing: it re-attaches with StreamEvents and resumes
    after the last sequence number it saw.

    Conversations belong to the tenant of the API key; every principal of the
    tenant with the member role can use them.
    """

    def __init__(self, invoker: _runtime.Invoker) -> None:
        self._invoker = invoker

    def create_conversation(
        self,
        request: _conversation_pb2.CreateConversationRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        title: str | None = None,
        labels: Mapping[str, str] | None = None,
        team: _conversation_pb2.Team | None = None,
        model: _common_pb2.ModelSelection | None = None,
        agent_models: Mapping[str, _common_pb2.ModelSelection] | None = None,
        max_turns_per_message: int | None = None,
        speaker_policy: str | None = None,
        turn_timeout: _duration_pb2.Duration | datetime.timedelta | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.CreateConversationResponse:
        """Creates a conversation. Role: member. INVALID_ARGUMENT for an unknown
        preset, a bad label or a bad model selection; NOT_FOUND for an unknown
        agent name; RESOURCE_EXHAUSTED (RATE_LIMITED) when the caller created too
        many conversations in the last hour (default 20). A repeated request_id
        returns the conversation created by the first call (FAILED_PRECONDITION if
        that conversation was deleted since; INVALID_ARGUMENT for a different body).
        """
        return self._invoker.unary(
            ConversationServiceMethods.CREATE_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.CreateConversationRequest,
                request,
                {
                    "request_id": request_id,
                    "title": title,
                    "labels": labels,
                    "team": team,
                    "model": model,
                    "agent_models": agent_models,
                    "max_turns_per_message": max_turns_per_message,
                    "speaker_policy": speaker_policy,
                    "turn_timeout": turn_timeout,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_conversation(
        self,
        request: _conversation_pb2.GetConversationRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.GetConversationResponse:
        """Gets a conversation. Role: member. NOT_FOUND if the conversation does not
        exist.
        """
        return self._invoker.unary(
            ConversationServiceMethods.GET_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.GetConversationRequest,
                request,
                {"conversation_id": conversation_id},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_conversations(
        self,
        request: _conversation_pb2.ListConversationsRequest | None = None,
        /,
        *,
        status: _conversation_pb2.ConversationStatus.ValueType | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListConversationsResponse:
        """Lists conversations, most recently updated first. Role: member.
        INVALID_ARGUMENT for a bad page_size, page_token or label filter.
        """
        return self._invoker.unary(
            ConversationServiceMethods.LIST_CONVERSATIONS,
            _runtime.build_request(
                _conversation_pb2.ListConversationsRequest,
                request,
                {
                    "status": status,
                    "labels": labels,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def update_conversation(
        self,
        request: _conversation_pb2.UpdateConversationRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        title: str | None = None,
        labels: Mapping[str, str] | None = None,
        update_mask: _field_mask_pb2.FieldMask | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.UpdateConversationResponse:
        """Changes a conversation's title or labels: only the fields named in
        update_mask ("title", "labels"; labels are replaced as a whole). Role:
        member. INVALID_ARGUMENT for an empty mask, an unknown path, a title over
        500 characters or a bad label; NOT_FOUND if the conversation does not
        exist. The conversation's update_time moves, so it lists first.
        """
        return self._invoker.unary(
            ConversationServiceMethods.UPDATE_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.UpdateConversationRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "title": title,
                    "labels": labels,
                    "update_mask": update_mask,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def delete_conversation(
        self,
        request: _conversation_pb2.DeleteConversationRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        force: bool | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.DeleteConversationResponse:
        """Deletes a conversation with its transcript, turns, saved team state and
        event log (cost ledger entries are kept). Role: member. NOT_FOUND if the
        conversation does not exist (a retried delete may see this);
        FAILED_PRECONDITION if a turn is running or queued and force is false.
        """
        return self._invoker.unary(
            ConversationServiceMethods.DELETE_CONVERSATION,
            _runtime.build_request(
                _conversation_pb2.DeleteConversationRequest,
                request,
                {"conversation_id": conversation_id, "force": force},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_agents(
        self,
        request: _conversation_pb2.ListAgentsRequest | None = None,
        /,
        *,
        preset: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListAgentsResponse:
        """Lists the agent roster of the tenant (built-in specialists plus the ones
        the deployment adds), by priority then name. Role: member.
        """
        return self._invoker.unary(
            ConversationServiceMethods.LIST_AGENTS,
            _runtime.build_request(
                _conversation_pb2.ListAgentsRequest,
                request,
                {"preset": preset, "page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_agent(
        self,
        request: _conversation_pb2.GetAgentRequest | None = None,
        /,
        *,
        name: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.GetAgentResponse:
        """Gets one agent of the roster. Role: member. NOT_FOUND if no agent has
        that name.
        """
        return self._invoker.unary(
            ConversationServiceMethods.GET_AGENT,
            _runtime.build_request(_conversation_pb2.GetAgentRequest, request, {"name": name}),
            timeout=timeout,
            metadata=metadata,
        )

    def list_team_presets(
        self,
        request: _conversation_pb2.ListTeamPresetsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListTeamPresetsResponse:
        """Lists the team presets that CreateConversation accepts (e.g. "core",
        "finance"), by name. Role: member.
        """
        return self._invoker.unary(
            ConversationServiceMethods.LIST_TEAM_PRESETS,
            _runtime.build_request(
                _conversation_pb2.ListTeamPresetsRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_messages(
        self,
        request: _conversation_pb2.ListMessagesRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        turn_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListMessagesResponse:
        """Lists the transcript of a conversation, oldest first: the users'
        messages and every agent's completed message. Role: member. NOT_FOUND if
        the conversation does not exist.
        """
        return self._invoker.unary(
            ConversationServiceMethods.LIST_MESSAGES,
            _runtime.build_request(
                _conversation_pb2.ListMessagesRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "turn_id": turn_id,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def send_message(
        self,
        request: _conversation_pb2.SendMessageRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        request_id: str | None = None,
        content: str | None = None,
        documents: Sequence[_conversation_pb2.InputDocument] | None = None,
        on_disconnect: _conversation_pb2.DisconnectPolicy.ValueType | None = None,
        if_busy: _conversation_pb2.BusyPolicy.ValueType | None = None,
        max_turns: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.Stream[_conversation_pb2.SendMessageResponse]:
        """Sends a user message and streams the events of the turn it starts.

        The first event is TurnStarted (or TurnQueued when the request asked to
        enqueue behind a running turn); the last event is always TurnCompleted,
        which says how the turn ended, even after an Error event. After it the
        server ends the stream with status OK. The stream carries the events of
        this turn only.

        Problems found before the turn is accepted end the call with an error
        status and no event: NOT_FOUND (conversation), INVALID_ARGUMENT (empty
        content, bad document), INVALID_ARGUMENT with PAYLOAD_TOO_LARGE (content
        or documents over their limits), INVALID_ARGUMENT with INPUT_BLOCKED
        (screening), FAILED_PRECONDITION (a turn is running and if_busy is
        REJECT), RESOURCE_EXHAUSTED with RATE_LIMITED (turns per minute, default
        10) or BUDGET_EXHAUSTED, UNAVAILABLE with CIRCUIT_OPEN, UNAVAILABLE with
        SERVER_BUSY (the server process runs its limit of turns at once; retry
        after the RetryInfo delay, here or on another process). Problems during the
        turn (model endpoint down, budget spent mid-turn) arrive as an Error event
        followed by TurnCompleted.

        If the stream breaks (UNAVAILABLE, client gone), the turn goes on unless
        on_disconnect is CANCEL; re-attach with StreamEvents(conversation_id,
        after_sequence = last sequence seen, turn_id, on_disconnect). A repeated
        request_id does not start a second turn: it streams the first call's turn
        from its first event (replay, then live), under the disconnect policy the
        turn was started with; with another message it is INVALID_ARGUMENT.
        Role: member.
        """
        return self._invoker.stream(
            ConversationServiceMethods.SEND_MESSAGE,
            _runtime.build_request(
                _conversation_pb2.SendMessageRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "request_id": request_id,
                    "content": content,
                    "documents": documents,
                    "on_disconnect": on_disconnect,
                    "if_busy": if_busy,
                    "max_turns": max_turns,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def stream_events(
        self,
        request: _conversation_pb2.StreamEventsRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        after_sequence: int | None = None,
        turn_id: str | None = None,
        mode: _conversation_pb2.StreamEventsMode.ValueType | None = None,
        on_disconnect: _conversation_pb2.DisconnectPolicy.ValueType | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.Stream[_conversation_pb2.StreamEventsResponse]:
        """Streams the events of a conversation after a given sequence number:
        first those already in the event log, then (in FOLLOW mode) new ones as
        they happen, with no gap and no duplicate. Used to re-attach to a running
        turn from any server process, or to read a conversation's history of
        events. With turn_id set, only that turn's events are sent and the stream
        ends after its TurnCompleted. Role: member. NOT_FOUND if the conversation
        or the turn does not exist; INVALID_ARGUMENT if after_sequence is
        negative. An after_sequence beyond the end waits for new events.
        """
        return self._invoker.stream(
            ConversationServiceMethods.STREAM_EVENTS,
            _runtime.build_request(
                _conversation_pb2.StreamEventsRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "after_sequence": after_sequence,
                    "turn_id": turn_id,
                    "mode": mode,
                    "on_disconnect": on_disconnect,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def cancel_turn(
        self,
        request: _conversation_pb2.CancelTurnRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        turn_id: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.CancelTurnResponse:
        """Cancels a running or queued turn. A running turn stops within about 100
        ms (down to the model call in flight), keeps the usage so far (it is
        billed) and ends with TurnCompleted(stop_reason CANCELLED). Returns the
        turn once it has ended, or its current state if it has not ended within
        2 seconds. Cancelling a turn that already ended returns it unchanged.
        Role: member. NOT_FOUND if the conversation or the turn does not exist;
        FAILED_PRECONDITION if turn_id is empty and no turn is running or queued
        (clients that retry should pass the turn_id).
        """
        return self._invoker.unary(
            ConversationServiceMethods.CANCEL_TURN,
            _runtime.build_request(
                _conversation_pb2.CancelTurnRequest,
                request,
                {"conversation_id": conversation_id, "turn_id": turn_id, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_turn(
        self,
        request: _conversation_pb2.GetTurnRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        turn_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.GetTurnResponse:
        """Gets one turn. Role: member. NOT_FOUND if the conversation or the turn
        does not exist.
        """
        return self._invoker.unary(
            ConversationServiceMethods.GET_TURN,
            _runtime.build_request(
                _conversation_pb2.GetTurnRequest,
                request,
                {"conversation_id": conversation_id, "turn_id": turn_id},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_turns(
        self,
        request: _conversation_pb2.ListTurnsRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        status: _conversation_pb2.TurnStatus.ValueType | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _conversation_pb2.ListTurnsResponse:
        """Lists the turns of a conversation, newest first. Role: member. NOT_FOUND
        if the conversation does not exist.
        """
        return self._invoker.unary(
            ConversationServiceMethods.LIST_TURNS,
            _runtime.build_request(
                _conversation_pb2.ListTurnsRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "status": status,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )


class AsyncCostService:
    """Cost and safety guards. Every model call (agent replies, the speaker
    selector's calls, tool-choosing calls, and the partial usage of cancelled
    calls) is priced from the price table and written to the ledger. Budgets
    are enforced by reservation before each call, so concurrent turns cannot
    overspend them; rate limits and circuit breakers are shared by every server
    process. Amounts are exact decimals in USD; days and months are UTC.
    """

    def __init__(self, invoker: _runtime.AsyncInvoker) -> None:
        self._invoker = invoker

    async def get_cost_summary(
        self,
        request: _cost_pb2.GetCostSummaryRequest | None = None,
        /,
        *,
        group_by: _cost_pb2.CostGroupBy.ValueType | None = None,
        user: str | None = None,
        conversation_id: str | None = None,
        group_limit: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetCostSummaryResponse:
        """Cost totals for today and this month, optionally grouped. Role: member
        (only their own usage: the user filter is forced to the caller) or
        operator (the whole tenant).
        """
        return await self._invoker.unary(
            CostServiceMethods.GET_COST_SUMMARY,
            _runtime.build_request(
                _cost_pb2.GetCostSummaryRequest,
                request,
                {
                    "group_by": group_by,
                    "user": user,
                    "conversation_id": conversation_id,
                    "group_limit": group_limit,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_ledger_entries(
        self,
        request: _cost_pb2.ListLedgerEntriesRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        user: str | None = None,
        start_time: _timestamp_pb2.Timestamp | datetime.datetime | None = None,
        end_time: _timestamp_pb2.Timestamp | datetime.datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ListLedgerEntriesResponse:
        """Lists ledger entries (one per model call), newest first. Role: member
        (only their own entries) or operator. INVALID_ARGUMENT if end_time is
        before start_time, or for a bad page_size or page_token.
        """
        return await self._invoker.unary(
            CostServiceMethods.LIST_LEDGER_ENTRIES,
            _runtime.build_request(
                _cost_pb2.ListLedgerEntriesRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "user": user,
                    "start_time": start_time,
                    "end_time": end_time,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_budget(
        self,
        request: _cost_pb2.GetBudgetRequest | None = None,
        /,
        *,
        scope: _common_pb2.BudgetScope.ValueType | None = None,
        subject: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetBudgetResponse:
        """Gets the budget in force for a scope and subject: the subject's own, or
        else the scope's default (inherited = true), with what was spent.
        Role: operator; a member may read the tenant budget, their own USER
        budget and the budget of any conversation. INVALID_ARGUMENT for an unset
        scope or a subject that does not fit it; NOT_FOUND for an unknown
        conversation.
        """
        return await self._invoker.unary(
            CostServiceMethods.GET_BUDGET,
            _runtime.build_request(
                _cost_pb2.GetBudgetRequest, request, {"scope": scope, "subject": subject}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_budgets(
        self,
        request: _cost_pb2.ListBudgetsRequest | None = None,
        /,
        *,
        scope: _common_pb2.BudgetScope.ValueType | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ListBudgetsResponse:
        """Lists the budgets set explicitly (scope defaults included), by scope then
        subject. Role: operator.
        """
        return await self._invoker.unary(
            CostServiceMethods.LIST_BUDGETS,
            _runtime.build_request(
                _cost_pb2.ListBudgetsRequest,
                request,
                {"scope": scope, "page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def set_budget(
        self,
        request: _cost_pb2.SetBudgetRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        budget: _cost_pb2.Budget | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.SetBudgetResponse:
        """Sets the limits and alert thresholds of a budget, creating it if needed.
        Takes effect for the next reservation. Role: operator. INVALID_ARGUMENT
        naming the field for an unset scope, a subject that does not fit the
        scope, a limit that is not a decimal, negative or over 1,000,000, or a
        threshold outside 1-99; NOT_FOUND for an unknown conversation. A repeated
        request_id returns the first result.
        """
        return await self._invoker.unary(
            CostServiceMethods.SET_BUDGET,
            _runtime.build_request(
                _cost_pb2.SetBudgetRequest, request, {"request_id": request_id, "budget": budget}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def delete_budget(
        self,
        request: _cost_pb2.DeleteBudgetRequest | None = None,
        /,
        *,
        scope: _common_pb2.BudgetScope.ValueType | None = None,
        subject: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.DeleteBudgetResponse:
        """Removes a budget set explicitly; its subject falls back to the scope's
        default (for a scope default or the tenant budget: no limit). Role:
        operator. NOT_FOUND if no such budget was set (a retried delete may see
        this).
        """
        return await self._invoker.unary(
            CostServiceMethods.DELETE_BUDGET,
            _runtime.build_request(
                _cost_pb2.DeleteBudgetRequest, request, {"scope": scope, "subject": subject}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_circuit_breaker(
        self,
        request: _cost_pb2.GetCircuitBreakerRequest | None = None,
        /,
        *,
        scope: _cost_pb2.CircuitBreakerScope.ValueType | None = None,
        provider: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetCircuitBreakerResponse:
        """Gets the state of one circuit breaker. Role: member or operator.
        INVALID_ARGUMENT if scope is unset or provider does not fit the scope.
        A breaker that never tripped is reported CLOSED.
        """
        return await self._invoker.unary(
            CostServiceMethods.GET_CIRCUIT_BREAKER,
            _runtime.build_request(
                _cost_pb2.GetCircuitBreakerRequest, request, {"scope": scope, "provider": provider}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_circuit_breakers(
        self,
        request: _cost_pb2.ListCircuitBreakersRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ListCircuitBreakersResponse:
        """Lists the tenant's circuit breakers that have state (any that is not
        CLOSED with zero counters), tenant first, then providers by key. Role:
        operator.
        """
        return await self._invoker.unary(
            CostServiceMethods.LIST_CIRCUIT_BREAKERS,
            _runtime.build_request(
                _cost_pb2.ListCircuitBreakersRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def reset_circuit_breaker(
        self,
        request: _cost_pb2.ResetCircuitBreakerRequest | None = None,
        /,
        *,
        scope: _cost_pb2.CircuitBreakerScope.ValueType | None = None,
        provider: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ResetCircuitBreakerResponse:
        """Closes a circuit breaker and clears its counters, at once for every
        server process. Resetting a closed breaker just clears its counters.
        Role: operator. INVALID_ARGUMENT if scope is unset or provider does not
        fit the scope.
        """
        return await self._invoker.unary(
            CostServiceMethods.RESET_CIRCUIT_BREAKER,
            _runtime.build_request(
                _cost_pb2.ResetCircuitBreakerRequest,
                request,
                {"scope": scope, "provider": provider, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_rate_limit_status(
        self,
        request: _cost_pb2.GetRateLimitStatusRequest | None = None,
        /,
        *,
        user: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetRateLimitStatusResponse:
        """What is left of each rate limit for a user. Role: member (themselves) or
        operator (any user).
        """
        return await self._invoker.unary(
            CostServiceMethods.GET_RATE_LIMIT_STATUS,
            _runtime.build_request(_cost_pb2.GetRateLimitStatusRequest, request, {"user": user}),
            timeout=timeout,
            metadata=metadata,
        )


class CostService:
    """Cost and safety guards. Every model call (agent replies, the speaker
    selector's calls, tool-choosing calls, and the partial usage of cancelled
    calls) is priced from the price table and written to the ledger. Budgets
    are enforced by reservation before each call, so concurrent turns cannot
    overspend them; rate limits and circuit breakers are shared by every server
    process. Amounts are exact decimals in USD; days and months are UTC.
    """

    def __init__(self, invoker: _runtime.Invoker) -> None:
        self._invoker = invoker

    def get_cost_summary(
        self,
        request: _cost_pb2.GetCostSummaryRequest | None = None,
        /,
        *,
        group_by: _cost_pb2.CostGroupBy.ValueType | None = None,
        user: str | None = None,
        conversation_id: str | None = None,
        group_limit: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetCostSummaryResponse:
        """Cost totals for today and this month, optionally grouped. Role: member
        (only their own usage: the user filter is forced to the caller) or
        operator (the whole tenant).
        """
        return self._invoker.unary(
            CostServiceMethods.GET_COST_SUMMARY,
            _runtime.build_request(
                _cost_pb2.GetCostSummaryRequest,
                request,
                {
                    "group_by": group_by,
                    "user": user,
                    "conversation_id": conversation_id,
                    "group_limit": group_limit,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_ledger_entries(
        self,
        request: _cost_pb2.ListLedgerEntriesRequest | None = None,
        /,
        *,
        conversation_id: str | None = None,
        user: str | None = None,
        start_time: _timestamp_pb2.Timestamp | datetime.datetime | None = None,
        end_time: _timestamp_pb2.Timestamp | datetime.datetime | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ListLedgerEntriesResponse:
        """Lists ledger entries (one per model call), newest first. Role: member
        (only their own entries) or operator. INVALID_ARGUMENT if end_time is
        before start_time, or for a bad page_size or page_token.
        """
        return self._invoker.unary(
            CostServiceMethods.LIST_LEDGER_ENTRIES,
            _runtime.build_request(
                _cost_pb2.ListLedgerEntriesRequest,
                request,
                {
                    "conversation_id": conversation_id,
                    "user": user,
                    "start_time": start_time,
                    "end_time": end_time,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_budget(
        self,
        request: _cost_pb2.GetBudgetRequest | None = None,
        /,
        *,
        scope: _common_pb2.BudgetScope.ValueType | None = None,
        subject: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetBudgetResponse:
        """Gets the budget in force for a scope and subject: the subject's own, or
        else the scope's default (inherited = true), with what was spent.
        Role: operator; a member may read the tenant budget, their own USER
        budget and the budget of any conversation. INVALID_ARGUMENT for an unset
        scope or a subject that does not fit it; NOT_FOUND for an unknown
        conversation.
        """
        return self._invoker.unary(
            CostServiceMethods.GET_BUDGET,
            _runtime.build_request(
                _cost_pb2.GetBudgetRequest, request, {"scope": scope, "subject": subject}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_budgets(
        self,
        request: _cost_pb2.ListBudgetsRequest | None = None,
        /,
        *,
        scope: _common_pb2.BudgetScope.ValueType | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ListBudgetsResponse:
        """Lists the budgets set explicitly (scope defaults included), by scope then
        subject. Role: operator.
        """
        return self._invoker.unary(
            CostServiceMethods.LIST_BUDGETS,
            _runtime.build_request(
                _cost_pb2.ListBudgetsRequest,
                request,
                {"scope": scope, "page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def set_budget(
        self,
        request: _cost_pb2.SetBudgetRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        budget: _cost_pb2.Budget | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.SetBudgetResponse:
        """Sets the limits and alert thresholds of a budget, creating it if needed.
        Takes effect for the next reservation. Role: operator. INVALID_ARGUMENT
        naming the field for an unset scope, a subject that does not fit the
        scope, a limit that is not a decimal, negative or over 1,000,000, or a
        threshold outside 1-99; NOT_FOUND for an unknown conversation. A repeated
        request_id returns the first result.
        """
        return self._invoker.unary(
            CostServiceMethods.SET_BUDGET,
            _runtime.build_request(
                _cost_pb2.SetBudgetRequest, request, {"request_id": request_id, "budget": budget}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def delete_budget(
        self,
        request: _cost_pb2.DeleteBudgetRequest | None = None,
        /,
        *,
        scope: _common_pb2.BudgetScope.ValueType | None = None,
        subject: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.DeleteBudgetResponse:
        """Removes a budget set explicitly; its subject falls back to the scope's
        default (for a scope default or the tenant budget: no limit). Role:
        operator. NOT_FOUND if no such budget was set (a retried delete may see
        this).
        """
        return self._invoker.unary(
            CostServiceMethods.DELETE_BUDGET,
            _runtime.build_request(
                _cost_pb2.DeleteBudgetRequest, request, {"scope": scope, "subject": subject}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_circuit_breaker(
        self,
        request: _cost_pb2.GetCircuitBreakerRequest | None = None,
        /,
        *,
        scope: _cost_pb2.CircuitBreakerScope.ValueType | None = None,
        provider: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetCircuitBreakerResponse:
        """Gets the state of one circuit breaker. Role: member or operator.
        INVALID_ARGUMENT if scope is unset or provider does not fit the scope.
        A breaker that never tripped is reported CLOSED.
        """
        return self._invoker.unary(
            CostServiceMethods.GET_CIRCUIT_BREAKER,
            _runtime.build_request(
                _cost_pb2.GetCircuitBreakerRequest, request, {"scope": scope, "provider": provider}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_circuit_breakers(
        self,
        request: _cost_pb2.ListCircuitBreakersRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ListCircuitBreakersResponse:
        """Lists the tenant's circuit breakers that have state (any that is not
        CLOSED with zero counters), tenant first, then providers by key. Role:
        operator.
        """
        return self._invoker.unary(
            CostServiceMethods.LIST_CIRCUIT_BREAKERS,
            _runtime.build_request(
                _cost_pb2.ListCircuitBreakersRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def reset_circuit_breaker(
        self,
        request: _cost_pb2.ResetCircuitBreakerRequest | None = None,
        /,
        *,
        scope: _cost_pb2.CircuitBreakerScope.ValueType | None = None,
        provider: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.ResetCircuitBreakerResponse:
        """Closes a circuit breaker and clears its counters, at once for every
        server process. Resetting a closed breaker just clears its counters.
        Role: operator. INVALID_ARGUMENT if scope is unset or provider does not
        fit the scope.
        """
        return self._invoker.unary(
            CostServiceMethods.RESET_CIRCUIT_BREAKER,
            _runtime.build_request(
                _cost_pb2.ResetCircuitBreakerRequest,
                request,
                {"scope": scope, "provider": provider, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_rate_limit_status(
        self,
        request: _cost_pb2.GetRateLimitStatusRequest | None = None,
        /,
        *,
        user: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _cost_pb2.GetRateLimitStatusResponse:
        """What is left of each rate limit for a user. Role: member (themselves) or
        operator (any user).
        """
        return self._invoker.unary(
            CostServiceMethods.GET_RATE_LIMIT_STATUS,
            _runtime.build_request(_cost_pb2.GetRateLimitStatusRequest, request, {"user": user}),
            timeout=timeout,
            metadata=metadata,
        )


class AsyncFlagService:
    """Feature flags for staged rollout (5% -> 25% -> 50% -> 100%, canary groups,
    enterprise only, instant rollback), per tenant, with a full history of
    changes. Every server process evaluates flags from a cache kept current
    within a second of any change. The platform's own features (rag_in_loop,
    true_streaming, speaker_policy, graphflow, hitl, cost_safety) obey these
    flags for the calling principal on every turn.

    The same flags are also served through flagd's evaluation protocol
    (flagd.evaluation.v1.Service) for OpenFeature SDKs; evaluation results are
    identical, bucketing included.
    """

    def __init__(self, invoker: _runtime.AsyncInvoker) -> None:
        self._invoker = invoker

    async def list_flags(
        self,
        request: _flag_pb2.ListFlagsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.ListFlagsResponse:
        """Lists the tenant's flags, by key. A page holds fewer than page_size flags
        when more would not fit in the server's max message size (always at least
        one, with next_page_token as usual). Role: member.
        """
        return await self._invoker.unary(
            FlagServiceMethods.LIST_FLAGS,
            _runtime.build_request(
                _flag_pb2.ListFlagsRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_flag(
        self,
        request: _flag_pb2.GetFlagRequest | None = None,
        /,
        *,
        key: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.GetFlagResponse:
        """Gets one flag. Role: member. NOT_FOUND if the flag does not exist."""
        return await self._invoker.unary(
            FlagServiceMethods.GET_FLAG,
            _runtime.build_request(_flag_pb2.GetFlagRequest, request, {"key": key}),
            timeout=timeout,
            metadata=metadata,
        )

    async def upsert_flag(
        self,
        request: _flag_pb2.UpsertFlagRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        flag: _flag_pb2.Flag | None = None,
        expected_version: int | None = None,
        comment: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.UpsertFlagResponse:
        """Creates or replaces a flag, with optimistic concurrency:
        expected_version 0 creates (ABORTED if the flag exists; a flag created
        again after a delete continues its versions, see Flag.version), a positive
        expected_version replaces (ABORTED if it is not the current version,
        with ErrorInfo.metadata["current_version"]; NOT_FOUND if the flag does
        not exist). Of concurrent upserts exactly one wins. Every change, and
        every attempt refused with ABORTED, is recorded in the history; an
        upsert that changes nothing returns the flag with its version unchanged
        and records nothing (so importing the same file twice changes nothing).
        Role:
        operator. INVALID_ARGUMENT naming the field for an empty or badly formed
        key, an unset strategy, a percentage outside 0-100, variant weights that
        do not add up to 100, a gradual ramp that ends before it starts, a flag
        whose encoding is over the server's max message size less 32 KiB
        (naming the largest of users, groups and description), or a negative
        expected_version. A repeated request_id returns the first result.
        """
        return await self._invoker.unary(
            FlagServiceMethods.UPSERT_FLAG,
            _runtime.build_request(
                _flag_pb2.UpsertFlagRequest,
                request,
                {
                    "request_id": request_id,
                    "flag": flag,
                    "expected_version": expected_version,
                    "comment": comment,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def delete_flag(
        self,
        request: _flag_pb2.DeleteFlagRequest | None = None,
        /,
        *,
        key: str | None = None,
        expected_version: int | None = None,
        comment: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.DeleteFlagResponse:
        """Deletes a flag (its history is kept). Evaluations then return the
        default with error FLAG_NOT_FOUND. Role: operator. NOT_FOUND if the flag
        does not exist (a retried delete may see this); ABORTED if
        expected_version is positive and not the current version.
        """
        return await self._invoker.unary(
            FlagServiceMethods.DELETE_FLAG,
            _runtime.build_request(
                _flag_pb2.DeleteFlagRequest,
                request,
                {"key": key, "expected_version": expected_version, "comment": comment},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def disable_all_flags(
        self,
        request: _flag_pb2.DisableAllFlagsRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.DisableAllFlagsResponse:
        """Turns every flag of the tenant off (enabled = false) in one transaction:
        the instant rollback. Each flag changed gets a new version and a history
        entry carrying the reason; flags already off are left alone. Role:
        operator. INVALID_ARGUMENT if reason is empty.
        """
        return await self._invoker.unary(
            FlagServiceMethods.DISABLE_ALL_FLAGS,
            _runtime.build_request(
                _flag_pb2.DisableAllFlagsRequest,
                request,
                {"request_id": request_id, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def evaluate_flag(
        self,
        request: _flag_pb2.EvaluateFlagRequest | None = None,
        /,
        *,
        key: str | None = None,
        context: _flag_pb2.EvaluationContext | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.EvaluateFlagResponse:
        """Evaluates one flag for a caller. An unknown flag is not an error: the
        result is value false with reason ERROR and error_code FLAG_NOT_FOUND,
        as OpenFeature expects. Role: member. INVALID_ARGUMENT if key is empty.
        """
        return await self._invoker.unary(
            FlagServiceMethods.EVALUATE_FLAG,
            _runtime.build_request(
                _flag_pb2.EvaluateFlagRequest, request, {"key": key, "context": context}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def evaluate_all_flags(
        self,
        request: _flag_pb2.EvaluateAllFlagsRequest | None = None,
        /,
        *,
        context: _flag_pb2.EvaluationContext | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.EvaluateAllFlagsResponse:
        """Evaluates every flag of the tenant for a caller. Role: member."""
        return await self._invoker.unary(
            FlagServiceMethods.EVALUATE_ALL_FLAGS,
            _runtime.build_request(
                _flag_pb2.EvaluateAllFlagsRequest, request, {"context": context}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def watch_flags(
        self,
        request: _flag_pb2.WatchFlagsRequest | None = None,
        /,
        *,
        keys: Sequence[str] | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.AsyncStream[_flag_pb2.WatchFlagsResponse]:
        """Watches flags: first a full snapshot of the flags (on every connect, so
        a reconnecting client never keeps a stale cache), then every change as it
        happens. The stream does not end by itself. Role: member.
        """
        return self._invoker.stream(
            FlagServiceMethods.WATCH_FLAGS,
            _runtime.build_request(_flag_pb2.WatchFlagsRequest, request, {"keys": keys}),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_flag_history(
        self,
        request: _flag_pb2.ListFlagHistoryRequest | None = None,
        /,
        *,
        key: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.ListFlagHistoryResponse:
        """Lists the history of a flag, newest first: every change and every
        refused attempt. Kept after the flag is deleted. A page holds fewer than
        page_size entries when more would not fit in the server's max message
        size (always at least one). Role: member. NOT_FOUND if the key never
        existed.
        """
        return await self._invoker.unary(
            FlagServiceMethods.LIST_FLAG_HISTORY,
            _runtime.build_request(
                _flag_pb2.ListFlagHistoryRequest,
                request,
                {"key": key, "page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )


class FlagService:
    """Feature flags for staged rollout (5% -> 25% -> 50% -> 100%, canary groups,
    enterprise only, instant rollback), per tenant, with a full history of
    changes. Every server process evaluates flags from a cache kept current
    within a second of any change. The platform's own features (rag_in_loop,
    true_streaming, speaker_policy, graphflow, hitl, cost_safety) obey these
    flags for the calling principal on every turn.

    The same flags are also served through flagd's evaluation protocol
    (flagd.evaluation.v1.Service) for OpenFeature SDKs; evaluation results are
    identical, bucketing included.
    """

    def __init__(self, invoker: _runtime.Invoker) -> None:
        self._invoker = invoker

    def list_flags(
        self,
        request: _flag_pb2.ListFlagsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.ListFlagsResponse:
        """Lists the tenant's flags, by key. A page holds fewer than page_size flags
        when more would not fit in the server's max message size (always at least
        one, with next_page_token as usual). Role: member.
        """
        return self._invoker.unary(
            FlagServiceMethods.LIST_FLAGS,
            _runtime.build_request(
                _flag_pb2.ListFlagsRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_flag(
        self,
        request: _flag_pb2.GetFlagRequest | None = None,
        /,
        *,
        key: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.GetFlagResponse:
        """Gets one flag. Role: member. NOT_FOUND if the flag does not exist."""
        return self._invoker.unary(
            FlagServiceMethods.GET_FLAG,
            _runtime.build_request(_flag_pb2.GetFlagRequest, request, {"key": key}),
            timeout=timeout,
            metadata=metadata,
        )

    def upsert_flag(
        self,
        request: _flag_pb2.UpsertFlagRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        flag: _flag_pb2.Flag | None = None,
        expected_version: int | None = None,
        comment: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.UpsertFlagResponse:
        """Creates or replaces a flag, with optimistic concurrency:
        expected_version 0 creates (ABORTED if the flag exists; a flag created
        again after a delete continues its versions, see Flag.version), a positive
        expected_version replaces (ABORTED if it is not the current version,
        with ErrorInfo.metadata["current_version"]; NOT_FOUND if the flag does
        not exist). Of concurrent upserts exactly one wins. Every change, and
        every attempt refused with ABORTED, is recorded in the history; an
        upsert that changes nothing returns the flag with its version unchanged
        and records nothing (so importing the same file twice changes nothing).
        Role:
        operator. INVALID_ARGUMENT naming the field for an empty or badly formed
        key, an unset strategy, a percentage outside 0-100, variant weights that
        do not add up to 100, a gradual ramp that ends before it starts, a flag
        whose encoding is over the server's max message size less 32 KiB
        (naming the largest of users, groups and description), or a negative
        expected_version. A repeated request_id returns the first result.
        """
        return self._invoker.unary(
            FlagServiceMethods.UPSERT_FLAG,
            _runtime.build_request(
                _flag_pb2.UpsertFlagRequest,
                request,
                {
                    "request_id": request_id,
                    "flag": flag,
                    "expected_version": expected_version,
                    "comment": comment,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def delete_flag(
        self,
        request: _flag_pb2.DeleteFlagRequest | None = None,
        /,
        *,
        key: str | None = None,
        expected_version: int | None = None,
        comment: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.DeleteFlagResponse:
        """Deletes a flag (its history is kept). Evaluations then return the
        default with error FLAG_NOT_FOUND. Role: operator. NOT_FOUND if the flag
        does not exist (a retried delete may see this); ABORTED if
        expected_version is positive and not the current version.
        """
        return self._invoker.unary(
            FlagServiceMethods.DELETE_FLAG,
            _runtime.build_request(
                _flag_pb2.DeleteFlagRequest,
                request,
                {"key": key, "expected_version": expected_version, "comment": comment},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def disable_all_flags(
        self,
        request: _flag_pb2.DisableAllFlagsRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.DisableAllFlagsResponse:
        """Turns every flag of the tenant off (enabled = false) in one transaction:
        the instant rollback. Each flag changed gets a new version and a history
        entry carrying the reason; flags already off are left alone. Role:
        operator. INVALID_ARGUMENT if reason is empty.
        """
        return self._invoker.unary(
            FlagServiceMethods.DISABLE_ALL_FLAGS,
            _runtime.build_request(
                _flag_pb2.DisableAllFlagsRequest,
                request,
                {"request_id": request_id, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def evaluate_flag(
        self,
        request: _flag_pb2.EvaluateFlagRequest | None = None,
        /,
        *,
        key: str | None = None,
        context: _flag_pb2.EvaluationContext | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.EvaluateFlagResponse:
        """Evaluates one flag for a caller. An unknown flag is not an error: the
        result is value false with reason ERROR and error_code FLAG_NOT_FOUND,
        as OpenFeature expects. Role: member. INVALID_ARGUMENT if key is empty.
        """
        return self._invoker.unary(
            FlagServiceMethods.EVALUATE_FLAG,
            _runtime.build_request(
                _flag_pb2.EvaluateFlagRequest, request, {"key": key, "context": context}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def evaluate_all_flags(
        self,
        request: _flag_pb2.EvaluateAllFlagsRequest | None = None,
        /,
        *,
        context: _flag_pb2.EvaluationContext | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.EvaluateAllFlagsResponse:
        """Evaluates every flag of the tenant for a caller. Role: member."""
        return self._invoker.unary(
            FlagServiceMethods.EVALUATE_ALL_FLAGS,
            _runtime.build_request(
                _flag_pb2.EvaluateAllFlagsRequest, request, {"context": context}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def watch_flags(
        self,
        request: _flag_pb2.WatchFlagsRequest | None = None,
        /,
        *,
        keys: Sequence[str] | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.Stream[_flag_pb2.WatchFlagsResponse]:
        """Watches flags: first a full snapshot of the flags (on every connect, so
        a reconnecting client never keeps a stale cache), then every change as it
        happens. The stream does not end by itself. Role: member.
        """
        return self._invoker.stream(
            FlagServiceMethods.WATCH_FLAGS,
            _runtime.build_request(_flag_pb2.WatchFlagsRequest, request, {"keys": keys}),
            timeout=timeout,
            metadata=metadata,
        )

    def list_flag_history(
        self,
        request: _flag_pb2.ListFlagHistoryRequest | None = None,
        /,
        *,
        key: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _flag_pb2.ListFlagHistoryResponse:
        """Lists the history of a flag, newest first: every change and every
        refused attempt. Kept after the flag is deleted. A page holds fewer than
        page_size entries when more would not fit in the server's max message
        size (always at least one). Role: member. NOT_FOUND if the key never
        existed.
        """
        return self._invoker.unary(
            FlagServiceMethods.LIST_FLAG_HISTORY,
            _runtime.build_request(
                _flag_pb2.ListFlagHistoryRequest,
                request,
                {"key": key, "page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )


class AsyncWorkflowService:
    """Multi-step workflows: a catalog of step graphs (each step done by one
    agent, steps whose dependencies are met run in parallel, some gated by a
    human approval), and their executions. An execution runs in the background,
    owned by one server process at a time; its steps are checkpointed, and an
    execution whose process died is taken over by another one. Watch it with
    WatchExecution, which can be resumed from any sequence number.
    """

    def __init__(self, invoker: _runtime.AsyncInvoker) -> None:
        self._invoker = invoker

    async def list_workflows(
        self,
        request: _workflow_pb2.ListWorkflowsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.ListWorkflowsResponse:
        """Lists the workflow catalog, by workflow_id. Role: member."""
        return await self._invoker.unary(
            WorkflowServiceMethods.LIST_WORKFLOWS,
            _runtime.build_request(
                _workflow_pb2.ListWorkflowsRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_workflow(
        self,
        request: _workflow_pb2.GetWorkflowRequest | None = None,
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.GetWorkflowResponse:
        """Gets one workflow of the catalog. Role: member. NOT_FOUND if no workflow
        has that id.
        """
        return await self._invoker.unary(
            WorkflowServiceMethods.GET_WORKFLOW,
            _runtime.build_request(
                _workflow_pb2.GetWorkflowRequest, request, {"workflow_id": workflow_id}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def start_execution(
        self,
        request: _workflow_pb2.StartExecutionRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
        input: str | None = None,
        parameters: _struct_pb2.Struct | Mapping[str, object] | None = None,
        labels: Mapping[str, str] | None = None,
        model: _common_pb2.ModelSelection | None = None,
        timeout_: _duration_pb2.Duration | datetime.timedelta | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.StartExecutionResponse:
        """Starts an execution of a workflow and returns at once (status PENDING or
        RUNNING); follow it with WatchExecution. Role: member. NOT_FOUND if the
        workflow does not exist; INVALID_ARGUMENT for empty input, parameters
        that do not fit the workflow's parameters_schema, or bad labels;
        PAYLOAD_TOO_LARGE for input over its limit; RESOURCE_EXHAUSTED
        (BUDGET_EXHAUSTED, RATE_LIMITED) and UNAVAILABLE (CIRCUIT_OPEN) from the
        cost guards. A repeated request_id returns the first call's execution.
        """
        return await self._invoker.unary(
            WorkflowServiceMethods.START_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.StartExecutionRequest,
                request,
                {
                    "request_id": request_id,
                    "workflow_id": workflow_id,
                    "input": input,
                    "parameters": parameters,
                    "labels": labels,
                    "model": model,
                    "timeout": timeout_,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def get_execution(
        self,
        request: _workflow_pb2.GetExecutionRequest | None = None,
        /,
        *,
        execution_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.GetExecutionResponse:
        """Gets an execution with the state of each step. Role: member. NOT_FOUND if
        the execution does not exist.
        """
        return await self._invoker.unary(
            WorkflowServiceMethods.GET_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.GetExecutionRequest, request, {"execution_id": execution_id}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def list_executions(
        self,
        request: _workflow_pb2.ListExecutionsRequest | None = None,
        /,
        *,
        status: _workflow_pb2.ExecutionStatus.ValueType | None = None,
        workflow_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.ListExecutionsResponse:
        """Lists executions, newest first. Role: member. INVALID_ARGUMENT for a bad
        page_size, page_token or filter.
        """
        return await self._invoker.unary(
            WorkflowServiceMethods.LIST_EXECUTIONS,
            _runtime.build_request(
                _workflow_pb2.ListExecutionsRequest,
                request,
                {
                    "status": status,
                    "workflow_id": workflow_id,
                    "labels": labels,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    async def cancel_execution(
        self,
        request: _workflow_pb2.CancelExecutionRequest | None = None,
        /,
        *,
        execution_id: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.CancelExecutionResponse:
        """Cancels an execution: running steps stop (usage so far billed), pending
        approvals are cancelled, and the execution ends CANCELLED. Returns the
        execution once it has ended, or its current state if it has not ended
        within 2 seconds. Cancelling an execution that already ended returns it
        unchanged. Role: member. NOT_FOUND if the execution does not exist.
        """
        return await self._invoker.unary(
            WorkflowServiceMethods.CANCEL_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.CancelExecutionRequest,
                request,
                {"execution_id": execution_id, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def watch_execution(
        self,
        request: _workflow_pb2.WatchExecutionRequest | None = None,
        /,
        *,
        execution_id: str | None = None,
        after_sequence: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.AsyncStream[_workflow_pb2.WatchExecutionResponse]:
        """Streams the events of an execution after a given sequence number: those
        already logged, then new ones as they happen, with no gap and no
        duplicate. The last event is always ExecutionCompleted, after which the
        stream ends with status OK (at once if the execution had already ended).
        Role: member. NOT_FOUND if the execution does not exist; INVALID_ARGUMENT
        if after_sequence is negative. An after_sequence beyond the end waits for
        new events.
        """
        return self._invoker.stream(
            WorkflowServiceMethods.WATCH_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.WatchExecutionRequest,
                request,
                {"execution_id": execution_id, "after_sequence": after_sequence},
            ),
            timeout=timeout,
            metadata=metadata,
        )


class WorkflowService:
    """Multi-step workflows: a catalog of step graphs (each step done by one
    agent, steps whose dependencies are met run in parallel, some gated by a
    human approval), and their executions. An execution runs in the background,
    owned by one server process at a time; its steps are checkpointed, and an
    execution whose process died is taken over by another one. Watch it with
    WatchExecution, which can be resumed from any sequence number.
    """

    def __init__(self, invoker: _runtime.Invoker) -> None:
        self._invoker = invoker

    def list_workflows(
        self,
        request: _workflow_pb2.ListWorkflowsRequest | None = None,
        /,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.ListWorkflowsResponse:
        """Lists the workflow catalog, by workflow_id. Role: member."""
        return self._invoker.unary(
            WorkflowServiceMethods.LIST_WORKFLOWS,
            _runtime.build_request(
                _workflow_pb2.ListWorkflowsRequest,
                request,
                {"page_size": page_size, "page_token": page_token},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_workflow(
        self,
        request: _workflow_pb2.GetWorkflowRequest | None = None,
        /,
        *,
        workflow_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.GetWorkflowResponse:
        """Gets one workflow of the catalog. Role: member. NOT_FOUND if no workflow
        has that id.
        """
        return self._invoker.unary(
            WorkflowServiceMethods.GET_WORKFLOW,
            _runtime.build_request(
                _workflow_pb2.GetWorkflowRequest, request, {"workflow_id": workflow_id}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def start_execution(
        self,
        request: _workflow_pb2.StartExecutionRequest | None = None,
        /,
        *,
        request_id: str | None = None,
        workflow_id: str | None = None,
        input: str | None = None,
        parameters: _struct_pb2.Struct | Mapping[str, object] | None = None,
        labels: Mapping[str, str] | None = None,
        model: _common_pb2.ModelSelection | None = None,
        timeout_: _duration_pb2.Duration | datetime.timedelta | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.StartExecutionResponse:
        """Starts an execution of a workflow and returns at once (status PENDING or
        RUNNING); follow it with WatchExecution. Role: member. NOT_FOUND if the
        workflow does not exist; INVALID_ARGUMENT for empty input, parameters
        that do not fit the workflow's parameters_schema, or bad labels;
        PAYLOAD_TOO_LARGE for input over its limit; RESOURCE_EXHAUSTED
        (BUDGET_EXHAUSTED, RATE_LIMITED) and UNAVAILABLE (CIRCUIT_OPEN) from the
        cost guards. A repeated request_id returns the first call's execution.
        """
        return self._invoker.unary(
            WorkflowServiceMethods.START_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.StartExecutionRequest,
                request,
                {
                    "request_id": request_id,
                    "workflow_id": workflow_id,
                    "input": input,
                    "parameters": parameters,
                    "labels": labels,
                    "model": model,
                    "timeout": timeout_,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def get_execution(
        self,
        request: _workflow_pb2.GetExecutionRequest | None = None,
        /,
        *,
        execution_id: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.GetExecutionResponse:
        """Gets an execution with the state of each step. Role: member. NOT_FOUND if
        the execution does not exist.
        """
        return self._invoker.unary(
            WorkflowServiceMethods.GET_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.GetExecutionRequest, request, {"execution_id": execution_id}
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def list_executions(
        self,
        request: _workflow_pb2.ListExecutionsRequest | None = None,
        /,
        *,
        status: _workflow_pb2.ExecutionStatus.ValueType | None = None,
        workflow_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.ListExecutionsResponse:
        """Lists executions, newest first. Role: member. INVALID_ARGUMENT for a bad
        page_size, page_token or filter.
        """
        return self._invoker.unary(
            WorkflowServiceMethods.LIST_EXECUTIONS,
            _runtime.build_request(
                _workflow_pb2.ListExecutionsRequest,
                request,
                {
                    "status": status,
                    "workflow_id": workflow_id,
                    "labels": labels,
                    "page_size": page_size,
                    "page_token": page_token,
                },
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def cancel_execution(
        self,
        request: _workflow_pb2.CancelExecutionRequest | None = None,
        /,
        *,
        execution_id: str | None = None,
        reason: str | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _workflow_pb2.CancelExecutionResponse:
        """Cancels an execution: running steps stop (usage so far billed), pending
        approvals are cancelled, and the execution ends CANCELLED. Returns the
        execution once it has ended, or its current state if it has not ended
        within 2 seconds. Cancelling an execution that already ended returns it
        unchanged. Role: member. NOT_FOUND if the execution does not exist.
        """
        return self._invoker.unary(
            WorkflowServiceMethods.CANCEL_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.CancelExecutionRequest,
                request,
                {"execution_id": execution_id, "reason": reason},
            ),
            timeout=timeout,
            metadata=metadata,
        )

    def watch_execution(
        self,
        request: _workflow_pb2.WatchExecutionRequest | None = None,
        /,
        *,
        execution_id: str | None = None,
        after_sequence: int | None = None,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> _runtime.Stream[_workflow_pb2.WatchExecutionResponse]:
        """Streams the events of an execution after a given sequence number: those
        already logged, then new ones as they happen, with no gap and no
        duplicate. The last event is always ExecutionCompleted, after which the
        stream ends with status OK (at once if the execution had already ended).
        Role: member. NOT_FOUND if the execution does not exist; INVALID_ARGUMENT
        if after_sequence is negative. An after_sequence beyond the end waits for
        new events.
        """
        return self._invoker.stream(
            WorkflowServiceMethods.WATCH_EXECUTION,
            _runtime.build_request(
                _workflow_pb2.WatchExecutionRequest,
                request,
                {"execution_id": execution_id, "after_sequence": after_sequence},
            ),
            timeout=timeout,
            metadata=metadata,
        )


class AsyncServices:
    """The service facades of the asynchronous client, one attribute per service."""

    def __init__(self, invoker: _runtime.AsyncInvoker) -> None:
        self.approvals = AsyncApprovalService(invoker)
        self.conversations = AsyncConversationService(invoker)
        self.costs = AsyncCostService(invoker)
        self.flags = AsyncFlagService(invoker)
        self.workflows = AsyncWorkflowService(invoker)


class Services:
    """The service facades of the synchronous client, one attribute per service."""

    def __init__(self, invoker: _runtime.Invoker) -> None:
        self.approvals = ApprovalService(invoker)
        self.conversations = ConversationService(invoker)
        self.costs = CostService(invoker)
        self.flags = FlagService(invoker)
        self.workflows = WorkflowService(invoker)
