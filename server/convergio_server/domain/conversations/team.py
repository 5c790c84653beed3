"""Builds the AutoGen team of one turn: an AssistantAgent per participant (its system
prompt, tools and model client), in a SelectorGroupChat whose next speaker comes from the
speaker policy, or the single agent alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from decimal import Decimal
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage
from autogen_core.tools import BaseTool

from convergio_server.config import Settings
from convergio_server.domain.agents.roster import AgentSpec, Roster
from convergio_server.domain.auth import Principal
from convergio_server.domain.conversations.admittance import Admittance, AdmittedClient
from convergio_server.domain.conversations.agent import ParticipantAgent
from convergio_server.domain.conversations.history import RecentHistory
from convergio_server.domain.conversations.metering import Meter, MeteredClient, Pricing, free
from convergio_server.domain.conversations.model import Conversation, Turn
from convergio_server.domain.conversations.runner import BuiltTeam
from convergio_server.domain.conversations.screening import ScreenedTool
from convergio_server.domain.conversations.selection import (
    Participant,
    PlanComplete,
    agent_replies_since_user,
    get_policy,
    policy_names,
)
from convergio_server.domain.events.model import ContextDocument
from convergio_server.domain.features import (
    RAG_IN_LOOP,
    SPEAKER_POLICY,
    TRUE_STREAMING,
    FeatureGate,
)
from convergio_server.domain.guards import AlertSink, CallInfo, Guards, ScreenedResult, TurnScope
from convergio_server.domain.knowledge import MAX_QUERY_CHARS, KnowledgeBase
from convergio_server.domain.models.factory import create_model_client, resolve_selection
from convergio_server.domain.models.selection import ModelInfoOverride, ModelSelection
from convergio_server.domain.models.tap import TappedClient, TextSink
from convergio_server.domain.tools.base import ToolContext
from convergio_server.domain.tools.registry import ToolRegistry

TURN_FEATURES = (RAG_IN_LOOP, TRUE_STREAMING, SPEAKER_POLICY)
# Knowledge-base documents put into a turn's context, and the least score that counts.
RAG_DOCUMENTS = 3
RAG_THRESHOLD = 0.01


def selection_to_json(selection: ModelSelection | None) -> dict[str, Any]:
    if selection is None:
        return {}
    data = asdict(selection)
    data.pop("extra", None)
    return {k: v for k, v in data.items() if v not in ("", None, 0, 0.0)}


def selection_from_json(data: dict[str, Any]) -> ModelSelection | None:
    if not data:
        return None
    values = dict(data)
    info = values.pop("model_info", None)
    return ModelSelection(
        **values, model_info=ModelInfoOverride(**info) if isinstance(info, dict) else None
    )


def _pricing(guards: Guards, provider: str, model: str) -> Pricing:
    """USD of a call from the cost guards' price table, when the guards have one."""
    prices = getattr(guards, "prices", None)
    if prices is None:
        return free
    from convergio_server.domain.costs.prices import call_cost

    price = prices.quote(provider, model).price

    def cost(prompt_tokens: int, completion_tokens: int) -> Decimal:
        return call_cost(price, prompt_tokens, completion_tokens)

    return cost


def model_label(selection: ModelSelection) -> str:
    return f"{selection.provider or 'offline'}/{selection.model}"


