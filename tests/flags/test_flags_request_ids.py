"""A request_id gets one answer: an UpsertFlag refused with ABORTED and repeated with the same
request_id is refused again, from the record, without a second history entry, even after the
flag has reached the version the request expected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from convergio.errors import Aborted, NotFound
from convergio.flag.v1 import flag_pb2

from tests.flags.support import flag, tenant_client
from tests.support.server import RunningServer

MakeKey = Callable[..., Awaitable[str]]


def _conflicts(entries: list[flag_pb2.FlagHistoryEntry]) -> int:
    return sum(e.outcome == flag_pb2.FLAG_CHANGE_OUTCOME_VERSION_CONFLICT for e in entries)


async def test_refused_upsert_repeated_gets_the_first_refusal(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        await client.flags.upsert_flag(flag=flag("rid.x", "on"), expected_version=0)
        wanted = flag("rid.x", "percentage", percentage=30.0)
        with pytest.raises(Aborted) as first:
            await client.flags.upsert_flag(flag=wanted, expected_version=7, request_id="rid-x2")
        assert first.value.metadata["current_version"] == "1"
        assert first.value.reason == "VERSION_CONFLICT"

        with pytest.raises(Aborted) as again:
            await client.flags.upsert_flag(flag=wanted, expected_version=7, request_id="rid-x2")
        assert again.value.message == first.value.message
        assert again.value.reason == "VERSION_CONFLICT"
        assert again.value.metadata["current_version"] == "1"
        history = (await client.flags.list_flag_history(key="rid.x")).entries
        assert _conflicts(list(history)) == 1

        # The flag reaches the version the request expected: the request_id still answers
        # with its first result, it does not act now.
        for version in range(1, 7):
            await client.flags.upsert_flag(
                flag=flag("rid.x", "percentage", percentage=float(version)),
                expected_version=version,
            )
        assert (await client.flags.get_flag(key="rid.x")).flag.version == 7
        with pytest.raises(Aborted) as late:
            await client.flags.upsert_flag(flag=wanted, expected_version=7, request_id="rid-x2")
        assert late.value.metadata["current_version"] == "1"
        current = (await client.flags.get_flag(key="rid.x")).flag
        assert current.version == 7 and current.percentage == 6.0
        history = (await client.flags.list_flag_history(key="rid.x")).entries
        assert _conflicts(list(history)) == 1
        assert max(e.version for e in history) == 7

        # A new request_id acts.
        applied = await client.flags.upsert_flag(
            flag=wanted, expected_version=7, request_id="rid-x3"
        )
        assert applied.flag.version == 8 and applied.flag.percentage == 30.0


async def test_not_found_is_the_answer_of_its_request_id(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        missing = flag("rid.missing", "on")
        with pytest.raises(NotFound):
            await client.flags.upsert_flag(flag=missing, expected_version=1, request_id="rid-nf")
        await client.flags.upsert_flag(flag=missing, expected_version=0)
        with pytest.raises(NotFound):
            await client.flags.upsert_flag(flag=missing, expected_version=1, request_id="rid-nf")
        assert (await client.flags.get_flag(key="rid.missing")).flag.version == 1
