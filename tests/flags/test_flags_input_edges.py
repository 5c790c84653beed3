"""Flag input the patterns used to let through: a key or variant name ending in a newline
(a pattern's `$` matches before a final newline), allow-list entries with spaces (silently
trimmed, so they never matched), and malformed keys to watch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from convergio.errors import InvalidArgument
from convergio.flag.v1 import flag_pb2
from convergio_server.domain.errors import InvalidArgument as DomainInvalidArgument
from convergio_server.domain.flags.codec import parse_seed

from tests.flags.support import flag, tenant_client
from tests.support.server import RunningServer

MakeKey = Callable[..., Awaitable[str]]


async def test_keys_and_names_ending_in_a_newline_are_refused(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        with pytest.raises(InvalidArgument) as key:
            await client.flags.upsert_flag(flag=flag("ok\n"), expected_version=0)
        assert key.value.field_violations[0].field == "flag.key"
        with pytest.raises(InvalidArgument) as variant:
            await client.flags.upsert_flag(
                flag=flag(
                    "variants.nl",
                    variants=[
                        flag_pb2.FlagVariant(name="ab\n", weight=50),
                        flag_pb2.FlagVariant(name="cd", weight=50),
                    ],
                ),
                expected_version=0,
            )
        assert variant.value.field_violations[0].field == "flag.variants"
        with pytest.raises(InvalidArgument):
            await client.flags.get_flag(key="ok\n")


async def test_allow_list_entries_with_spaces_are_refused(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        with pytest.raises(InvalidArgument) as users:
            await client.flags.upsert_flag(
                flag=flag("canary.spaces", "canary", users=[" u1 "]), expected_version=0
            )
        assert users.value.field_violations[0].field == "flag.users"
        assert "spaces" in users.value.message


async def test_watching_a_malformed_key_is_refused(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key, "member") as client:
        with pytest.raises(InvalidArgument) as bad:
            async for _ in client.flags.watch_flags(keys=["fine", "BAD KEY"]):
                break
        assert bad.value.field_violations[0].field == "keys"


def test_an_import_giving_a_list_under_both_names_or_unknown_fields_is_refused() -> None:
    both = {"flags": {"im.a": {"strategy": "on", "groups": ["a"], "whitelist_groups": ["b"]}}}
    with pytest.raises(DomainInvalidArgument) as twice:
        parse_seed(both)
    assert twice.value.violations[0].field == "flags.im.a.groups"
    with pytest.raises(DomainInvalidArgument) as extra:
        parse_seed({"flags": {"im.b": {"strategy": "on"}}, "extra": 1})
    assert extra.value.violations[0].field == "extra"
    assert [s.key for s in parse_seed({"flags": {"im.c": {"strategy": "on"}}})] == ["im.c"]
