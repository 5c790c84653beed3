"""FlagService through the SDK against a real server: changes with optimistic concurrency,
history, evaluation, disable-all, watch, defaults of a new tenant, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from convergio.errors import Aborted, InvalidArgument, NotFound, PermissionDenied
from convergio.flag.v1 import flag_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from tests.flags.support import flag, tenant_client
from tests.support.server import RunningServer

MakeKey = Callable[..., Awaitable[str]]


async def test_new_tenant_starts_with_week_one_flags(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key, "member") as client:
        flags = {f.key: f for f in (await client.flags.list_flags()).flags}
    assert set(flags) == {
        "rag_in_loop",
        "true_streaming",
        "speaker_policy",
        "graphflow",
        "hitl",
        "cost_safety",
    }
    assert flags["rag_in_loop"].strategy == flag_pb2.FLAG_STRATEGY_PERCENTAGE
    assert flags["rag_in_loop"].percentage == 5.0
    assert flags["true_streaming"].strategy == flag_pb2.FLAG_STRATEGY_CANARY
    assert list(flags["true_streaming"].groups) == ["beta_testers"]
    assert list(flags["graphflow"].groups) == ["enterprise"]
    assert not flags["hitl"].enabled
    assert flags["cost_safety"].enabled and flags["cost_safety"].strategy == 1
    assert all(f.version == 1 and f.updated_by == "convergio" for f in flags.values())


async def test_create_replace_and_stale_version(server: RunningServer, make_key: MakeKey) -> None:
    async with tenant_client(server, make_key) as client:
        created = await client.flags.upsert_flag(
            flag=flag("checkout.v2", "percentage", percentage=5.0), expected_version=0
        )
        assert created.created and created.flag.version == 1
        with pytest.raises(Aborted) as exists:
            await client.flags.upsert_flag(flag=flag("checkout.v2", "on"), expected_version=0)
        assert exists.value.metadata["current_version"] == "1"

        raised = await client.flags.upsert_flag(
            flag=flag("checkout.v2", "percentage", percentage=25.0),
            expected_version=1,
            comment="week 2",
        )
        assert raised.flag.version == 2 and not raised.created
        assert raised.flag.percentage == 25.0

        with pytest.raises(Aborted) as stale:
            await client.flags.upsert_flag(
                flag=flag("checkout.v2", "percentage", percentage=50.0), expected_version=1
            )
        assert stale.value.metadata["current_version"] == "2"
        assert (await client.flags.get_flag(key="checkout.v2")).flag.percentage == 25.0

        same = await client.flags.upsert_flag(
            flag=flag("checkout.v2", "percentage", percentage=25.0), expected_version=2
        )
        assert same.flag.version == 2  # nothing changed: no new version, no history entry

        history = (await client.flags.list_flag_history(key="checkout.v2")).entries
        outcomes = [(e.version, e.kind, e.outcome) for e in history]
        assert outcomes == [
            (2, flag_pb2.FLAG_CHANGE_KIND_UPDATED, flag_pb2.FLAG_CHANGE_OUTCOME_VERSION_CONFLICT),
            (2, flag_pb2.FLAG_CHANGE_KIND_UPDATED, flag_pb2.FLAG_CHANGE_OUTCOME_APPLIED),
            (1, flag_pb2.FLAG_CHANGE_KIND_CREATED, flag_pb2.FLAG_CHANGE_OUTCOME_VERSION_CONFLICT),
            (1, flag_pb2.FLAG_CHANGE_KIND_CREATED, flag_pb2.FLAG_CHANGE_OUTCOME_APPLIED),
        ]
        assert history[1].comment == "week 2"
        assert history[0].flag.percentage == 50.0  # the refused attempt, as it wanted it
        with pytest.raises(NotFound):
            await client.flags.upsert_flag(flag=flag("never.was", "on"), expected_version=3)


async def test_concurrent_upserts_exactly_one_wins(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        await client.flags.upsert_flag(flag=flag("race", "percentage", percentage=1.0))
        attempts = [
            client.flags.upsert_flag(
                flag=flag("race", "percentage", percentage=float(p)), expected_version=1
            )
            for p in range(10, 18)
        ]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        winners = [r for r in results if isinstance(r, flag_pb2.UpsertFlagResponse)]
        losers = [r for r in results if isinstance(r, Aborted)]
        assert len(winners) == 1 and len(losers) == 7, results
        current = (await client.flags.get_flag(key="race")).flag
        assert current.version == 2 and current.percentage == winners[0].flag.percentage

        history = (await client.flags.list_flag_history(key="race")).entries
        applied = [e for e in history if e.outcome == flag_pb2.FLAG_CHANGE_OUTCOME_APPLIED]
        refused = [e for e in history if e.outcome == flag_pb2.FLAG_CHANGE_OUTCOME_VERSION_CONFLICT]
        assert len(applied) == 2 and len(refused) == 7
        assert {e.flag.percentage for e in refused} == (
            {float(p) for p in range(10, 18)} - {current.percentage}
        )
        assert all(e.version == 2 and e.expected_version == 1 for e in refused)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (flag("", "on"), "flag.key"),
        (flag("Bad Key!", "on"), "flag.key"),
        (flag_pb2.Flag(key="no.strategy", enabled=True), "flag.strategy"),
        (flag("pct", "percentage", percentage=100.5), "flag.percentage"),
        (flag("pct", "percentage", percentage=-1), "flag.percentage"),
        (
            flag(
                "weights",
                "on",
                variants=[
                    flag_pb2.FlagVariant(name="simple", weight=60),
                    flag_pb2.FlagVariant(name="scoring", weight=30),
                ],
            ),
            "flag.variants",
        ),
        (
            flag("reserved", "on", variants=[flag_pb2.FlagVariant(name="on", weight=100)]),
            "flag.variants",
        ),
        (
            flag(
                "ramp",
                "gradual",
                gradual=flag_pb2.GradualRollout(
                    start_time=Timestamp(seconds=2_000_000_000),
                    end_time=Timestamp(seconds=1_900_000_000),
                    target_percentage=50,
                ),
            ),
            "flag.gradual.end_time",
        ),
        (flag("ramp", "gradual"), "flag.gradual.start_time"),
        (
            flag(
                "ramp",
                "gradual",
                gradual=flag_pb2.GradualRollout(
                    start_time=Timestamp(seconds=2_000_000_000, nanos=-5),
                    end_time=Timestamp(seconds=2_100_000_000),
                    target_percentage=50,
                ),
            ),
            "flag.gradual.start_time",
        ),
        (
            flag(
                "ramp",
                "gradual",
                gradual=flag_pb2.GradualRollout(
                    start_time=Timestamp(seconds=2_000_000_000),
                    end_time=Timestamp(seconds=300_000_000_000),
                    target_percentage=50,
                ),
            ),
            "flag.gradual.end_time",
        ),
    ],
)
async def test_bad_flags_name_the_field(
    server: RunningServer, make_key: MakeKey, bad: flag_pb2.Flag, field: str
) -> None:
    async with tenant_client(server, make_key) as client:
        with pytest.raises(InvalidArgument) as err:
            await client.flags.upsert_flag(flag=bad)
        assert field in {v.field for v in err.value.field_violations}, err.value
        assert (await client.flags.list_flags()).flags  # nothing was corrupted


async def test_negative_expected_version_and_empty_reason(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        with pytest.raises(InvalidArgument) as err:
            await client.flags.upsert_flag(flag=flag("x", "on"), expected_version=-1)
        assert err.value.field_violations[0].field == "expected_version"
        with pytest.raises(InvalidArgument) as err:
            await client.flags.disable_all_flags(reason=" ")
        assert err.value.field_violations[0].field == "reason"
        with pytest.raises(InvalidArgument) as err:
            await client.flags.evaluate_flag(key="")
        assert err.value.field_violations[0].field == "key"


async def test_evaluation_reasons_and_unknown_flag(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        await client.flags.upsert_flag(
            flag=flag("beta", "canary", percentage=0.0, groups=["beta_testers"], users=["ann"])
        )

        async def evaluate(
            key: str, user: str = "", groups: tuple[str, ...] = ()
        ) -> flag_pb2.FlagEvaluation:
            context = flag_pb2.EvaluationContext(targeting_key=user, groups=groups)
            return (await client.flags.evaluate_flag(key=key, context=context)).evaluation

        by_group = await evaluate("beta", "zed", ("beta_testers",))
        assert by_group.value and by_group.reason == flag_pb2.EVALUATION_REASON_TARGETING_MATCH
        by_user = await evaluate("beta", "ann")
        assert by_user.value and by_user.variant == "on"
        other = await evaluate("beta", "zed")
        assert not other.value and other.reason == flag_pb2.EVALUATION_REASON_SPLIT
        anonymous = await evaluate("rag_in_loop")
        assert not anonymous.value and anonymous.reason == flag_pb2.EVALUATION_REASON_DEFAULT
        static = await evaluate("speaker_policy", "zed")
        assert static.value and static.reason == flag_pb2.EVALUATION_REASON_STATIC
        disabled = await evaluate("hitl", "zed")
        assert not disabled.value and disabled.reason == flag_pb2.EVALUATION_REASON_DISABLED

        unknown = await evaluate("no.such.flag", "zed")
        assert not unknown.value and unknown.variant == ""
        assert unknown.reason == flag_pb2.EVALUATION_REASON_ERROR
        assert unknown.error_code == flag_pb2.EVALUATION_ERROR_CODE_FLAG_NOT_FOUND

        everything = await client.flags.evaluate_all_flags(
            context=flag_pb2.EvaluationContext(targeting_key="ann", groups=["enterprise"])
        )
        values = {e.key: e.value for e in everything.evaluations}
        assert values["beta"] and values["graphflow"] and not values["hitl"]
        assert len(values) == 7


async def test_variants_are_sticky_and_weighted(server: RunningServer, make_key: MakeKey) -> None:
    async with tenant_client(server, make_key) as client:
        await client.flags.upsert_flag(
            flag=flag(
                "speaker",
                "on",
                variants=[
                    flag_pb2.FlagVariant(name="simple", weight=50),
                    flag_pb2.FlagVariant(name="scoring", weight=50),
                ],
            )
        )
        seen: dict[str, str] = {}
        for i in range(40):
            context = flag_pb2.EvaluationContext(targeting_key=f"user-{i}")
            result = (await client.flags.evaluate_flag(key="speaker", context=context)).evaluation
            seen[f"user-{i}"] = result.variant
            assert result.value
        assert set(seen.values()) == {"simple", "scoring"}
        again = await client.flags.evaluate_flag(
            key="speaker", context=flag_pb2.EvaluationContext(targeting_key="user-7")
        )
        assert again.evaluation.variant == seen["user-7"]


async def test_disable_all_is_one_recorded_rollback(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        before = {f.key: f for f in (await client.flags.list_flags()).flags}
        result = await client.flags.disable_all_flags(reason="error rate above 1%")
        enabled_before = sorted(k for k, f in before.items() if f.enabled)
        assert result.disabled_count == len(enabled_before) == 5
        assert [f.key for f in result.flags] == enabled_before
        after = (await client.flags.list_flags()).flags
        assert not any(f.enabled for f in after)
        evaluation = await client.flags.evaluate_flag(
            key="speaker_policy", context=flag_pb2.EvaluationContext(targeting_key="ann")
        )
        assert not evaluation.evaluation.value
        assert evaluation.evaluation.reason == flag_pb2.EVALUATION_REASON_DISABLED
        entry = (await client.flags.list_flag_history(key="rag_in_loop")).entries[0]
        assert entry.comment == "disable all: error rate above 1%"
        assert entry.version == 2 and not entry.flag.enabled
        hitl = (await client.flags.list_flag_history(key="hitl")).entries
        assert len(hitl) == 1  # already off: left alone
        assert (await client.flags.disable_all_flags(reason="again")).disabled_count == 0


async def test_delete_keeps_history(server: RunningServer, make_key: MakeKey) -> None:
    async with tenant_client(server, make_key) as client:
        await client.flags.upsert_flag(flag=flag("temp", "on"))
        with pytest.raises(Aborted):
            await client.flags.delete_flag(key="temp", expected_version=7)
        deleted = await client.flags.delete_flag(key="temp", expected_version=1, comment="done")
        assert deleted.version == 2
        with pytest.raises(NotFound):
            await client.flags.get_flag(key="temp")
        with pytest.raises(NotFound):
            await client.flags.delete_flag(key="temp")
        evaluation = (await client.flags.evaluate_flag(key="temp")).evaluation
        assert evaluation.error_code == flag_pb2.EVALUATION_ERROR_CODE_FLAG_NOT_FOUND
        kinds = [e.kind for e in (await client.flags.list_flag_history(key="temp")).entries]
        assert kinds[0] == flag_pb2.FLAG_CHANGE_KIND_DELETED and len(kinds) == 3
        with pytest.raises(NotFound):
            await client.flags.list_flag_history(key="never.existed")


async def test_history_and_list_pages(server: RunningServer, make_key: MakeKey) -> None:
    async with tenant_client(server, make_key) as client:
        await client.flags.upsert_flag(flag=flag("paged", "percentage", percentage=1))
        for version in range(1, 6):
            await client.flags.upsert_flag(
                flag=flag("paged", "percentage", percentage=version + 1),
                expected_version=version,
            )
        versions: list[int] = []
        token = ""
        while True:
            page = await client.flags.list_flag_history(key="paged", page_size=4, page_token=token)
            versions += [e.version for e in page.entries]
            token = page.next_page_token
            if not token:
                break
        assert versions == [6, 5, 4, 3, 2, 1]
        keys: list[str] = []
        token = ""
        while True:
            listed = await client.flags.list_flags(page_size=3, page_token=token)
            keys += [f.key for f in listed.flags]
            token = listed.next_page_token
            if not token:
                break
        assert keys == sorted(keys) and len(keys) == 7
        with pytest.raises(InvalidArgument) as err:
            await client.flags.list_flags(page_token="garbage")
        assert err.value.field_violations[0].field == "page_token"


async def test_roles_and_request_ids(server: RunningServer, make_key: MakeKey) -> None:
    from tests.flags.support import new_tenant

    tenant = new_tenant()
    async with tenant_client(server, make_key, "member", tenant) as member:
        with pytest.raises(PermissionDenied):
            await member.flags.upsert_flag(flag=flag("nope", "on"))
        assert (await member.flags.get_flag(key="rag_in_loop")).flag.key == "rag_in_loop"
    async with tenant_client(server, make_key, "operator", tenant) as operator:
        first = await operator.flags.upsert_flag(request_id="r-1", flag=flag("idem", "on"))
        again = await operator.flags.upsert_flag(request_id="r-1", flag=flag("idem", "on"))
        assert first == again and again.created
    async with tenant_client(server, make_key, "operator") as other_tenant:
        with pytest.raises(NotFound):
            await other_tenant.flags.get_flag(key="idem")


async def test_watch_starts_with_snapshot_then_changes(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        stream = client.flags.watch_flags()
        first = await stream.__anext__()
        assert first.snapshot.complete
        assert {f.key for f in first.snapshot.flags} >= {"rag_in_loop", "hitl"}
        current = (await client.flags.get_flag(key="rag_in_loop")).flag
        await client.flags.upsert_flag(
            flag=flag("rag_in_loop", "percentage", percentage=25.0),
            expected_version=current.version,
        )
        change = (await asyncio.wait_for(stream.__anext__(), 30)).change
        assert change.kind == flag_pb2.FLAG_CHANGE_KIND_UPDATED
        assert change.flag.key == "rag_in_loop" and change.flag.percentage == 25.0
        assert change.actor
        await client.flags.delete_flag(key="hitl")
        deleted = (await asyncio.wait_for(stream.__anext__(), 30)).change
        assert deleted.kind == flag_pb2.FLAG_CHANGE_KIND_DELETED and deleted.flag.key == "hitl"
        stream.cancel()


async def test_watch_filters_keys(server: RunningServer, make_key: MakeKey) -> None:
    async with tenant_client(server, make_key) as client:
        stream = client.flags.watch_flags(keys=["graphflow"])
        snapshot = (await stream.__anext__()).snapshot
        assert [f.key for f in snapshot.flags] == ["graphflow"]
        await client.flags.upsert_flag(flag=flag("unrelated", "on"))
        await client.flags.upsert_flag(
            flag=flag("graphflow", "group_based", groups=["enterprise", "beta_testers"]),
            expected_version=1,
        )
        change = (await asyncio.wait_for(stream.__anext__(), 30)).change
        assert change.flag.key == "graphflow"
        stream.cancel()


async def test_gradual_ramp_through_the_api(server: RunningServer, make_key: MakeKey) -> None:
    async with tenant_client(server, make_key) as client:
        ended = flag_pb2.GradualRollout(
            start_time=Timestamp(seconds=1_000_000_000),
            end_time=Timestamp(seconds=1_000_086_400),
            target_percentage=100.0,
        )
        future = flag_pb2.GradualRollout(
            start_time=Timestamp(seconds=4_000_000_000),
            end_time=Timestamp(seconds=4_000_086_400),
            target_percentage=100.0,
        )
        await client.flags.upsert_flag(flag=flag("ramp.done", "gradual", gradual=ended))
        await client.flags.upsert_flag(flag=flag("ramp.later", "gradual", gradual=future))
        stored = (await client.flags.get_flag(key="ramp.done")).flag
        assert stored.gradual.end_time.seconds == 1_000_086_400
        for user in ("ann", "bob", "cy"):
            context = flag_pb2.EvaluationContext(targeting_key=user)
            done = (await client.flags.evaluate_flag(key="ramp.done", context=context)).evaluation
            later = (await client.flags.evaluate_flag(key="ramp.later", context=context)).evaluation
            assert done.value and done.reason == flag_pb2.EVALUATION_REASON_SPLIT
            assert not later.value and later.reason == flag_pb2.EVALUATION_REASON_SPLIT


async def test_disable_all_with_a_request_id_runs_once(
    server: RunningServer, make_key: MakeKey
) -> None:
    async with tenant_client(server, make_key) as client:
        first = await client.flags.disable_all_flags(request_id="rollback-1", reason="incident")
        again = await client.flags.disable_all_flags(request_id="rollback-1", reason="incident")
        assert first == again and first.disabled_count == 5
        with pytest.raises(InvalidArgument) as err:
            await client.flags.disable_all_flags(request_id="rollback-1", reason="other")
        assert err.value.field_violations[0].field == "request_id"