class AutogenTeamBuilder:
    def __init__(
        self,
        *,
        roster: Roster,
        tools: ToolRegistry,
        settings: Settings,
        flags: Callable[[], FeatureGate],
        guards: Callable[[], Guards],
        components: dict[str, Any],
        pool: Any,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.knowledge = knowledge
        self.roster = roster
        self.tools = tools
        self.settings = settings
        self.flags = flags
        self.guards = guards
        self.components = components
        self.pool = pool

    def resolve(self, principal: Principal, conversation: Conversation) -> tuple[str, list[str]]:
        gate = self.flags()
        features = [f for f in TURN_FEATURES if gate.enabled(principal, f)]
        policy = conversation.speaker_policy
        if not policy:
            # The flag turns on the scoring policy where one is installed.
            scoring = SPEAKER_POLICY in features and "scoring" in policy_names()
            policy = "scoring" if scoring else "simple"
        return policy, features

    def _selection(self, conversation: Conversation, agent: AgentSpec | None) -> ModelSelection:
        """Per-agent override, then the conversation's model, then the agent's default,
        then the server's."""
        own = selection_from_json(conversation.agent_models.get(agent.name, {})) if agent else None
        chosen = selection_from_json(conversation.model)
        if own is not None:
            chosen = own.over(chosen)
        resolved = resolve_selection(chosen, self.settings, agent)
        if not resolved.max_output_tokens:
            # The cap the cost guards reserve for is the one the provider is sent: without
            # it a model could answer at any length and spend past a budget.
            resolved = replace(
                resolved, max_output_tokens=self.settings.cost_default_max_output_tokens
            )
        return resolved

    def _client(
        self,
        selection: ModelSelection,
        meter: Meter,
        guards: Guards,
        call: CallInfo,
        text: TextSink | None,
        admittance: Admittance | None,
    ) -> tuple[ChatCompletionClient, Pricing, Any]:
        raw = create_model_client(selection, self.settings)
        provider, _, model = model_label(selection).partition("/")
        billed = guards.wrap_model_client(raw, call)
        pricing = _pricing(guards, provider, model)
        client: ChatCompletionClient = MeteredClient(billed, meter, pricing)
        if text is not None:
            client = TappedClient(client, call.agent, text)
        if admittance is not None:
            client = AdmittedClient(client, admittance)
        return client, pricing, raw.close

    def _history(
        self,
        client: ChatCompletionClient,
        selection: ModelSelection,
        system: str = "",
        tools: Sequence[Any] = (),
    ) -> RecentHistory:
        """A memory for one model's calls: the history setting, or less when the model's
        context window must also hold the system prompt, the tools and the answer."""
        prompt = [SystemMessage(content=system)] if system else []
        room = client.remaining_tokens(prompt, tools=tools)
        room -= selection.max_output_tokens or self.settings.cost_default_max_output_tokens
        return RecentHistory(min(self.settings.history_max_tokens, max(room, 1)))

    async def build(
        self,
        principal: Principal,
        conversation: Conversation,
        turn: Turn,
        policy: str,
        features: list[str],
        alerts: AlertSink | None = None,
        text: TextSink | None = None,
        admittance: Admittance | None = None,
    ) -> BuiltTeam:
        """With `admittance`, the team may run before the turn is admitted (see
        `admittance.py`)."""
        meter = Meter()
        guards = self.guards()
        scope = TurnScope(principal, conversation.id, turn.id, alerts)
        streaming = TRUE_STREAMING in features
        specs = [self.roster.get(name) for name in conversation.participants]
        agents: list[AssistantAgent] = []
        models: dict[str, str] = {}
        pricing: dict[str, Pricing] = {}
        risk: dict[str, str] = {}
        closers = []

        attempts: dict[str, int] = {}
        screened: dict[str, ScreenedResult] = {}

        async def screen(content: str) -> ScreenedResult:
            return await guards.screen_tool_result(scope, content)

        # Tools run once the turn is admitted (see `admittance.py`).
        ready = admittance.wait if admittance is not None else None
        ctx = ToolContext(
            tenant_id=principal.tenant_id,
            principal=principal,
            conversation_id=conversation.id,
            turn_id=turn.id,
            pool=self.pool,
            components=self.components,
        )
        for spec in specs:
            selection = self._selection(conversation, spec)
            label = model_label(selection)
            models[spec.name] = label
            provider, _, model = label.partition("/")
            call = CallInfo(
                scope, spec.name, provider, model, "agent_reply", selection.max_output_tokens
            )
            client, pricing[spec.name], close = self._client(
                selection, meter, guards, call, text if streaming else None, admittance
            )
            closers.append(close)
            # A model that cannot call functions (a small local one, as its model_info
            # says) answers without the agent's tools rather than failing every call.
            usable = spec.tools if client.model_info.get("function_calling", True) else ()
            offered = self.tools.autogen_tools(list(usable), ctx) if usable else []
            tools: list[Any] = [
                ScreenedTool(tool, screen, attempts, screened, ready)
                if isinstance(tool, BaseTool)
                else tool
                for tool in offered
            ]
            for name in usable:
                risk[name] = self.tools.get(name).risk_level.name
            agent = ParticipantAgent(
                spec.name,
                client,
                tools=tools or None,
                description=spec.selector_description,
                system_message=spec.system_message,
                model_client_stream=streaming,
                reflect_on_tool_use=True if tools else None,
                model_context=self._history(client, selection, spec.system_message, tools),
            )
            agents.append(agent)
        context, documents = await self._find_context(principal, turn, features)

        async def inject_context() -> None:
            # After the saved state is restored, which replaces the agents' memories.
            for document in documents:
                for agent in agents:
                    await agent.model_context.add_message(document)

        if len(agents) == 1 and conversation.team.single_agent:
            return BuiltTeam(
                runnable=agents[0],
                participants=[agents[0].name],
                policy="single",
                plan=None,
                meter=meter,
                models=models,
                risk=risk,
                features=features,
                closers=closers,
                pricing=pricing,
                context=context,
                inject_context=inject_context,
                history_tokens=self.settings.history_max_tokens,
                tool_attempts=attempts,
                screened=screened,
            )
        participants = [
            Participant(s.name, tuple(s.expertise), s.priority, s.description) for s in specs
        ]
        plan = get_policy(policy).plan(turn.content, participants, turn.options.max_turns)

        def select(messages: Sequence[Any]) -> str | None:
            selection = plan.next_selection()
            if selection is None:
                # Past the plan (only if the termination did not fire): the first speaker.
                return plan.speakers[0] if plan.speakers else None
            del messages
            return selection.agent

        def candidates(messages: Sequence[Any]) -> list[str]:
            index = agent_replies_since_user(messages)
            if index < len(plan.speakers):
                return [plan.speakers[index]]
            return [a.name for a in agents]

        # The selector model is only asked when the policy has no answer (never for "simple").
        selector_selection = self._selection(conversation, None)
        provider, _, model = model_label(selector_selection).partition("/")
        selector_client, _, close = self._client(
            selector_selection,
            meter,
            guards,
            CallInfo(scope, "selector", provider, model, "speaker_selection"),
            None,  # the selector's answers are not streamed
            admittance,
        )
        closers.append(close)
        team = SelectorGroupChat(
            list[Any](agents),
            model_client=selector_client,
            termination_condition=PlanComplete(plan),
            max_turns=turn.options.max_turns,
            selector_func=select,
            candidate_func=candidates,
            allow_repeated_speaker=True,
            model_context=self._history(selector_client, selector_selection),
        )
        return BuiltTeam(
            runnable=team,
            participants=[a.name for a in agents],
            policy=plan.policy,
            plan=plan,
            meter=meter,
            models=models,
            risk=risk,
            features=features,
            closers=closers,
            pricing=pricing,
            context=context,
            inject_context=inject_context,
            history_tokens=self.settings.history_max_tokens,
            tool_attempts=attempts,
            screened=screened,
        )

    async def _find_context(
        self, principal: Principal, turn: Turn, features: list[str]
    ) -> tuple[list[ContextDocument], list[LLMMessage]]:
        """The documents given with the message and, with the `rag_in_loop` flag on, the
        best knowledge-base matches: as reported, and as messages for every agent."""
        found: list[tuple[ContextDocument, str]] = []
        for index, doc in enumerate(turn.options.documents):
            content = doc.get("content", "")
            found.append(
                (
                    ContextDocument(
                        document_id=doc.get("document_id") or f"request-{index + 1}",
                        title=doc.get("title", ""),
                        snippet=content[:500],
                        score=1.0,
                        source="request",
                    ),
                    content,
                )
            )
        if RAG_IN_LOOP in features and self.knowledge is not None:
            hits = await self.knowledge.search(
                principal.tenant_id, turn.content[:MAX_QUERY_CHARS], limit=RAG_DOCUMENTS
            )
            for hit in hits:
                if hit.score < RAG_THRESHOLD:
                    continue
                found.append(
                    (
                        ContextDocument(
                            document_id=hit.document_id,
                            title=hit.title,
                            snippet=hit.snippet[:500],
                            score=round(hit.score, 4),
                            source="knowledge_base",
                            score_factors={
                                "relevance": round(hit.score, 4),
                                "importance": hit.importance,
                            },
                        ),
                        hit.snippet.replace("**", ""),
                    )
                )
        messages: list[LLMMessage] = [
            SystemMessage(content=f"Document: {document.title or document.document_id}\n{text}")
            for document, text in found
        ]
        return [document for document, _ in found], messages
