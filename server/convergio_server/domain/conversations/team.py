"""Builds the AutoGen team of one turn: an AssistantAgent per participant (its system
prompt, tools and model client), in a SelectorGroupChat whose next speaker comes from the
speaker policy, or the single agent alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage

from convergio_server.config import Settings
from convergio_server.domain.agents.roster import AgentSpec, Roster
from convergio_server.domain.auth import Principal
from convergio_server.domain.conversations.admittance import Admittance, AdmittedClient
from convergio_server.domain.conversations.agent import ParticipantAgent
from convergio_server.domain.conversations.history import RecentHistory
from convergio_server.domain.conversations.metering import Meter, MeteredClient, Pricing, free
from convergio_server.domain.conversations.model import Conversation, Turn
from convergio_server.domain.conversations.runner import BuiltTeam, TeamRequest
from convergio_server.domain.conversations.screening import Screen, ScreenedTool, findings_of
from convergio_server.domain.conversations.selection import (
    CurrentPlan,
    Participant,
    Plan,
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
from convergio_server.domain.guards import CallInfo, Guards, ScreenedResult, TurnScope
from convergio_server.domain.knowledge import MAX_QUERY_CHARS, KnowledgeBase
from convergio_server.domain.models.delegating import SwitchedClient
from convergio_server.domain.models.factory import create_model_client, resolve_selection
from convergio_server.domain.models.selection import ModelInfoOverride, ModelSelection
from convergio_server.domain.models.tap import TappedClient, TextSink
from convergio_server.domain.tools.base import ToolContext
from convergio_server.domain.tools.registry import AutogenTool, ToolRegistry

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


@dataclass(frozen=True)
class _Shape:
    """What a team is made of: a turn that needs another shape gets a team of its own. The
    models as the conversation names them (the server's settings resolve them the same way
    every time)."""

    specs: tuple[AgentSpec, ...]
    model: dict[str, Any]
    agent_models: dict[str, dict[str, Any]]
    single: bool
    policy: str
    features: tuple[str, ...]
    max_turns: int


@dataclass
class _Member:
    """A model's client and tools, kept with the team; what they report to (the turn's
    meter, guards, text sink and admission) is switched at every turn."""

    spec: AgentSpec | None  # None for the speaker selector
    selection: ModelSelection
    raw: ChatCompletionClient
    client: SwitchedClient
    tools: list[ScreenedTool]
    streaming: bool


@dataclass
class _Kept:
    """What `reuse` needs of a built team."""

    shape: _Shape
    guards: Guards
    members: list[_Member]
    selector: _Member | None
    plan: CurrentPlan
    agents: list[AssistantAgent] = field(default_factory=list)


async def _unscreened(content: str) -> ScreenedResult:
    return ScreenedResult(content)


_NO_CONTEXT = ToolContext(tenant_id="")


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

    @staticmethod
    def _point(
        member: _Member,
        scope: TurnScope,
        meter: Meter,
        guards: Guards,
        text: TextSink | None,
        admittance: Admittance | None,
    ) -> Pricing:
        """Put the turn's wrappers (guards, meter, text tap, admittance) behind the member's
        client; the cost of one of its calls."""
        provider, _, model = model_label(member.selection).partition("/")
        if member.spec is None:
            call = CallInfo(scope, "selector", provider, model, "speaker_selection")
        else:
            call = CallInfo(
                scope,
                member.spec.name,
                provider,
                model,
                "agent_reply",
                member.selection.max_output_tokens,
            )
        billed = guards.wrap_model_client(member.raw, call)
        pricing = _pricing(guards, provider, model)
        client: ChatCompletionClient = MeteredClient(billed, meter, pricing)
        if text is not None and member.streaming:
            client = TappedClient(client, call.agent, text)
        if admittance is not None:
            client = AdmittedClient(client, admittance)
        member.client.use(client)
        return pricing

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

    def _shape(self, request: TeamRequest) -> _Shape:
        conversation = request.conversation
        specs = tuple(self.roster.get(name) for name in conversation.participants)
        return _Shape(
            specs=specs,
            model=conversation.model,
            agent_models=conversation.agent_models,
            single=len(specs) == 1 and bool(conversation.team.single_agent),
            policy=request.policy,
            features=tuple(request.features),
            max_turns=request.turn.options.max_turns,
        )

    async def build(self, request: TeamRequest) -> BuiltTeam:
        shape = self._shape(request)
        guards = self.guards()
        streaming = TRUE_STREAMING in request.features
        members: list[_Member] = []
        risk: dict[str, str] = {}
        models: dict[str, str] = {}
        closers: list[Callable[[], Awaitable[None]]] = []
        for spec in shape.specs:
            selection = self._selection(request.conversation, spec)
            raw = create_model_client(selection, self.settings)
            closers.append(raw.close)
            models[spec.name] = model_label(selection)
            # A model that cannot call functions (a small local one, as its model_info
            # says) answers without the agent's tools rather than failing every call.
            usable = spec.tools if raw.model_info.get("function_calling", True) else ()
            tools = [self.tools.get(name) for name in dict.fromkeys(usable)]
            for tool in tools:
                risk[tool.name] = tool.risk_level.name
            members.append(
                _Member(
                    spec,
                    selection,
                    raw,
                    SwitchedClient(raw),
                    [ScreenedTool(AutogenTool(t, _NO_CONTEXT), _unscreened) for t in tools],
                    streaming,
                )
            )
        selector: _Member | None = None
        if not shape.single:
            selection = self._selection(request.conversation, None)
            raw = create_model_client(selection, self.settings)
            closers.append(raw.close)
            # The selector's answers are not streamed.
            selector = _Member(None, selection, raw, SwitchedClient(raw), [], False)
        kept = _Kept(shape, guards, members, selector, CurrentPlan())
        bound = self._bind(kept, request)
        agents: list[AssistantAgent] = []
        for member in members:
            assert member.spec is not None
            agents.append(
                ParticipantAgent(
                    member.spec.name,
                    member.client,
                    tools=list[Any](member.tools) or None,
                    description=member.spec.selector_description,
                    system_message=member.spec.system_message,
                    model_client_stream=member.streaming,
                    reflect_on_tool_use=True if member.tools else None,
                    model_context=self._history(
                        member.client, member.selection, member.spec.system_message, member.tools
                    ),
                )
            )
        kept.agents = agents
        if selector is None:
            runnable: Any = agents[0]
        else:
            holder = kept.plan

            def select(messages: Sequence[Any]) -> str | None:
                del messages
                selection = holder.plan.next_selection()
                if selection is None:
                    # Past the plan (only if the termination did not fire): the first speaker.
                    return holder.plan.speakers[0] if holder.plan.speakers else None
                return selection.agent

            def candidates(messages: Sequence[Any]) -> list[str]:
                index = agent_replies_since_user(messages)
                if index < len(holder.plan.speakers):
                    return [holder.plan.speakers[index]]
                return [a.name for a in agents]

            runnable = SelectorGroupChat(
                list[Any](agents),
                model_client=selector.client,
                termination_condition=PlanComplete(holder),
                max_turns=shape.max_turns,
                selector_func=select,
                candidate_func=candidates,
                allow_repeated_speaker=True,
                model_context=self._history(selector.client, selector.selection),
            )
        built = replace(
            bound,
            runnable=runnable,
            participants=[a.name for a in agents],
            models=models,
            risk=risk,
            closers=closers,
            history_tokens=self.settings.history_max_tokens,
        )
        return await self._with_context(built, request)

    async def reuse(self, team: BuiltTeam, request: TeamRequest) -> BuiltTeam | None:
        """`team`, which ran an earlier turn of this conversation, made ready for this one;
        None when the team this turn needs differs (other agents, models, features, policy,
        turn limit, guards): then build one."""
        kept = team.kept
        if not isinstance(kept, _Kept) or kept.guards is not self.guards():
            return None
        if kept.shape != self._shape(request):
            return None
        bound = self._bind(kept, request)
        again = replace(
            team,
            plan=bound.plan,
            policy=bound.policy,
            meter=bound.meter,
            pricing=bound.pricing,
            tool_attempts=bound.tool_attempts,
            screened=bound.screened,
            screen=bound.screen,
        )
        return await self._with_context(again, request)

    def _bind(self, kept: _Kept, request: TeamRequest) -> BuiltTeam:
        """Point the team's model clients and tools at the request's turn: its meter, guards
        scope, text sink, admittance and tool context; plan its speakers."""
        principal, conversation, turn = request.principal, request.conversation, request.turn
        text, admittance = request.text, request.admittance
        guards = kept.guards
        meter = Meter()
        scope = TurnScope(principal, conversation.id, turn.id, request.alerts)
        attempts: dict[str, int] = {}
        screened: dict[str, ScreenedResult] = {}
        screen = _screening(guards, scope)

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
        pricing: dict[str, Pricing] = {}
        for member in kept.members:
            assert member.spec is not None
            pricing[member.spec.name] = self._point(member, scope, meter, guards, text, admittance)
            for tool in member.tools:
                assert isinstance(tool.inner, AutogenTool)
                tool.bind(AutogenTool(tool.inner.tool, ctx), screen, attempts, screened, ready)
        plan: Plan | None = None
        if kept.selector is not None:
            self._point(kept.selector, scope, meter, guards, text, admittance)
            participants = [
                Participant(s.name, tuple(s.expertise), s.priority, s.description)
                for s in kept.shape.specs
            ]
            plan = get_policy(kept.shape.policy).plan(
                turn.content, participants, turn.options.max_turns
            )
            kept.plan.plan = plan
        return BuiltTeam(
            runnable=None,
            participants=[s.name for s in kept.shape.specs],
            policy=plan.policy if plan is not None else "single",
            plan=plan,
            meter=meter,
            models={},
            features=list(kept.shape.features),
            pricing=pricing,
            tool_attempts=attempts,
            screened=screened,
            screen=screen,
            kept=kept,
        )

    async def _with_context(self, team: BuiltTeam, request: TeamRequest) -> BuiltTeam:
        """`team` with the turn's documents, which go into its agents' memories once their
        saved state is restored."""
        assert team.screen is not None  # (set by `_bind`)
        context, documents = await self._find_context(
            request.principal, request.turn, team.features, team.screen
        )
        agents = team.kept.agents

        async def inject_context() -> None:
            for document in documents:
                for agent in agents:
                    await agent.model_context.add_message(document)

        return replace(team, context=context, inject_context=inject_context)

    async def _find_context(
        self, principal: Principal, turn: Turn, features: list[str], screen: Screen
    ) -> tuple[list[ContextDocument], list[LLMMessage]]:
        """The documents given with the message and, with the `rag_in_loop` flag on, the
        best knowledge-base matches: as reported, and as messages for every agent. The
        message's documents passed the input screening with it; the knowledge base's pass
        it here, as tool results do (secrets redacted, instructions marked or withheld)."""
        found: list[tuple[ContextDocument, str | None]] = []
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
                screened = await screen(hit.snippet.replace("**", ""))
                if screened.blocked:
                    snippet, text = "", None
                else:
                    # The search's highlighted snippet, unless screening changed the text.
                    snippet = (screened.text if screened.rules else hit.snippet)[:500]
                    text = screened.text
                found.append(
                    (
                        ContextDocument(
                            document_id=hit.document_id,
                            title=hit.title,
                            snippet=snippet,
                            score=round(hit.score, 4),
                            source="knowledge_base",
                            score_factors={
                                "relevance": round(hit.score, 4),
                                "importance": hit.importance,
                            },
                            screening_findings=findings_of(screened),
                            withheld=screened.blocked,
                        ),
                        text,
                    )
                )
        messages: list[LLMMessage] = [
            SystemMessage(content=f"Document: {document.title or document.document_id}\n{text}")
            for document, text in found
            if text is not None
        ]
        return [document for document, _ in found], messages


def _screening(guards: Guards, scope: TurnScope) -> Screen:
    """The input screening of what reaches a turn's models from outside it (tool results,
    knowledge-base documents)."""

    async def screen(content: str) -> ScreenedResult:
        return await guards.screen_tool_result(scope, content)

    return screen
