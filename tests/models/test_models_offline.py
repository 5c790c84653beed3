"""The offline model: deterministic, role-aware, grounded in its context, calls tools with
schema-valid arguments, streams word by word, counts tokens, honours cancellation, and runs
inside real AutoGen agents and teams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, Team
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import (
    ModelClientStreamingChunkEvent,
    SelectSpeakerEvent,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core import CancellationToken, FunctionCall
from autogen_core.memory import ListMemory, MemoryContent, MemoryMimeType
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import BaseTool
from convergio_server.domain.agents.roster import Roster
from convergio_server.domain.models.arguments import tool_score
from convergio_server.domain.models.offline import OfflineChatCompletionClient
from convergio_server.domain.models.text import count_text_tokens, stem
from convergio_server.domain.tools.base import ToolContext
from convergio_server.domain.tools.registry import ToolRegistry
from pydantic import BaseModel

from tests.models.calculator_tool import CALCULATOR

ROSTER = Roster.load()


def system(name: str) -> SystemMessage:
    return SystemMessage(content=ROSTER.get(name).system_message)


def ask(text: str, name: str = "amy") -> list[LLMMessage]:
    return [system(name), UserMessage(content=text, source="user")]


async def test_it_is_a_real_chat_completion_client_with_model_info() -> None:
    model = OfflineChatCompletionClient()
    assert isinstance(model, ChatCompletionClient)
    assert model.model_info["function_calling"] is True
    assert model.model_info["json_output"] is True
    assert model.model_info["vision"] is False
    # A component: its config round-trips.
    loaded = OfflineChatCompletionClient.load_component(model.dump_component())
    assert isinstance(loaded, OfflineChatCompletionClient)


async def test_same_input_same_output_and_usage() -> None:
    messages = ask("Should we raise prices by 5% next quarter?")
    first = await OfflineChatCompletionClient().create(messages)
    second = await OfflineChatCompletionClient().create(messages)
    assert first.content == second.content
    assert first.usage == second.usage
    assert first.finish_reason == "stop"
    assert isinstance(first.content, str)
    assert first.usage.completion_tokens == count_text_tokens(first.content)
    assert first.usage.prompt_tokens == OfflineChatCompletionClient().count_tokens(messages)


async def test_answers_in_the_voice_of_the_role() -> None:
    question = "Should we open an office in Berlin?"
    answers = {}
    for name in ("amy", "luca", "socrates", "wanda"):
        result = await OfflineChatCompletionClient().create(ask(question, name))
        assert isinstance(result.content, str)
        answers[name] = result.content.lower()
    assert "financial" in answers["amy"] or "numbers" in answers["amy"]
    assert "risk" in answers["luca"] or "security" in answers["luca"]
    assert "first principles" in answers["socrates"] or "asking" in answers["socrates"]
    assert "execut" in answers["wanda"] or "plan" in answers["wanda"]
    assert len(set(answers.values())) == 4


async def test_builds_on_earlier_messages_and_documents() -> None:
    messages: list[LLMMessage] = [
        system("amy"),
        SystemMessage(
            content="Document: Q3 report. Enterprise churn rose to 9% after the price change. "
            "The office plants were replaced."
        ),
        UserMessage(content="Marketing spend grew 20% while leads stayed flat.", source="sofia"),
        UserMessage(content="Why did churn rise, and what about marketing spend?", source="user"),
    ]
    result = await OfflineChatCompletionClient().create(messages)
    assert isinstance(result.content, str)
    assert "Enterprise churn rose to 9% after the price change." in result.content
    assert "Marketing spend grew 20% while leads stayed flat." in result.content
    assert "Sofia" in result.content
    assert "plants" not in result.content  # irrelevant sentences are not quoted


async def test_a_recap_request_quotes_the_latest_of_the_conversation() -> None:
    # Nothing in "summarize what we said" names the subject: the recap quotes what was said
    # last, oldest first, whatever its words.
    messages: list[LLMMessage] = [
        system("ali"),
        UserMessage(content="Our first warehouse is in Lyon.", source="user"),
        UserMessage(content="The Turin warehouse ships 400 pallets a week.", source="user"),
        AssistantMessage(content="Noted: Turin ships 400 pallets weekly.", source="ali"),
        UserMessage(content="Freight costs rose 12% since March.", source="amy"),
        UserMessage(content="Please summarize what we said so far.", source="user"),
    ]
    result = await OfflineChatCompletionClient().create(messages)
    assert isinstance(result.content, str)
    turin = result.content.index("The Turin warehouse ships 400 pallets a week.")
    freight = result.content.index("Freight costs rose 12% since March.")
    assert turin < freight
    assert "Amy" in result.content
    assert "Lyon" not in result.content  # the latest two, not everything
    assert "Noted: Turin" not in result.content  # not its own words


async def test_calls_a_tool_with_valid_json_arguments_then_answers_with_the_result() -> None:
    model = OfflineChatCompletionClient()
    request = ask("What is the NPV of cash flows -1000, 300, 400, 500 at 8%?")
    result = await model.create(request, tools=[CALCULATOR])
    assert result.finish_reason == "function_calls"
    assert isinstance(result.content, list) and len(result.content) == 1
    call = result.content[0]
    assert isinstance(call, FunctionCall) and call.name == "financial_calculator"
    arguments = json.loads(call.arguments)
    assert arguments == {"operation": "npv", "rate": 0.08, "values": [-1000, 300, 400, 500]}
    CALCULATOR.args_type().model_validate(arguments)  # satisfies the schema
    assert result.usage.completion_tokens > 0

    followed = [
        *request,
        AssistantMessage(content=[call], source="amy"),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(
                    content="NPV = 17.63", name=call.name, call_id=call.id, is_error=False
                )
            ]
        ),
    ]
    answer = await model.create(followed, tools=[CALCULATOR])
    assert answer.finish_reason == "stop"
    assert isinstance(answer.content, str) and "NPV = 17.63" in answer.content
    assert model.total_usage().prompt_tokens == (
        result.usage.prompt_tokens + answer.usage.prompt_tokens
    )


async def test_tool_calls_have_ids_of_their_own_and_the_same_arguments() -> None:
    # Several agents of a turn ask for the same calls: clients pair each call with its
    # result by id, so an id names one call only.
    registry = ToolRegistry.builtin()
    tools = registry.autogen_tools(registry.names(), ToolContext(tenant_id="t"))
    schemas = [t.schema for t in tools if isinstance(t, BaseTool)]
    question = (
        "Search the knowledge base for the pricing strategy and compute the NPV of "
        "-1000, 300, 400, 500 at 8%"
    )
    calls: list[FunctionCall] = []
    for name in ("domik", "amy", "amy"):
        result = await OfflineChatCompletionClient().create(ask(question, name), tools=schemas)
        assert isinstance(result.content, list) and len(result.content) == 2
        calls.extend(result.content)
    assert len({c.id for c in calls}) == len(calls)
    assert len({(c.name, c.arguments) for c in calls}) == 2  # the same calls, new ids


def offline_agents(names: Sequence[str]) -> list[ChatAgent | Team]:
    """Roster agents on the offline model with their tools, streaming, as a team has them."""
    registry = ToolRegistry.builtin()
    ctx = ToolContext(tenant_id="t", conversation_id="c")
    return [
        AssistantAgent(
            spec.name,
            model_client=OfflineChatCompletionClient(),
            system_message=spec.system_message,
            description=spec.selector_description,
            tools=registry.autogen_tools(spec.tools, ctx),
            model_client_stream=True,
            reflect_on_tool_use=True,
        )
        for spec in ROSTER.ordered(names)
    ]


async def test_the_core_team_makes_tool_calls_with_distinct_ids() -> None:
    agents = offline_agents(ROSTER.preset("core").agents)
    team = SelectorGroupChat(
        agents,
        model_client=OfflineChatCompletionClient(),
        termination_condition=MaxMessageTermination(6),
    )
    task = (
        "Search the knowledge base for the pricing strategy and compute the NPV of "
        "-1000, 300, 400, 500 at 8%"
    )
    events = [e async for e in team.run_stream(task=task)]
    requests = [e for e in events if isinstance(e, ToolCallRequestEvent)]
    assert len({e.source for e in requests}) >= 2  # several agents call the same tools
    ids = [call.id for e in requests for call in e.content]
    assert len(ids) >= 4 and len(set(ids)) == len(ids)
    results = [
        r.call_id for e in events if isinstance(e, ToolCallExecutionEvent) for r in e.content
    ]
    assert sorted(results) == sorted(ids)  # every result answers exactly one call


@pytest.mark.parametrize(
    "task",
    [
        "If I invest 10000 at 7% annual interest compounded for 10 years, how much will I have?",
        "In 10 years, what will $10,000 be worth at 7%?",
    ],
)
async def test_a_compound_interest_question_is_answered_with_the_future_value(task: str) -> None:
    registry = ToolRegistry.builtin()
    spec = ROSTER.get("amy")
    agent = AssistantAgent(
        "amy",
        model_client=OfflineChatCompletionClient(),
        system_message=spec.system_message,
        tools=registry.autogen_tools(spec.tools, ToolContext(tenant_id="t")),
        reflect_on_tool_use=True,
    )
    events = [e async for e in agent.run_stream(task=task)]
    requests = [e for e in events if isinstance(e, ToolCallRequestEvent)]
    executions = [e for e in events if isinstance(e, ToolCallExecutionEvent)]
    texts = [e for e in events if isinstance(e, TextMessage) and e.source == "amy"]
    assert [c.name for c in requests[0].content] == ["financial_calculator"]
    assert json.loads(requests[0].content[0].arguments)["operation"] == "future_value"
    outcome = executions[0].content[0]
    assert outcome.is_error is False and "Future value = 19,671.51 " in outcome.content
    assert len(texts) == 1 and "19,671.51" in texts[0].content
    assert "NPV =" not in texts[0].content


async def test_no_computing_tool_call_for_a_request_without_numbers() -> None:
    # Arguments come from the request: with no numbers in it, a calculation could only fail.
    registry = ToolRegistry.builtin()
    tools = registry.autogen_tools(registry.names(), ToolContext(tenant_id="t"))
    schemas = [t.schema for t in tools if isinstance(t, BaseTool)]
    for question in ("What is the future value of our brand?", "Should we even launch it?"):
        result = await OfflineChatCompletionClient().create(ask(question), tools=schemas)
        assert isinstance(result.content, str), result.content
    forced = await OfflineChatCompletionClient().create(
        ask("What is the future value of our brand?"), tools=[CALCULATOR], tool_choice="required"
    )
    assert isinstance(forced.content, list) and forced.content[0].name == "financial_calculator"


async def test_a_failed_tool_is_acknowledged() -> None:
    call = FunctionCall(id="c1", name="financial_calculator", arguments="{}")
    messages = [
        *ask("Compute the IRR of -100, 60, 70"),
        AssistantMessage(content=[call], source="amy"),
        FunctionExecutionResultMessage(
            content=[
                FunctionExecutionResult(
                    content="error (TIMEOUT): too slow", name=call.name, call_id="c1", is_error=True
                )
            ]
        ),
    ]
    answer = await OfflineChatCompletionClient().create(messages, tools=[CALCULATOR])
    assert isinstance(answer.content, str) and "failed" in answer.content


async def test_no_tool_call_when_the_request_does_not_ask_for_one() -> None:
    result = await OfflineChatCompletionClient().create(
        ask("How do we keep our best engineers?"), tools=[CALCULATOR]
    )
    assert isinstance(result.content, str)
    none = await OfflineChatCompletionClient().create(
        ask("What is the NPV of -10, 20 at 5%?"), tools=[CALCULATOR], tool_choice="none"
    )
    assert isinstance(none.content, str)


async def test_streams_word_by_word_then_the_result() -> None:
    model = OfflineChatCompletionClient()
    messages = ask("Should we hire two more analysts?")
    items = [item async for item in model.create_stream(messages)]
    chunks, final = items[:-1], items[-1]
    assert isinstance(final, CreateResult)
    assert all(isinstance(c, str) for c in chunks) and len(chunks) > 10
    assert "".join(c for c in chunks if isinstance(c, str)) == final.content
    assert all(len(str(c).split()) == 1 for c in chunks)
    assert final.usage.completion_tokens == count_text_tokens(str(final.content))
    assert model.actual_usage() == final.usage


async def test_a_fast_stream_lets_other_tasks_run() -> None:
    # At zero delay the model does not hold the event loop for a whole answer: other tasks
    # (the delivery of the first chunk, a cancel) run while it streams.
    model = OfflineChatCompletionClient(min_completion_tokens=2000)
    chunks = 0
    seen_during_stream: list[int] = []

    async def other_task() -> None:
        seen_during_stream.append(chunks)

    async def consume() -> None:
        nonlocal chunks
        async for item in model.create_stream(ask("Plan the launch")):
            if isinstance(item, str):
                chunks += 1
                if chunks == 1:
                    waiting = asyncio.ensure_future(other_task())
        await waiting

    await consume()
    assert seen_during_stream and 1 <= seen_during_stream[0] < chunks


async def test_min_and_max_completion_tokens() -> None:
    long = await OfflineChatCompletionClient(min_completion_tokens=300).create(ask("Budget?"))
    assert long.usage.completion_tokens >= 300
    short = await OfflineChatCompletionClient(max_completion_tokens=10).create(ask("Budget?"))
    assert short.usage.completion_tokens <= 10 and short.finish_reason == "length"


async def test_json_output() -> None:
    class Verdict(BaseModel):
        answer: str

    plain = await OfflineChatCompletionClient().create(ask("Fund it?"), json_output=True)
    assert "answer" in json.loads(str(plain.content))
    typed = await OfflineChatCompletionClient().create(ask("Fund it?"), json_output=Verdict)
    Verdict.model_validate_json(str(typed.content))


@pytest.mark.parametrize("tokens_per_second", [0.0, 5.0])
async def test_cancellation_mid_stream_stops_at_once(tokens_per_second: float) -> None:
    model = OfflineChatCompletionClient(tokens_per_second=tokens_per_second)
    token = CancellationToken()
    received: list[str] = []

    async def consume() -> None:
        async for item in model.create_stream(ask("Plan the launch"), cancellation_token=token):
            if isinstance(item, str):
                received.append(item)
                if len(received) == 3:
                    token.cancel()

    with pytest.raises(asyncio.CancelledError):
        await consume()
    assert len(received) == 3
    # The partial generation is billed.
    assert model.actual_usage().completion_tokens == sum(count_text_tokens(c) for c in received)


async def test_cancellation_interrupts_a_paced_wait() -> None:
    # One token per 1000 s: only the cancellation can end this wait.
    model = OfflineChatCompletionClient(tokens_per_second=0.001)
    token = CancellationToken()
    task = asyncio.ensure_future(model.create(ask("Plan it"), cancellation_token=token))
    await asyncio.sleep(0.01)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_call_without_streaming_is_billed_for_what_it_generated() -> None:
    # 100 tokens/s: after about 0.3 s about 30 tokens of the answer exist.
    model = OfflineChatCompletionClient(tokens_per_second=100.0, min_completion_tokens=400)
    token = CancellationToken()
    messages = ask("Tell me about budgeting")
    task = asyncio.ensure_future(model.create(messages, cancellation_token=token))
    await asyncio.sleep(0.3)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    usage = model.total_usage()
    assert usage.prompt_tokens == model.count_tokens(messages)
    assert 10 <= usage.completion_tokens < 400


def selector_prompt(participants: list[str], history: str) -> str:
    roles = "\n".join(f"{n}: {ROSTER.get(n).selector_description}" for n in participants)
    return (
        "You are in a role play game. The following roles are available:\n"
        f"{roles}.\nRead the following conversation. Then select the next role from "
        f"{participants} to play. Only return the role.\n\n{history}\n\n"
        f"Read the above conversation. Then select the next role from {participants} to play. "
        "Only return the role."
    )


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Is our customer data safe from attackers? Check GDPR compliance.", "luca"),
        ("What is the ROI and the budget impact of the new warehouse?", "amy"),
        ("Which KPIs and dashboard should we monitor after launch?", "diana"),
    ],
)
async def test_selects_the_next_speaker_by_expertise(question: str, expected: str) -> None:
    names = ["ali", "amy", "luca", "diana"]
    prompt = selector_prompt(names, f"user: {question}")
    result = await OfflineChatCompletionClient().create(
        [UserMessage(content=prompt, source="user")]
    )
    assert result.content == expected


async def test_selection_is_deterministic_and_moves_through_the_team() -> None:
    question = "user: What are the security risks of the plan?"
    prompt = selector_prompt(["ali", "luca", "amy"], question)
    first = await OfflineChatCompletionClient().create([SystemMessage(content=prompt)])
    again = await OfflineChatCompletionClient().create([SystemMessage(content=prompt)])
    assert first.content == again.content == "luca"
    # Once the security expert has spoken, the turn moves on instead of bouncing back.
    history = f"{question}\n\nluca: Access control is weak.\n\nwanda: Steps are ready."
    later = selector_prompt(["ali", "luca", "amy"], history)
    moved = await OfflineChatCompletionClient().create([SystemMessage(content=later)])
    assert moved.content in ("ali", "amy")


async def test_the_selector_phrase_in_a_conversation_is_not_a_selection() -> None:
    text = "Please select the next role from ['ali', 'amy'] for our play."
    result = await OfflineChatCompletionClient().create(ask(text))
    assert isinstance(result.content, str) and len(result.content.split()) > 5


def test_tool_schemas_count_in_the_prompt_whatever_form_they_come_in() -> None:
    client = OfflineChatCompletionClient()
    messages = ask("Hello")
    as_tool = client.count_tokens(messages, tools=[CALCULATOR])
    # AutoGen hands a fresh copy of each schema to every call.
    as_copy = client.count_tokens(messages, tools=[json.loads(json.dumps(CALCULATOR.schema))])
    assert as_tool == as_copy > client.count_tokens(messages)
    longer = json.loads(json.dumps(CALCULATOR.schema))
    longer["description"] += " It also explains every figure it returns, step by step."
    assert client.count_tokens(messages, tools=[longer]) > as_copy


def test_a_tools_terms_are_its_own_whatever_schema_came_before_under_its_name() -> None:
    # Terms are worked out once per schema: one of the same name that reads otherwise is
    # matched by what it says.
    request = "Convert 100 dollars to euros with the exchange rate"
    plain = "Does useful things."
    converter = "Converts an amount with an exchange rate."
    assert tool_score("helper", plain, request) == 0
    assert tool_score("helper", converter, request) >= 2
    assert tool_score("helper", plain, request) == 0
    listed = {"properties": {"currency": {"type": "string", "enum": ["euros", "yen"]}}}
    assert tool_score("helper", "Does useful things.", request, listed) == 2


def test_stems_ignore_plurals_and_verb_forms() -> None:
    assert stem("risks") == stem("risk") == "risk"
    assert stem("planning") == stem("plan") == stem("plans")
    assert stem("policies") == stem("policy")
    assert stem("process") == "proce" and stem("calculator") == stem("calculate")


async def test_assistant_agent_streams_calls_tools_and_reports_usage() -> None:
    registry = ToolRegistry.builtin()
    spec = ROSTER.get("amy")
    agent = AssistantAgent(
        "amy",
        model_client=OfflineChatCompletionClient(),
        system_message=spec.system_message,
        tools=registry.autogen_tools(spec.tools, ToolContext(tenant_id="t")),
        model_client_stream=True,
        reflect_on_tool_use=True,
    )
    events = [
        e async for e in agent.run_stream(task="Calculate the IRR of -5000, 1500, 2000, 2500")
    ]
    requests = [e for e in events if isinstance(e, ToolCallRequestEvent)]
    executions = [e for e in events if isinstance(e, ToolCallExecutionEvent)]
    chunks = [e for e in events if isinstance(e, ModelClientStreamingChunkEvent)]
    texts = [e for e in events if isinstance(e, TextMessage) and e.source == "amy"]
    assert requests and requests[0].content[0].name == "financial_calculator"
    assert executions and executions[0].content[0].is_error is False
    assert "IRR = 8.90%" in executions[0].content[0].content
    assert len(texts) == 1 and "IRR = 8.90%" in texts[0].content
    assert texts[0].models_usage is not None and texts[0].models_usage.completion_tokens > 0
    assert chunks and all(c.full_message_id == texts[0].id for c in chunks)
    assert "".join(c.content for c in chunks) == texts[0].content


async def test_selector_group_chat_runs_end_to_end_offline() -> None:
    agents = offline_agents(["ali", "amy", "luca"])
    team = SelectorGroupChat(
        agents,
        model_client=OfflineChatCompletionClient(),
        termination_condition=MaxMessageTermination(4),
        emit_team_events=True,
    )
    task = "What is the NPV of cash flows -1000, 300, 400, 500 at 8% and is it a security risk?"
    events = [e async for e in team.run_stream(task=task)]
    speakers = [e.content[0] for e in events if isinstance(e, SelectSpeakerEvent)]
    texts = [e for e in events if isinstance(e, TextMessage) and e.source != "user"]
    assert speakers[0] == "amy"  # the NPV question goes to the CFO
    assert any(isinstance(e, ToolCallRequestEvent) for e in events)
    assert any(isinstance(e, ModelClientStreamingChunkEvent) for e in events)
    assert len(texts) >= 2 and all(t.models_usage is not None for t in texts)
    assert len(set(speakers)) >= 2  # the turn moves on to another specialist
    # The team state is JSON-serialisable, so the runtime can save it.
    json.dumps(await team.save_state())


async def test_cancelling_an_agent_run_stops_the_stream() -> None:
    agent = AssistantAgent(
        "amy",
        model_client=OfflineChatCompletionClient(tokens_per_second=5),
        system_message=ROSTER.get("amy").system_message,
        model_client_stream=True,
    )
    token = CancellationToken()
    seen: list[object] = []
    with pytest.raises(asyncio.CancelledError):
        async for event in agent.run_stream(
            task="Plan next year's budget", cancellation_token=token
        ):
            seen.append(event)
            if isinstance(event, ModelClientStreamingChunkEvent):
                token.cancel()
    chunks = [e for e in seen if isinstance(e, ModelClientStreamingChunkEvent)]
    assert 1 <= len(chunks) <= 2  # stopped at the cancel, not at the end of the answer
    assert not any(isinstance(e, TextMessage) and e.source == "amy" for e in seen)


@pytest.mark.parametrize(
    ("request_text", "tool", "expected"),
    [
        ("Search the knowledge base for our refund policy", "search_knowledge_base", {}),
        ("How much has this conversation cost so far?", "conversation_cost", {}),
        ("Which workflow fits a product launch?", "workflow_catalog", {}),
        (
            "Break-even with fixed costs 10000, price 50, variable cost 30?",
            "financial_calculator",
            {"operation": "break_even", "values": [10000, 50, 30]},
        ),
        (
            "CAGR from 100 to 200 over 5 years",
            "financial_calculator",
            {"operation": "cagr", "values": [100, 200, 5]},
        ),
        (
            "Monthly loan payment for 200,000 at 5% over 30 years",
            "financial_calculator",
            {"operation": "loan_payment", "rate": 0.05, "values": [200000, 30]},
        ),
        (
            "If I invest 10000 at 7% annual interest compounded for 10 years, how much will "
            "I have?",
            "financial_calculator",
            {"operation": "future_value", "rate": 0.07, "values": [10000, 10]},
        ),
        (
            "What will 5000 be worth in 8 years at 4% compounded monthly?",
            "financial_calculator",
            {
                "operation": "future_value",
                "rate": 0.04,
                "values": [5000, 8],
                "periods_per_year": 12,
            },
        ),
        (
            "If I invest 500 a month at 6% for 20 years, how much will I have?",
            "financial_calculator",
            {
                "operation": "future_value",
                "rate": 0.06,
                "values": [0, 20],
                "periods_per_year": 12,
                "contribution": 500,
            },
        ),
        (
            # Named outright, the operation wins over the compounding.
            "Calculate the monthly payment on a 200000 loan at 5% compounded monthly over 30 years",
            "financial_calculator",
            {"operation": "loan_payment", "rate": 0.05, "values": [200000, 30]},
        ),
    ],
)
async def test_builtin_tools_get_schema_valid_arguments(
    request_text: str, tool: str, expected: dict[str, object]
) -> None:
    registry = ToolRegistry.builtin()
    tools = registry.autogen_tools(registry.names(), ToolContext(tenant_id="t"))
    schemas = [t.schema for t in tools if isinstance(t, BaseTool)]
    result = await OfflineChatCompletionClient().create(ask(request_text, "ali"), tools=schemas)
    assert isinstance(result.content, list), result.content
    call = result.content[0]
    assert call.name == tool
    arguments = json.loads(call.arguments)
    registry.get(tool).validate(arguments)  # raises if the schema is not satisfied
    assert {k: arguments[k] for k in expected} == expected


async def test_documents_injected_through_autogen_memory_are_quoted() -> None:
    memory = ListMemory()
    await memory.add(
        MemoryContent(
            content="The 2026 travel policy caps hotel costs at 150 EUR a night.",
            mime_type=MemoryMimeType.TEXT,
        )
    )
    agent = AssistantAgent(
        "amy",
        model_client=OfflineChatCompletionClient(),
        system_message=ROSTER.get("amy").system_message,
        memory=[memory],
    )
    result = await agent.run(task="What is the cap on hotel costs per night?")
    answer = result.messages[-1]
    assert isinstance(answer, TextMessage)
    assert "caps hotel costs at 150 EUR a night" in answer.content
