"""OpenAI-compatible endpoints, against a local server speaking the protocol with
server-sent events: streaming, usage, tool calls, retries, errors, timeouts; and the
factory that picks the provider from the selection, the agent and the settings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import (
    ModelClientStreamingChunkEvent,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, LLMMessage, SystemMessage, UserMessage
from convergio_server.config import Settings
from convergio_server.domain.agents.roster import Roster
from convergio_server.domain.conversations.agent import ParticipantAgent
from convergio_server.domain.errors import InvalidArgument
from convergio_server.domain.models.errors import ModelError
from convergio_server.domain.models.factory import (
    check_selection,
    create_model_client,
    resolve_api_key,
    resolve_selection,
)
from convergio_server.domain.models.offline import OfflineChatCompletionClient
from convergio_server.domain.models.openai_compat import OpenAICompatChatCompletionClient
from convergio_server.domain.models.selection import ModelInfoOverride, ModelSelection
from convergio_server.domain.tools.base import ToolContext
from convergio_server.domain.tools.registry import ToolRegistry
from pydantic import SecretStr, ValidationError

from tests.models.openai_stub import Action, openai_stub

MESSAGES: list[LLMMessage] = [
    SystemMessage(content="You are Amy, Chief Financial Officer."),
    UserMessage(content="Say hello", source="user"),
]


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def client(base_url: str, **kwargs: object) -> OpenAICompatChatCompletionClient:
    options: dict[str, object] = {"timeout_seconds": 5.0, "max_retries": 2, **kwargs}
    return OpenAICompatChatCompletionClient(
        model="llama3.1:8b",
        base_url=base_url,
        api_key="sk-test-123",
        **options,  # type: ignore[arg-type]
    )


async def test_streams_content_and_reports_usage() -> None:
    async with openai_stub() as stub:
        model = client(stub.base_url)
        items = [item async for item in model.create_stream(MESSAGES)]
        await model.close()
    chunks, final = items[:-1], items[-1]
    assert chunks == ["Hello", " from", " the", " stub"]
    assert isinstance(final, CreateResult) and final.content == "Hello from the stub"
    assert final.usage.prompt_tokens == 11 and final.usage.completion_tokens == 7
    request = stub.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["model"] == "llama3.1:8b"
    assert request.headers["authorization"] == "Bearer sk-test-123"
    # Unknown model name: function calling only.
    assert model.model_info["function_calling"] is True and model.model_info["vision"] is False


async def test_non_streamed_call_does_not_send_stream_options() -> None:
    async with openai_stub() as stub:
        result = await client(stub.base_url, temperature=0.2, max_output_tokens=50).create(MESSAGES)
    assert result.content == "Hello from the stub" and result.usage.completion_tokens == 7
    body = stub.requests[0].body
    assert "stream_options" not in body and body["temperature"] == 0.2
    assert body["max_tokens"] == 50


async def test_streamed_tool_call_becomes_function_calls() -> None:
    async with openai_stub() as stub:
        stub.then(Action("tool"))
        items = [item async for item in client(stub.base_url).create_stream(MESSAGES)]
    final = items[-1]
    assert isinstance(final, CreateResult) and final.finish_reason == "function_calls"
    assert isinstance(final.content, list)
    call = final.content[0]
    assert isinstance(call, FunctionCall) and call.name == "financial_calculator"
    assert json.loads(call.arguments) == {
        "operation": "npv",
        "rate": 0.08,
        "values": [-100, 60, 70],
    }


async def test_rate_limit_and_server_errors_are_retried() -> None:
    async with openai_stub() as stub:
        stub.then(Action("status", status=429), Action("status", status=503), Action("text"))
        items = [item async for item in client(stub.base_url).create_stream(MESSAGES)]
    assert isinstance(items[-1], CreateResult) and items[-1].content == "Hello from the stub"
    assert len(stub.requests) == 3


async def test_a_stream_past_max_tokens_is_cut_there_and_closed() -> None:
    """An endpoint that ignores max_tokens: the answer ends at the cap, as a length-capped
    answer ends, the connection is closed, and the usage says what was taken, not what the
    endpoint would have sent (its own count is never read)."""
    async with openai_stub() as stub:
        stub.then(Action("runaway", words=2000))
        model = client(stub.base_url, max_output_tokens=25)
        items = [item async for item in model.create_stream(MESSAGES)]
        await stub.answered()
        await model.close()
    chunks, final = items[:-1], items[-1]
    assert chunks == ["word0", *(f" word{i}" for i in range(1, 25))]
    assert isinstance(final, CreateResult) and final.finish_reason == "length"
    assert final.content == "".join(str(c) for c in chunks)
    # The prompt as the cost guards count it when they reserve (the endpoint's count never
    # came), and the 25 tokens taken.
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (
        model.count_tokens(MESSAGES), 25,
    )  # fmt: skip
    assert model.total_usage() == final.usage == model.actual_usage()
    assert stub.requests[0].body["max_tokens"] == 25
    assert stub.requests[0].hung_up  # it stopped reading before the endpoint was done


async def test_a_tool_call_past_max_tokens_is_cut_there_too() -> None:
    async with openai_stub() as stub:
        stub.then(Action("runaway_tool", words=500))
        model = client(stub.base_url, max_output_tokens=30)
        items = [item async for item in model.create_stream(MESSAGES)]
        await stub.answered()
    final = items[-1]
    assert isinstance(final, CreateResult) and final.usage.completion_tokens <= 30
    assert isinstance(final.content, list) and final.content[0].name == "financial_calculator"
    assert final.content[0].arguments.startswith('{"values": [0, 1, 2')
    assert stub.requests[0].hung_up


async def test_an_answer_within_max_tokens_is_not_cut() -> None:
    async with openai_stub() as stub:
        # Exactly at the cap: a server that streams token by token sends 4 chunks here.
        stub.then(Action("text"), Action("runaway", words=4, linger_seconds=0))
        capped = client(stub.base_url, max_output_tokens=4)
        items = [item async for item in capped.create_stream(MESSAGES)]
        again = [item async for item in capped.create_stream(MESSAGES)]
    final = items[-1]
    assert isinstance(final, CreateResult) and final.finish_reason == "stop"
    assert final.content == "Hello from the stub" and final.usage.completion_tokens == 7
    last = again[-1]
    assert isinstance(last, CreateResult) and last.content == "word0 word1 word2 word3"
    assert last.finish_reason == "stop" and last.usage.completion_tokens == 4


async def test_a_stream_without_usage_is_counted_not_free() -> None:
    async with openai_stub() as stub:
        stub.then(Action("text", report_usage=False))
        model = client(stub.base_url)
        items = [item async for item in model.create_stream(MESSAGES)]
    final = items[-1]
    assert isinstance(final, CreateResult) and final.content == "Hello from the stub"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (
        model.count_tokens(MESSAGES), 4,
    )  # fmt: skip
    assert model.total_usage() == final.usage


# AutoGen warns about the empty result a garbage stream gives before it becomes an error.
@pytest.mark.filterwarnings("ignore:No text content or tool calls:UserWarning")
@pytest.mark.parametrize(
    ("action", "kind", "retryable", "requests"),
    [
        (Action("status", status=500), "server_error", True, 3),
        (Action("status", status=429), "rate_limited", True, 3),
        (Action("status", status=401), "authentication", False, 1),
        (Action("status", status=404), "not_found", False, 1),
        (Action("status", status=400), "bad_request", False, 1),
        (Action("garbage"), "invalid_response", False, 1),
        (Action("truncated"), "invalid_response", False, 1),
        # The connection drops mid-body: the endpoint was reached, its answer is cut off.
        (Action("cut"), "invalid_response", False, 1),
    ],
)
async def test_failures_become_model_errors(
    action: Action, kind: str, retryable: bool, requests: int
) -> None:
    async with openai_stub() as stub:
        stub.then(action, action, action)
        with pytest.raises(ModelError) as info:
            async for _ in client(stub.base_url).create_stream(MESSAGES):
                pass
    error = info.value
    assert error.kind == kind and error.retryable is retryable
    assert "sk-test-123" not in str(error)
    assert len(stub.requests) == requests


async def test_garbage_on_a_plain_call_is_a_model_error() -> None:
    async with openai_stub() as stub:
        stub.then(Action("garbage"))
        with pytest.raises(ModelError) as info:
            await client(stub.base_url).create(MESSAGES)
    assert info.value.kind == "invalid_response"


async def test_a_hanging_endpoint_times_out() -> None:
    async with openai_stub() as stub:
        stub.then(Action("hang"), Action("hang"))
        model = client(stub.base_url, timeout_seconds=0.3, max_retries=0)
        with pytest.raises(ModelError) as info:
            async for _ in model.create_stream(MESSAGES):
                pass
        assert info.value.kind == "timeout" and info.value.retryable
        with pytest.raises(ModelError) as plain:
            await model.create(MESSAGES)
        assert plain.value.kind == "timeout"


async def test_endpoint_down_is_unavailable() -> None:
    async with openai_stub() as stub:
        url = stub.base_url
    with pytest.raises(ModelError) as info:
        await client(url, max_retries=0).create(MESSAGES)
    assert info.value.kind == "unavailable"


@pytest.mark.parametrize("streaming", [False, True])
async def test_an_endpoint_down_is_unavailable_even_when_retries_outlast_the_timeout(
    streaming: bool,
) -> None:
    async with openai_stub() as stub:
        url = stub.base_url
    # The client library retries refused connections with backoff; the call's timeout ends
    # those retries first. The request never left: unreachable, not slow, and free.
    model = client(url, timeout_seconds=0.5, max_retries=8)
    with pytest.raises(ModelError) as info:
        if streaming:
            async for _ in model.create_stream(MESSAGES):
                pass
        else:
            await model.create(MESSAGES)
    assert info.value.kind == "unavailable" and not info.value.sent
    assert "cannot be reached" in info.value.message and "did not answer" not in info.value.message


async def test_a_slow_endpoint_was_sent_the_request() -> None:
    async with openai_stub() as stub:
        stub.then(Action("hang"))
        with pytest.raises(ModelError) as info:
            await client(stub.base_url, timeout_seconds=0.3, max_retries=0).create(MESSAGES)
    assert info.value.kind == "timeout" and info.value.sent


async def test_cancellation_aborts_the_call() -> None:
    async with openai_stub() as stub:
        stub.then(Action("hang"))
        token = CancellationToken()
        task = asyncio.ensure_future(
            client(stub.base_url).create(MESSAGES, cancellation_token=token)
        )
        await asyncio.wait_for(stub.received.wait(), 30)
        token.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_counts_tokens_offline() -> None:
    model = client("http://127.0.0.1:9/v1")
    assert model.count_tokens(MESSAGES) == OfflineChatCompletionClient().count_tokens(MESSAGES)
    assert model.remaining_tokens(MESSAGES) == 128_000 - model.count_tokens(MESSAGES)


async def test_assistant_agent_over_the_endpoint_streams_and_calls_tools() -> None:
    async with openai_stub() as stub:
        stub.then(Action("tool"), Action("text", text="The NPV is 15.57"))
        agent = AssistantAgent(
            "amy",
            model_client=client(stub.base_url),
            tools=ToolRegistry.builtin().autogen_tools(
                ["financial_calculator"], ToolContext(tenant_id="t")
            ),
            model_client_stream=True,
            reflect_on_tool_use=True,
        )
        events = [e async for e in agent.run_stream(task="NPV of -100, 60, 70 at 8%?")]
    execution = next(e for e in events if isinstance(e, ToolCallExecutionEvent))
    assert "NPV = 15.57" in execution.content[0].content
    assert any(isinstance(e, ToolCallRequestEvent) for e in events)
    assert any(isinstance(e, ModelClientStreamingChunkEvent) for e in events)
    text = next(e for e in events if isinstance(e, TextMessage) and e.source == "amy")
    assert text.content == "The NPV is 15.57"
    assert text.models_usage is not None and text.models_usage.completion_tokens == 7
    # The tool result went back to the endpoint.
    last = stub.requests[-1].body["messages"]
    assert last[-1]["role"] == "tool" and "NPV = 15.57" in last[-1]["content"]


@pytest.mark.parametrize(
    ("tools", "call", "expected"),
    [
        (
            ["financial_calculator"],
            Action("tool", tool_arguments='{"operation": "npv", "values": [1'),
            "error (INVALID_ARGUMENTS): arguments are not a JSON object: not valid JSON "
            "(Expecting ',' delimiter: line 1 column 34 (char 33))",
        ),
        (
            ["financial_calculator"],
            Action("tool", tool_arguments="null"),
            "error (INVALID_ARGUMENTS): arguments are not a JSON object: got null",
        ),
        (
            ["financial_calculator", "conversation_cost"],
            Action("tool", tool_name="fx_convert"),
            "error (UNKNOWN_TOOL): amy has no tool 'fx_convert'; "
            "its tools are financial_calculator, conversation_cost",
        ),
        (
            [],
            Action("tool", tool_name="fx_convert"),
            "error (UNKNOWN_TOOL): amy has no tool 'fx_convert'; it has no tools",
        ),
        # Blank arguments are a call without arguments, as the tools read them.
        (
            ["workflow_catalog"],
            Action("tool", tool_name="workflow_catalog", tool_arguments=""),
            "strategic_analysis",
        ),
    ],
)
async def test_calls_autogen_would_refuse_get_tool_error_kinds(
    tools: list[str], call: Action, expected: str
) -> None:
    async with openai_stub() as stub:
        stub.then(call, Action("text", text="Answered without it"))
        agent = ParticipantAgent(
            "amy",
            model_client=client(stub.base_url),
            tools=ToolRegistry.builtin().autogen_tools(tools, ToolContext(tenant_id="t")) or None,
            model_client_stream=True,
            reflect_on_tool_use=True,
        )
        events = [e async for e in agent.run_stream(task="NPV of -100, 60, 70 at 8%?")]
    execution = next(e for e in events if isinstance(e, ToolCallExecutionEvent))
    result = execution.content[0]
    assert result.name == call.tool_name and result.call_id == "call_1"
    if expected.startswith("error ("):
        assert result.is_error and result.content == expected
    else:
        assert not result.is_error and expected in result.content
    text = next(e for e in events if isinstance(e, TextMessage) and e.source == "amy")
    assert text.content == "Answered without it"
    last = stub.requests[-1].body["messages"]
    assert last[-1]["role"] == "tool" and last[-1]["content"] == result.content


def test_offline_is_the_default(tmp_path: Path) -> None:
    made = create_model_client(None, settings(tmp_path))
    assert isinstance(made, OfflineChatCompletionClient) and made.model == "offline"
    paced = create_model_client(None, settings(tmp_path, offline_tokens_per_second=50.0))
    assert isinstance(paced, OfflineChatCompletionClient)
    assert paced.dump_component().config["tokens_per_second"] == 50.0


async def test_offline_answers_can_be_made_longer(tmp_path: Path) -> None:
    question = [UserMessage(content="What do you think of the plan?", source="user")]
    short = await create_model_client(None, settings(tmp_path)).create(question)
    padded = create_model_client(None, settings(tmp_path, offline_min_answer_tokens=400))
    long = await padded.create(question)
    assert short.usage.completion_tokens < 400 <= long.usage.completion_tokens
    assert isinstance(long.content, str) and long.content.startswith(str(short.content)[:40])


def test_openai_settings_make_it_the_default(tmp_path: Path) -> None:
    configured = settings(
        tmp_path,
        openai_base_url="http://127.0.0.1:9/v1",
        openai_api_key=SecretStr("sk-default"),
        openai_model="qwen2.5",
    )
    made = create_model_client(None, configured)
    assert isinstance(made, OpenAICompatChatCompletionClient) and made.model == "qwen2.5"
    # A conversation can still choose the offline model.
    offline = create_model_client(ModelSelection(provider="offline"), configured)
    assert isinstance(offline, OfflineChatCompletionClient)


def test_selection_precedence_over_agent_and_settings(tmp_path: Path) -> None:
    amy = Roster.load().get("amy")  # temperature 0.2 in the roster
    resolved = resolve_selection(ModelSelection(provider="offline"), settings(tmp_path), amy)
    assert resolved.provider == "offline" and resolved.temperature == 0.2
    hot = resolve_selection(ModelSelection(temperature=1.0), settings(tmp_path), amy)
    assert hot.temperature == 1.0 and hot.provider == "offline"
    custom = resolve_selection(
        ModelSelection(
            provider="openai",
            base_url="http://10.0.0.5:8000/v1",
            model="mistral",
            model_info=ModelInfoOverride(vision=True, family="mistral"),
        ),
        settings(tmp_path),
        amy,
    )
    assert custom.model == "mistral" and custom.base_url == "http://10.0.0.5:8000/v1"
    made = create_model_client(custom, settings(tmp_path))
    assert made.model_info["vision"] is True and made.model_info["family"] == "mistral"


def test_api_keys_come_from_offered_secrets_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGIO_MODEL_KEY_REFS", "TEAM_KEY, MISSING_KEY")
    configured = settings(
        tmp_path, openai_base_url="https://api.example/v1", openai_api_key=SecretStr("sk-default")
    )
    env = {"TEAM_KEY": "sk-team", "DATABASE_URL": "postgresql://u:secret@db/x"}
    default = resolve_selection(ModelSelection(provider="openai"), configured)
    assert resolve_api_key(default, configured, env) == "sk-default"
    named = ModelSelection(provider="openai", api_key_ref="TEAM_KEY")
    assert resolve_api_key(named, configured, env) == "sk-team"
    # The deployment's key never goes to an endpoint the caller picked.
    elsewhere = ModelSelection(provider="openai", base_url="https://evil.example/v1")
    assert resolve_api_key(elsewhere, configured, env) == ""
    with pytest.raises(ModelError) as info:
        resolve_api_key(ModelSelection(api_key_ref="MISSING_KEY"), configured, env)
    assert info.value.kind == "configuration" and "MISSING_KEY" in str(info.value)
    with pytest.raises(ModelError, match="http:// or https://"):
        create_model_client(ModelSelection(provider="openai", base_url="ftp://x"), configured)


@pytest.mark.parametrize("name", ["DATABASE_URL", "database_url", "HOME", "NOT_SET_ANYWHERE"])
def test_an_unoffered_key_ref_is_refused_at_call_time(tmp_path: Path, name: str) -> None:
    """A selection stored before keys had to be offered (or from a roster file) never
    went through `check_selection`: the call itself refuses it."""
    configured = settings(tmp_path, model_key_refs="TEAM_KEY")
    env = {"TEAM_KEY": "sk-team", "DATABASE_URL": "postgresql://u:secret@db/x", "HOME": "/root"}
    stored = ModelSelection(provider="openai", base_url="https://evil.example/v1", api_key_ref=name)
    with pytest.raises(ModelError) as info:
        resolve_api_key(stored, configured, env)
    assert info.value.kind == "configuration"
    assert "CONVERGIO_MODEL_KEY_REFS" in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(ModelError):
        create_model_client(stored, configured, environ=env)


@pytest.mark.parametrize(
    "name", ["CONVERGIO_OPENAI_API_KEY", "convergio_openai_api_key", "DATABASE_URL", "REDIS_URL"]
)
def test_the_servers_own_settings_are_never_offered(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="model_key_refs"):
        settings(tmp_path, model_key_refs=f"TEAM_KEY,{name}")
    # Settings built without validation (or another ModelSettings) still cannot offer them.
    listed = Settings.model_construct(data_dir=tmp_path, openai_base_url="", model_key_refs=(name,))
    env = {name: "secret-value"}
    with pytest.raises(ModelError):
        resolve_api_key(ModelSelection(api_key_ref=name), listed, env)
    with pytest.raises(InvalidArgument):
        check_selection(ModelSelection(api_key_ref=name), listed, environ=env)


def test_model_key_refs_is_a_comma_separated_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings(tmp_path).model_key_refs == ()
    monkeypatch.setenv("CONVERGIO_MODEL_KEY_REFS", " TEAM_KEY,OTHER_KEY ,")
    assert settings(tmp_path).model_key_refs == ("TEAM_KEY", "OTHER_KEY")
    with pytest.raises(ValidationError, match="not an environment variable name"):
        settings(tmp_path, model_key_refs="TEAM KEY")


def test_the_openai_provider_needs_an_endpoint_or_a_key(tmp_path: Path) -> None:
    # Without either, every call would go to the provider's own endpoint with no key.
    bare = settings(tmp_path, model_key_refs="K")
    with pytest.raises(InvalidArgument) as info:
        check_selection(ModelSelection(provider="openai", model="gpt-4o-mini"), bare)
    assert info.value.violations[0].field == "model.endpoint"
    assert "base_url" in info.value.message and "api_key_ref" in info.value.message
    check_selection(ModelSelection(provider="openai", base_url="http://h:8/v1"), bare)
    check_selection(ModelSelection(provider="openai", api_key_ref="K"), bare, environ={"K": "v"})
    configured = settings(tmp_path, openai_base_url="http://localhost:11434/v1")
    check_selection(ModelSelection(provider="openai", model="llama3.1:8b"), configured)
    keyed = settings(tmp_path, openai_api_key="sk-test")
    check_selection(ModelSelection(provider="openai", model="gpt-4o-mini"), keyed)


@pytest.mark.parametrize(
    ("selection", "field"),
    [
        (ModelSelection(api_key_ref="NOT_SET_ANYWHERE"), "model.endpoint.api_key_ref"),
        (ModelSelection(api_key_ref="DATABASE_URL"), "model.endpoint.api_key_ref"),
        (ModelSelection(api_key_ref="LISTED_NOT_SET"), "model.endpoint.api_key_ref"),
        (ModelSelection(base_url="localhost:11434"), "model.endpoint.base_url"),
        # URLs that only fail at the first call, as "unreachable" (retried, and counted
        # against the provider's breaker), or that leak what they hold.
        (ModelSelection(base_url="http://"), "model.endpoint.base_url"),
        (ModelSelection(base_url="http://exa mple.com/v1"), "model.endpoint.base_url"),
        (ModelSelection(base_url="http://127.0.0.1:99999/v1"), "model.endpoint.base_url"),
        (ModelSelection(base_url="http://127.0.0.1:0/v1"), "model.endpoint.base_url"),
        (ModelSelection(base_url="http://h:8000/v1?x=1#f"), "model.endpoint.base_url"),
        (ModelSelection(base_url="http://user:pw@h:8000/v1"), "model.endpoint.base_url"),
        (ModelSelection(model="gpt\n4o"), "model.model"),
        (ModelSelection(model="m" * 201), "model.model"),
        (ModelSelection(temperature=2.5), "model.temperature"),
        (ModelSelection(max_output_tokens=-1), "model.max_output_tokens"),
        (ModelSelection(timeout_seconds=0), "model.endpoint.timeout"),
    ],
)
def test_check_selection_names_the_field(
    tmp_path: Path, selection: ModelSelection, field: str
) -> None:
    offering = settings(tmp_path, model_key_refs="K,LISTED_NOT_SET")
    env = {"K": "v", "DATABASE_URL": "postgresql://u:secret@db/x"}
    with pytest.raises(InvalidArgument) as info:
        check_selection(selection, offering, environ=env)
    assert info.value.violations[0].field == field
    check_selection(ModelSelection(provider="openai", api_key_ref="K"), offering, environ=env)
    for good in ("http://localhost:11434/v1", "https://api.example.com/v1/", "http://[::1]:8/"):
        check_selection(ModelSelection(base_url=good, model="llama3.1:8b"), offering)


def test_an_unoffered_key_ref_gets_the_same_answer_whether_set_or_not(tmp_path: Path) -> None:
    """The answer must not tell a caller which variables the server's environment holds."""
    env = {"DATABASE_URL": "postgresql://u:secret@db/x"}
    answers = []
    for name in ("DATABASE_URL", "NOT_SET_ANYWHERE"):
        with pytest.raises(InvalidArgument) as info:
            check_selection(ModelSelection(api_key_ref=name), settings(tmp_path), environ=env)
        answers.append(info.value.violations[0].description)
    assert answers[0] == answers[1]
    assert "CONVERGIO_MODEL_KEY_REFS" in answers[0]
