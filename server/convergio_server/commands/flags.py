"""`convergio flags`: list, get, set, eval, disable-all, import, export, history, watch and
delete feature flags of the caller's tenant, through the SDK."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from convergio import AsyncClient
from convergio.errors import NotFound
from convergio.flag.v1 import flag_pb2

from convergio_server.api.flag_messages import spec_from_pb, spec_to_pb
from convergio_server.commands import (
    add_client_args,
    as_dict,
    client_from_args,
    comma_list,
    every_page,
    iso_time,
    print_table,
)
from convergio_server.domain.errors import InvalidArgument as BadSeed
from convergio_server.domain.flags.codec import parse_seed, to_seed
from convergio_server.domain.flags.validation import normalize

_STRATEGIES = {
    name.removeprefix("FLAG_STRATEGY_").lower(): value
    for name, value in flag_pb2.FlagStrategy.items()
    if value
}
_REASONS = {v: n.removeprefix("EVALUATION_REASON_") for n, v in flag_pb2.EvaluationReason.items()}
_KINDS = {
    v: n.removeprefix("FLAG_CHANGE_KIND_").lower() for n, v in flag_pb2.FlagChangeKind.items()
}
_OUTCOMES = {
    v: n.removeprefix("FLAG_CHANGE_OUTCOME_").lower() for n, v in flag_pb2.FlagChangeOutcome.items()
}


def _as_json(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = as_dict(message)
    return data


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _strategy_name(value: int) -> str:
    return next((k for k, v in _STRATEGIES.items() if v == value), "unspecified")


def _row(flag: flag_pb2.Flag) -> dict[str, Any]:
    if flag.strategy in (flag_pb2.FLAG_STRATEGY_PERCENTAGE, flag_pb2.FLAG_STRATEGY_CANARY):
        rollout = f"{flag.percentage:g}%"
    elif flag.strategy == flag_pb2.FLAG_STRATEGY_GRADUAL:
        rollout = f"ramp to {flag.gradual.target_percentage:g}%"
    else:
        rollout = ""
    return {
        "key": flag.key,
        "enabled": "yes" if flag.enabled else "no",
        "strategy": _strategy_name(flag.strategy),
        "rollout": rollout,
        "groups": ",".join(flag.groups),
        "users": ",".join(flag.users[:3]) + ("..." if len(flag.users) > 3 else ""),
        "variants": ",".join(f"{v.name}={v.weight}" for v in flag.variants),
        "version": flag.version,
        "updated_by": flag.updated_by,
    }


_FLAG_COLUMNS = ("key", "enabled", "strategy", "rollout", "groups", "variants", "version")


async def _all_flags(client: AsyncClient) -> list[flag_pb2.Flag]:
    flags, _ = await every_page(
        lambda size, token: client.flags.list_flags(page_size=size, page_token=token),
        "flags",
        page_size=1000,
    )
    return flags


async def _list(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        flags = await _all_flags(client)
    if args.json:
        _dump([_as_json(f) for f in flags])
    else:
        print_table([_row(f) for f in flags], _FLAG_COLUMNS)
    return 0


async def _get(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        flag = (await client.flags.get_flag(key=args.key)).flag
    if args.json:
        _dump(_as_json(flag))
    else:
        print_table([_row(flag)], (*_FLAG_COLUMNS, "users", "updated_by"))
    return 0


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _variants(value: str) -> list[flag_pb2.FlagVariant]:
    variants = []
    for item in comma_list(value):
        name, _, weight = (part.strip() for part in item.partition("="))
        if not name or not re.fullmatch(r"[0-9]+", weight):
            raise argparse.ArgumentTypeError(f"{item!r} must be name=weight, e.g. simple=50")
        variants.append(flag_pb2.FlagVariant(name=name, weight=int(weight)))
    return variants


async def _set(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        try:
            current: flag_pb2.Flag | None = (await client.flags.get_flag(key=args.key)).flag
        except NotFound:
            current = None
        flag = flag_pb2.Flag(key=args.key, enabled=True)
        if current is not None:
            flag.CopyFrom(current)
        if args.strategy is not None:
            flag.strategy = _STRATEGIES[args.strategy]
        if args.percentage is not None:
            flag.percentage = args.percentage
        if args.enable:
            flag.enabled = True
        if args.disable:
            flag.enabled = False
        if args.description is not None:
            flag.description = args.description
        if args.groups is not None:
            flag.ClearField("groups")
            flag.groups.extend(_split(args.groups))
        if args.users is not None:
            flag.ClearField("users")
            flag.users.extend(_split(args.users))
        if args.variants is not None:
            flag.ClearField("variants")
            flag.variants.extend(args.variants)
        if args.ramp_start or args.ramp_end or args.ramp_target is not None:
            if args.ramp_start:
                flag.gradual.start_time.FromDatetime(args.ramp_start)
            if args.ramp_end:
                flag.gradual.end_time.FromDatetime(args.ramp_end)
            if args.ramp_target is not None:
                flag.gradual.target_percentage = args.ramp_target
        expected = args.expected_version
        if expected is None:
            expected = 0 if current is None else current.version
        result = await client.flags.upsert_flag(
            flag=flag, expected_version=expected, comment=args.comment or ""
        )
    if args.json:
        _dump({"created": result.created, "flag": _as_json(result.flag)})
    else:
        unchanged = current is not None and result.flag.version == current.version
        verb = "created" if result.created else "unchanged" if unchanged else "saved"
        print(f"{verb} {result.flag.key} (version {result.flag.version})")
        print_table([_row(result.flag)], _FLAG_COLUMNS)
    return 0


async def _eval(args: argparse.Namespace) -> int:
    context = flag_pb2.EvaluationContext(
        targeting_key=args.user or "", groups=_split(args.groups or "")
    )
    async with client_from_args(args) as client:
        if args.key:
            results = [(await client.flags.evaluate_flag(key=args.key, context=context)).evaluation]
        else:
            results = list((await client.flags.evaluate_all_flags(context=context)).evaluations)
    if args.json:
        _dump([_as_json(r) for r in results] if not args.key else _as_json(results[0]))
        return 0
    rows = [
        {
            "key": r.key,
            "value": "on" if r.value else "off",
            "variant": r.variant,
            "reason": _REASONS.get(r.reason, "?")
            + (f" ({flag_pb2.EvaluationErrorCode.Name(r.error_code)})" if r.error_code else ""),
            "version": r.flag_version,
        }
        for r in results
    ]
    print_table(rows, ("key", "value", "variant", "reason", "version"))
    return 0


async def _disable_all(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        result = await client.flags.disable_all_flags(reason=args.reason)
    if args.json:
        _dump(_as_json(result))
    else:
        print(f"turned off {result.disabled_count} flag(s)")
        print_table([_row(f) for f in result.flags], _FLAG_COLUMNS)
    return 0


async def import_document(client: AsyncClient, document: Any, comment: str) -> dict[str, list[str]]:
    """Create or replace the document's flags; flags that already match are left alone."""
    outcome: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    for spec in parse_seed(document):
        try:
            current: flag_pb2.Flag | None = (await client.flags.get_flag(key=spec.key)).flag
        except NotFound:
            current = None
        if current is not None and normalize(spec_from_pb(current)) == spec:
            outcome["unchanged"].append(spec.key)
            continue
        result = await client.flags.upsert_flag(
            flag=spec_to_pb(spec),
            expected_version=0 if current is None else current.version,
            comment=comment,
        )
        outcome["created" if result.created else "updated"].append(spec.key)
    return outcome


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())  # a small file, read before any call


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


