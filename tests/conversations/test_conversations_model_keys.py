"""Model keys a caller may name in `endpoint.api_key_ref`: only those the operator offers in
CONVERGIO_MODEL_KEY_REFS. Any other environment variable of the server (DATABASE_URL, ...)
is refused when the conversation is created and again when a turn calls the model, so it is
never sent as a bearer token to a URL the caller chose."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from convergio import AsyncClient
from convergio.common.v1 import common_pb2
from convergio.errors import InvalidArgument

from tests.conversations.conftest import (
    PRICED_TENANT,
    collect,
    kinds,
    member_key,
    new_conversation,
)
from tests.models.openai_stub import Action, openai_stub
from tests.support.server import RunningServer, running_server, server_settings

OFFERED = "TEST_TEAM_MODEL_KEY"
OFFERED_VALUE = "sk-team-offered-0123"
DEPLOYMENT_KEY = "sk-deployment-4567"


def _caller_model(base_url: str, api_key_ref: str = "") -> common_pb2.ModelSelection:
    return common_pb2.ModelSelection(
        provider=common_pb2.MODEL_PROVIDER_OPENAI,
        model="gpt-4o-mini",
        endpoint=common_pb2.ModelEndpoint(base_url=base_url, api_key_ref=api_key_ref),
    )


@pytest.fixture(scope="module")
async def keyed(
    tmp_path_factory: pytest.TempPathFactory,
    pg_dsn: str,
    redis_url: str,
    redis_prefix: str,
    server: RunningServer,
) -> AsyncIterator[RunningServer]:
    """A server on the same database and Redis whose operator offers one model key, given
    through the environment as in a deployment, and has a default key of its own."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(OFFERED, OFFERED_VALUE)
        with pytest.MonkeyPatch.context() as settings_env:
            settings_env.setenv("CONVERGIO_MODEL_KEY_REFS", f"OTHER_MODEL_KEY,{OFFERED}")
            settings_env.setenv("CONVERGIO_OPENAI_API_KEY", DEPLOYMENT_KEY)
            settings = server_settings(
                tmp_path_factory.mktemp("keyed-data"), pg_dsn, redis_url, redis_prefix
            )
        assert settings.model_key_refs == ("OTHER_MODEL_KEY", OFFERED)
        async with running_server(settings) as running:
            yield running


@pytest.fixture
def database_url_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL in the server's environment, as in a deployment (the tests' embedded
    stores leave it unset)."""
    if not os.environ.get("DATABASE_URL"):
        monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db.internal/app")


async def test_an_unoffered_variable_is_refused_on_create(
    priced_conv: AsyncClient, database_url_set: None
) -> None:
    assert os.environ.get("DATABASE_URL")
    async with openai_stub() as stub:
        with pytest.raises(InvalidArgument) as refused:
            await new_conversation(
                priced_conv, agent="amy", model=_caller_model(stub.base_url, "DATABASE_URL")
            )
    violations = refused.value.field_violations
    assert [v.field for v in violations] == ["model.endpoint.api_key_ref"]
    assert "CONVERGIO_MODEL_KEY_REFS" in violations[0].description
    assert not stub.requests


async def test_an_unset_variable_gets_the_same_answer(
    priced_conv: AsyncClient, database_url_set: None
) -> None:
    answers = []
    for name in ("DATABASE_URL", "NO_SUCH_VARIABLE_ANYWHERE"):
        with pytest.raises(InvalidArgument) as refused:
            await new_conversation(priced_conv, model=_caller_model("http://127.0.0.1:9/v1", name))
        answers.append(refused.value.field_violations[0].description)
    assert answers[0] == answers[1]


async def test_an_offered_key_is_sent_to_the_callers_endpoint(keyed: RunningServer) -> None:
    async with (
        openai_stub() as stub,
        AsyncClient(keyed.target, api_key=await member_key(keyed, PRICED_TENANT)) as client,
    ):
        stub.then(Action("text", text="Keyed answer"), Action("text", text="Unkeyed answer"))
        cid = await new_conversation(client, model=_caller_model(stub.base_url, OFFERED))
        events = await collect(client.conversations.send(conversation_id=cid, content="Hello"))
        assert kinds(events)[-1] == "turn_completed", kinds(events)
        # No api_key_ref and a base URL of the caller's: the deployment's key stays home.
        plain = await new_conversation(client, model=_caller_model(stub.base_url))
        events = await collect(client.conversations.send(conversation_id=plain, content="Hi"))
        assert kinds(events)[-1] == "turn_completed", kinds(events)
    keyed_request, plain_request = stub.requests
    assert keyed_request.headers["authorization"] == f"Bearer {OFFERED_VALUE}"
    assert DEPLOYMENT_KEY not in plain_request.headers.get("authorization", "")


async def test_a_stored_key_ref_no_longer_offered_is_refused_at_call_time(
    keyed: RunningServer, server: RunningServer
) -> None:
    """A conversation stored while its key was offered (or before keys had to be) runs on a
    server that does not offer it: the turn fails and the endpoint gets nothing."""
    async with openai_stub() as stub:
        async with AsyncClient(
            keyed.target, api_key=await member_key(keyed, PRICED_TENANT)
        ) as client:
            cid = await new_conversation(client, model=_caller_model(stub.base_url, OFFERED))
        assert OFFERED not in server.settings.model_key_refs
        async with AsyncClient(
            server.target, api_key=await member_key(server, PRICED_TENANT)
        ) as client:
            events = await collect(client.conversations.send(conversation_id=cid, content="Hi"))
    assert not stub.requests
    errors = [e.error for e in events if e.HasField("error")]
    assert errors, kinds(events)
    assert errors[0].reason == common_pb2.ERROR_REASON_FAILED_PRECONDITION
    assert "CONVERGIO_MODEL_KEY_REFS" in errors[0].message
    assert OFFERED_VALUE not in errors[0].message
