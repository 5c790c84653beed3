"""The `convergio` command line as an operator uses it."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

import pytest
from convergio import AsyncClient, errors
from convergio_server.domain.errors import Unauthenticated

from tests.platform.procs import CONVERGIO, server_env
from tests.support.server import RunningServer


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVERGIO, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def cli_env(tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return server_env(
        DATABASE_URL=pg_dsn,
        REDIS_URL=redis_url,
        CONVERGIO_REDIS_PREFIX=redis_prefix,
        CONVERGIO_DATA_DIR=str(tmp_path),
    )


async def test_keys_create_list_revoke(
    server: RunningServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    created = await asyncio.to_thread(
        _cli,
        "keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "billing service",
        "--role",
        "member",
        "--role",
        "operator",
        "--json",
        env=cli_env,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    assert made["tenant"] == "acme" and made["roles"] == ["member", "operator"]
    # Said in text: which database holds it (a key made in the wrong one works nowhere).
    text = await asyncio.to_thread(
        _cli, "keys", "create", "--tenant", "acme-text", "--name", "other", "--role", "member",
        env=cli_env, cwd=tmp_path,
    )  # fmt: skip
    database = cli_env["DATABASE_URL"].rsplit("/", 1)[1]
    assert text.returncode == 0 and "in PostgreSQL at " in text.stdout and database in text.stdout

    # The printed key works against the running server (same database).
    async with AsyncClient(server.target, api_key=made["token"]) as acme:
        with pytest.raises(errors.Unimplemented):
            await acme.workflows.list_workflows()

    listed = await asyncio.to_thread(
        _cli, "keys", "list", "--tenant", "acme", "--json", env=cli_env, cwd=tmp_path
    )
    rows = json.loads(listed.stdout)
    assert [r["key_id"] for r in rows] == [made["key_id"]]
    assert "token" not in rows[0] and "secret" not in json.dumps(rows)

    table = await asyncio.to_thread(_cli, "keys", "list", env=cli_env, cwd=tmp_path)
    assert "KEY_ID" in table.stdout and made["key_id"] in table.stdout

    revoked = await asyncio.to_thread(
        _cli, "keys", "revoke", made["key_id"], env=cli_env, cwd=tmp_path
    )
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    await server.server.keys.revoke(made["key_id"])  # drop this process's short cache
    async with AsyncClient(server.target, api_key=made["token"]) as acme:
        with pytest.raises(errors.Unauthenticated):
            await acme.workflows.list_workflows()


async def test_keys_bad_input_is_explained(
    server: RunningServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    bad_tenant = await asyncio.to_thread(
        _cli,
        "keys",
        "create",
        "--tenant",
        "Bad Tenant!",
        "--name",
        "x",
        "--role",
        "member",
        env=cli_env,
        cwd=tmp_path,
    )
    assert bad_tenant.returncode == 1 and "tenant" in bad_tenant.stderr
    unknown = await asyncio.to_thread(
        _cli, "keys", "revoke", "0000000000000000", env=cli_env, cwd=tmp_path
    )
    assert unknown.returncode == 1 and "no API key" in unknown.stderr


async def test_migrate_is_idempotent(
    server: RunningServer, cli_env: dict[str, str], tmp_path: Path
) -> None:
    done = await asyncio.to_thread(_cli, "migrate", env=cli_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


async def test_health_command(server: RunningServer, tmp_path: Path) -> None:
    env = server_env()
    ok = await asyncio.to_thread(_cli, "health", "--target", server.target, env=env, cwd=tmp_path)
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = await asyncio.to_thread(
        _cli, "health", "--target", "127.0.0.1:1", "--timeout", "1", env=env, cwd=tmp_path
    )
    assert down.returncode == 2


async def test_health_unknown_service_and_bad_timeout(
    server: RunningServer, tmp_path: Path
) -> None:
    env = server_env()
    unknown = await asyncio.to_thread(
        _cli, "health", "--target", server.target, "--service", "nosuch", env=env, cwd=tmp_path
    )
    assert unknown.returncode == 1 and "unknown service nosuch" in unknown.stderr
    for timeout in ("-1", "0", "nan"):
        refused = await asyncio.to_thread(
            _cli, "health", "--target", server.target, "--timeout", timeout, env=env, cwd=tmp_path
        )
        assert refused.returncode == 2 and "argument --timeout" in refused.stderr


async def test_keys_and_migrate_need_only_postgres(cli_env: dict[str, str], tmp_path: Path) -> None:
    # Revoking a key must work while Redis is down.
    env = {**cli_env, "REDIS_URL": "redis://127.0.0.1:1"}
    created = await asyncio.to_thread(
        _cli,
        "keys",
        "create",
        "--tenant",
        "acme",
        "--name",
        "n",
        "--role",
        "member",
        "--json",
        env=env,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["key_id"]
    revoked = await asyncio.to_thread(_cli, "keys", "revoke", key_id, env=env, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    migrated = await asyncio.to_thread(_cli, "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr


async def test_keys_json_shapes_and_name_limits(
    cli_env: dict[str, str], tmp_path: Path, pg_dsn: str
) -> None:
    from convergio_server.domain.auth import KeyManager
    from convergio_server.storage.keys import PgKeyStore
    from convergio_server.storage.postgres import create_pool

    tenant = "keys-" + secrets.token_hex(3)

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli("keys", *args, env=cli_env, cwd=tmp_path)

    for name in ("x" * 101, "a\x01b", "   "):
        refused = await asyncio.to_thread(
            keys, "create", "--tenant", tenant, "--name", name, "--role", "member"
        )
        assert refused.returncode == 1 and "name:" in refused.stderr, refused.stderr
    made = [
        json.loads(
            (
                await asyncio.to_thread(
                    keys,
                    "create",
                    "--tenant",
                    tenant,
                    "--name",
                    f"k{i}",
                    "--role",
                    "member",
                    "--role",
                    "operator",
                    "--json",
                )
            ).stdout
        )
        for i in range(2)
    ]
    bad_tenant = await asyncio.to_thread(keys, "list", "--tenant", "BAD!")
    assert bad_tenant.returncode == 1 and "tenant" in bad_tenant.stderr

    # A wrong secret for a real id and a revoked key's right secret are not uses.
    pool = await create_pool(pg_dsn)
    try:
        manager = KeyManager(PgKeyStore(pool), cache_seconds=0)
        wrong = "cvg_" + made[0]["key_id"] + "_" + "A" * 43
        with pytest.raises(Unauthenticated):
            await manager.authenticate(wrong)
        await manager.revoke(made[1]["key_id"])
        with pytest.raises(Unauthenticated):
            await manager.authenticate(made[1]["token"])
        listed = json.loads(
            (await asyncio.to_thread(keys, "list", "--tenant", tenant, "--json")).stdout
        )
        assert [r["last_used"] for r in listed] == [None, None]
        assert listed[0]["revoked"] is None and listed[1]["revoked"] is not None
        assert all(r["roles"] == ["member", "operator"] for r in listed)
        assert {k: v for k, v in made[0].items() if k != "token"} == listed[0]
        await manager.authenticate(made[0]["token"])
        listed = json.loads(
            (await asyncio.to_thread(keys, "list", "--tenant", tenant, "--json")).stdout
        )
        assert listed[0]["last_used"] is not None and listed[1]["last_used"] is None
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["migrate"], ["health"], ["keys"], ["keys", "create"], ["version"]]
)
async def test_every_command_explains_itself(command: list[str], tmp_path: Path) -> None:
    shown = await asyncio.to_thread(_cli, *command, "--help", env=server_env(), cwd=tmp_path)
    assert shown.returncode == 0
    assert "usage: convergio" in shown.stdout


async def test_version(tmp_path: Path) -> None:
    shown = await asyncio.to_thread(_cli, "version", env=server_env(), cwd=tmp_path)
    assert shown.returncode == 0 and "convergio-server" in shown.stdout