async def _import(args: argparse.Namespace) -> int:
    try:
        document = _read_json(Path(args.file))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {args.file}: {exc}") from exc
    async with client_from_args(args) as client:
        try:
            outcome = await import_document(client, document, f"import {Path(args.file).name}")
        except BadSeed as exc:
            raise ValueError(f"{args.file}: {exc.message}") from None
    if args.json:
        _dump(outcome)
    else:
        for what, keys in outcome.items():
            print(f"{what}: {', '.join(keys) if keys else '-'}")
    return 0


async def _export(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        flags = await _all_flags(client)
    text = json.dumps(to_seed([spec_from_pb(f) for f in flags]), indent=2) + "\n"
    if args.file and args.file != "-":
        _write_text(Path(args.file), text)
        print(f"exported {len(flags)} flag(s) to {args.file}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        page = await client.flags.list_flag_history(key=args.key, page_size=args.limit)
    if args.json:
        _dump([_as_json(e) for e in page.entries])
        return 0
    rows = [
        {
            "time": e.change_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            "version": e.version,
            "change": _KINDS.get(e.kind, "?"),
            "outcome": _OUTCOMES.get(e.outcome, "?"),
            "enabled": "yes" if e.flag.enabled else "no",
            "strategy": _row(e.flag)["strategy"],
            "rollout": _row(e.flag)["rollout"],
            "actor": e.actor,
            "comment": e.comment,
        }
        for e in page.entries
    ]
    print_table(
        rows,
        (
            "time",
            "version",
            "change",
            "outcome",
            "enabled",
            "strategy",
            "rollout",
            "actor",
            "comment",
        ),
    )
    return 0


async def _watch(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        async for response in client.flags.watch_flags(keys=args.keys):
            if args.json:
                print(json.dumps(_as_json(response)), flush=True)
            elif response.HasField("snapshot"):
                for flag in response.snapshot.flags:
                    row = _row(flag)
                    state = "on" if flag.enabled else "off"  # (after disable-all: all off)
                    print(
                        f"snapshot {row['key']} v{flag.version} {state} {row['strategy']} "
                        f"{row['rollout']}".rstrip()
                    )
                if response.snapshot.complete:
                    print("-- watching for changes (Ctrl-C to stop)", flush=True)
            else:
                change = response.change
                row = _row(change.flag)
                state = "on" if change.flag.enabled else "off"
                print(
                    f"{_KINDS.get(change.kind, '?')} {row['key']} v{change.flag.version} "
                    f"{state} {row['strategy']} {row['rollout']} by {change.actor}".rstrip(),
                    flush=True,
                )
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with client_from_args(args) as client:
        result = await client.flags.delete_flag(
            key=args.key, expected_version=args.expected_version or 0, comment=args.comment or ""
        )
    print(
        json.dumps({"deleted": args.key, "version": result.version})
        if args.json
        else f"deleted {args.key} (version {result.version} in its history)"
    )
    return 0


def register(subparsers: Any) -> None:
    flags = subparsers.add_parser(
        "flags",
        help="feature flags: list, set, evaluate, roll back",
        description="Manage the feature flags of the API key's tenant.",
    )
    sub = flags.add_subparsers(dest="flags_command", required=True)

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text
        )
        add_client_args(parser)
        parser.set_defaults(handler=handler)
        return parser

    command("list", _list, "list every flag")
    command("get", _get, "show one flag").add_argument("key")

    setter = command(
        "set", _set, "create a flag or change the given fields of one (optimistic concurrency)"
    )
    setter.add_argument("key")
    setter.add_argument("--strategy", choices=sorted(_STRATEGIES))
    setter.add_argument("--percentage", type=float, help="0-100, 2 decimals")
    switch = setter.add_mutually_exclusive_group()
    switch.add_argument("--enable", action="store_true", help="turn the master switch on")
    switch.add_argument("--disable", action="store_true", help="turn the flag off for everyone")
    setter.add_argument("--groups", help="allow-listed groups, comma-separated ('' = none)")
    setter.add_argument("--users", help="allow-listed targeting keys, comma-separated")
    setter.add_argument(
        "--variants", type=_variants, help="name=weight,... adding up to 100 ('' = none)"
    )
    setter.add_argument("--description")
    ramp_time = iso_time(offset_required=True)
    setter.add_argument(
        "--ramp-start", type=ramp_time, help="gradual: ISO-8601 start, e.g. 2026-03-01T09:00:00Z"
    )
    setter.add_argument("--ramp-end", type=ramp_time, help="gradual: ISO-8601 end")
    setter.add_argument("--ramp-target", type=float, help="gradual: percentage at the end")
    setter.add_argument(
        "--expected-version", type=int, help="fail if the flag is not at this version"
    )
    setter.add_argument("--comment", help="why; recorded in the history")

    evaluator = command("eval", _eval, "evaluate one flag (or all) for a caller")
    evaluator.add_argument("key", nargs="?", help="flag key; omit to evaluate every flag")
    evaluator.add_argument("--user", help="targeting key (user id)")
    evaluator.add_argument("--groups", help="the caller's groups, comma-separated")

    command(
        "disable-all", _disable_all, "turn every flag off at once (instant rollback)"
    ).add_argument("--reason", required=True, help="why; recorded in every flag's history")
    command(
        "import", _import, 'import a seed file ({"flags": {...}}); unchanged flags are left alone'
    ).add_argument("file")
    command("export", _export, "write the flags as a seed file").add_argument(
        "file", nargs="?", default="-", help="output file; default standard output"
    )
    history = command("history", _history, "a flag's changes and refused attempts, newest first")
    history.add_argument("key")
    history.add_argument("--limit", type=int, default=50)
    command("watch", _watch, "print a snapshot, then every change").add_argument(
        "keys", nargs="*", help="only these flags"
    )
    deleter = command("delete", _delete, "delete a flag (its history is kept)")
    deleter.add_argument("key")
    deleter.add_argument("--expected-version", type=int)
    deleter.add_argument("--comment")
