"""Create, get, list (pages, filters), update, delete; the roster; bad input; tenant
isolation."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from convergio import AsyncClient, errors
from convergio.conversation.v1 import conversation_pb2 as pb
from google.protobuf import field_mask_pb2

from tests.support.server import RunningServer

CORE = ["ali", "domik", "amy", "luca", "socrates", "diana", "wanda", "xavier"]


async def test_create_with_the_core_preset_by_default(conv: AsyncClient) -> None:
    created = await conv.conversations.create_conversation(title="Q3 plan")
    conversation = created.conversation
    assert conversation.status == pb.CONVERSATION_STATUS_IDLE
    assert conversation.team.preset == "core"
    assert sorted(conversation.participants) == sorted(CORE)
    assert conversation.participants[0] == "ali"  # roster priority order
    assert conversation.max_turns_per_message == 6
    assert conversation.last_sequence == 0
    got = await conv.conversations.get_conversation(conversation_id=conversation.conversation_id)
    assert got.conversation.title == "Q3 plan"
    assert got.conversation.participants == conversation.participants


async def test_create_with_explicit_agents_and_single_agent(conv: AsyncClient) -> None:
    group = await conv.conversations.create_conversation(
        team=pb.Team(agents=pb.AgentNames(names=["luca", "amy"])), max_turns_per_message=3
    )
    assert list(group.conversation.participants) == ["amy", "luca"]
    assert group.conversation.max_turns_per_message == 3
    single = await conv.conversations.create_conversation(team=pb.Team(single_agent="amy"))
    assert list(single.conversation.participants) == ["amy"]
    assert single.conversation.team.single_agent == "amy"


async def test_create_rejects_unknown_agents_presets_and_bad_fields(conv: AsyncClient) -> None:
    with pytest.raises(errors.NotFound):
        await conv.conversations.create_conversation(team=pb.Team(single_agent="nobody"))
    with pytest.raises(errors.NotFound):
        await conv.conversations.create_conversation(
            team=pb.Team(agents=pb.AgentNames(names=["amy", "nobody"]))
        )
    with pytest.raises(errors.InvalidArgument) as bad_preset:
        await conv.conversations.create_conversation(team=pb.Team(preset="nope"))
    assert bad_preset.value.field_violations[0].field == "team.preset"
    with pytest.raises(errors.InvalidArgument) as bad_label:
        await conv.conversations.create_conversation(labels={"Bad Key": "x"})
    assert bad_label.value.field_violations[0].field.startswith("labels")
    with pytest.raises(errors.InvalidArgument) as bad_turns:
        await conv.conversations.create_conversation(max_turns_per_message=51)
    assert bad_turns.value.field_violations[0].field == "max_turns_per_message"
    with pytest.raises(errors.InvalidArgument) as bad_policy:
        await conv.conversations.create_conversation(speaker_policy="telepathy")
    assert bad_policy.value.field_violations[0].field == "speaker_policy"


async def test_create_is_idempotent_by_request_id(conv: AsyncClient) -> None:
    first = await conv.conversations.create_conversation(request_id="create-once", title="a")
    again = await conv.conversations.create_conversation(request_id="create-once", title="a")
    assert first.conversation.conversation_id == again.conversation.conversation_id


async def test_list_pages_and_filters_by_label(conv: AsyncClient) -> None:
    ids = []
    for index in range(5):
        created = await conv.conversations.create_conversation(
            title=f"paged {index}", labels={"suite": "paging", "n": str(index % 2)}
        )
        ids.append(created.conversation.conversation_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await conv.conversations.list_conversations(
            labels={"suite": "paging"}, page_size=2, page_token=token
        )
        assert len(page.conversations) <= 2
        seen += [c.conversation_id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))  # most recently updated first, each once
    odd = await conv.conversations.list_conversations(labels={"suite": "paging", "n": "1"})
    assert {c.conversation_id for c in odd.conversations} == {ids[1], ids[3]}
    idle = await conv.conversations.list_conversations(
        labels={"suite": "paging"}, status=pb.CONVERSATION_STATUS_IDLE
    )
    assert len(idle.conversations) == 5
    running = await conv.conversations.list_conversations(
        labels={"suite": "paging"}, status=pb.CONVERSATION_STATUS_RUNNING
    )
    assert list(running.conversations) == []
    with pytest.raises(errors.InvalidArgument) as bad_token:
        await conv.conversations.list_conversations(
            labels={"suite": "other"}, page_token="not-a-token"
        )
    assert bad_token.value.field_violations[0].field == "page_token"


async def test_delete_removes_the_conversation(conv: AsyncClient) -> None:
    created = await conv.conversations.create_conversation(title="to delete")
    cid = created.conversation.conversation_id
    await conv.conversations.delete_conversation(conversation_id=cid)
    with pytest.raises(errors.NotFound):
        await conv.conversations.get_conversation(conversation_id=cid)
    with pytest.raises(errors.NotFound):
        await conv.conversations.delete_conversation(conversation_id=cid)


async def test_update_changes_only_the_fields_named(conv: AsyncClient) -> None:
    created = await conv.conversations.create_conversation(
        title="draft", labels={"suite": "update", "stage": "new"}
    )
    cid = created.conversation.conversation_id
    renamed = await conv.conversations.update_conversation(
        conversation_id=cid,
        title="Q3 supplier review",
        labels={"ignored": "yes"},
        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
    )
    assert renamed.conversation.title == "Q3 supplier review"
    assert dict(renamed.conversation.labels) == {"suite": "update", "stage": "new"}
    relabelled = await conv.conversations.update_conversation(
        conversation_id=cid,
        labels={"suite": "update", "stage": "archived"},
        update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
    )
    assert relabelled.conversation.title == "Q3 supplier review"
    assert dict(relabelled.conversation.labels) == {"suite": "update", "stage": "archived"}
    assert (
        relabelled.conversation.update_time.ToDatetime()
        > created.conversation.update_time.ToDatetime()
    )
    archived = await conv.conversations.list_conversations(labels={"stage": "archived"})
    assert cid in {c.conversation_id for c in archived.conversations}
    fresh = await conv.conversations.list_conversations(labels={"suite": "update", "stage": "new"})
    assert cid not in {c.conversation_id for c in fresh.conversations}
    got = await conv.conversations.get_conversation(conversation_id=cid)
    assert got.conversation.title == "Q3 supplier review"


@pytest.mark.parametrize(
    ("fields", "paths", "field", "problem"),
    [
        ({}, [], "update_mask", "is required"),
        ({}, ["team"], "update_mask", "only title and labels"),
        ({"title": "x" * 501}, ["title"], "title", "at most 500"),
        ({"labels": {"Bad Key": "v"}}, ["labels"], "labels", ""),
    ],
)
async def test_update_refuses_bad_requests(
    conv: AsyncClient, fields: dict[str, Any], paths: list[str], field: str, problem: str
) -> None:
    created = await conv.conversations.create_conversation(title="kept")
    cid = created.conversation.conversation_id
    with pytest.raises(errors.InvalidArgument) as refused:
        await conv.conversations.update_conversation(
            conversation_id=cid, update_mask=field_mask_pb2.FieldMask(paths=paths), **fields
        )
    assert refused.value.field_violations[0].field.startswith(field)
    assert problem in refused.value.field_violations[0].description
    still = await conv.conversations.get_conversation(conversation_id=cid)
    assert still.conversation.title == "kept"


async def test_update_of_an_unknown_conversation_is_not_found(conv: AsyncClient) -> None:
    with pytest.raises(errors.NotFound):
        await conv.conversations.update_conversation(
            conversation_id=str(uuid.uuid4()),
            title="x",
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    with pytest.raises(errors.InvalidArgument):
        await conv.conversations.update_conversation(
            conversation_id="not-an-id", update_mask=field_mask_pb2.FieldMask(paths=["title"])
        )


async def test_roster_agents_and_presets(conv: AsyncClient) -> None:
    core = await conv.conversations.list_agents(preset="core")
    assert sorted(a.name for a in core.agents) == sorted(CORE)
    priorities = [a.priority for a in core.agents]
    assert priorities == sorted(priorities, reverse=True)
    amy = await conv.conversations.get_agent(name="amy")
    assert amy.agent.expertise and "core" in amy.agent.presets
    with pytest.raises(errors.NotFound):
        await conv.conversations.get_agent(name="nobody")
    with pytest.raises(errors.InvalidArgument):
        await conv.conversations.list_agents(preset="nope")
    first = await conv.conversations.list_agents(page_size=3)
    second = await conv.conversations.list_agents(page_size=3, page_token=first.next_page_token)
    assert len(first.agents) == 3 and first.next_page_token
    assert not {a.name for a in first.agents} & {a.name for a in second.agents}
    presets = await conv.conversations.list_team_presets()
    names = [p.name for p in presets.presets]
    assert "core" in names and names == sorted(names)


async def test_another_tenant_sees_nothing(
    conv: AsyncClient, server: RunningServer, make_key: Callable[..., Awaitable[str]]
) -> None:
    created = await conv.conversations.create_conversation(title="private")
    cid = created.conversation.conversation_id
    other_key = await make_key("member", tenant="other-tenant")
    async with AsyncClient(server.target, api_key=other_key) as other:
        with pytest.raises(errors.NotFound):
            await other.conversations.get_conversation(conversation_id=cid)
        with pytest.raises(errors.NotFound):
            await other.conversations.delete_conversation(conversation_id=cid)
        with pytest.raises(errors.NotFound):
            await other.conversations.update_conversation(
                conversation_id=cid,
                title="taken",
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
        with pytest.raises(errors.NotFound):
            await other.conversations.list_turns(conversation_id=cid)
        with pytest.raises(errors.NotFound):
            async for _ in other.conversations.send(conversation_id=cid, content="hello"):
                pass
        listed = await other.conversations.list_conversations()
        assert cid not in {c.conversation_id for c in listed.conversations}
    still = await conv.conversations.get_conversation(conversation_id=cid)
    assert still.conversation.title == "private"
