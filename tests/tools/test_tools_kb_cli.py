"""`convergio kb`: an operator fills and queries a tenant's knowledge base from the shell."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

import asyncpg
import pytest
from convergio_server.storage.migrations import apply_migrations

from tests.platform.procs import CONVERGIO, server_env


def kb(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVERGIO, "kb", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def cli_env(tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    return server_env(
        DATABASE_URL=pg_dsn,
        REDIS_URL=redis_url,
        CONVERGIO_REDIS_PREFIX=redis_prefix,
        CONVERGIO_DATA_DIR=str(tmp_path),
    )


async def test_add_list_search_delete(cli_env: dict[str, str], tmp_path: Path, pg_dsn: str) -> None:
    tenant, other = f"kbcli-{secrets.token_hex(3)}", f"kbcli-{secrets.token_hex(3)}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await apply_migrations(conn)
        for name in (tenant, other):
            await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $1)", name)
    finally:
        await conn.close()
    (tmp_path / "refunds.md").write_text(
        "# Refund policy\n\nCustomers get a full refund within 30 days of purchase.\n"
    )
    (tmp_path / "oncall.txt").write_text("The on-call engineer answers pages within 15 minutes.")

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(kb, *args, env=cli_env, cwd=tmp_path)

    added = await run("--tenant", tenant, "--json", "add", "refunds.md", "oncall.txt")
    assert added.returncode == 0, added.stderr
    assert [(r["id"], r["title"]) for r in json.loads(added.stdout)] == [
        ("refunds.md", "Refund policy"),
        ("oncall.txt", "oncall.txt"),
    ]
    # Adding a file again replaces it.
    again = await run("--tenant", tenant, "add", "refunds.md")
    assert again.returncode == 0 and "refunds.md" in again.stdout
    listed = json.loads((await run("--tenant", tenant, "--json", "list")).stdout)
    assert sorted(r["id"] for r in listed) == ["oncall.txt", "refunds.md"]

    found = json.loads((await run("--tenant", tenant, "--json", "search", "refund days")).stdout)
    assert [r["id"] for r in found] == ["refunds.md"] and "**refund**" in found[0]["snippet"]
    table = await run("search", "pages", "--tenant", tenant)
    assert "SNIPPET" in table.stdout and "oncall.txt" in table.stdout
    elsewhere = json.loads((await run("--tenant", other, "--json", "search", "refund")).stdout)
    assert elsewhere == []

    deleted = await run("--tenant", tenant, "delete", "oncall.txt")
    assert deleted.returncode == 0 and "deleted oncall.txt" in deleted.stdout
    missing = await run("--tenant", tenant, "delete", "oncall.txt")
    assert missing.returncode == 1 and "'oncall.txt' is not in the knowledge base" in missing.stderr
    nobody = await run("--tenant", "no-such-tenant", "add", "refunds.md")
    assert nobody.returncode == 1 and "tenant 'no-such-tenant' does not exist" in nobody.stderr
    bad = await run("--tenant", tenant, "search", "   ")
    assert bad.returncode == 1 and "query" in bad.stderr
