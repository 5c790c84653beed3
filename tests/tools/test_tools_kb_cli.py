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
    # An unknown tenant is reported as such, not shown as an empty knowledge base.
    for action in (["add", "refunds.md"], ["list"], ["search", "refund"], ["delete", "x"]):
        nobody = await run("--tenant", "no-such-tenant", "--json", *action)
        assert nobody.returncode == 1, (action, nobody.stdout, nobody.stderr)
        assert "tenant 'no-such-tenant' does not exist" in nobody.stderr and not nobody.stdout
    bad = await run("--tenant", tenant, "search", "   ")
    assert bad.returncode == 1 and "query" in bad.stderr


async def test_add_checks_every_file_before_adding_any(
    cli_env: dict[str, str], tmp_path: Path, pg_dsn: str
) -> None:
    tenant = f"kbcli-{secrets.token_hex(3)}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await apply_migrations(conn)
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $1)", tenant)
    finally:
        await conn.close()
    # Redis is not needed.
    env = {**cli_env, "REDIS_URL": "redis://127.0.0.1:1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return kb("--tenant", tenant, *args, env=env, cwd=tmp_path)

    (tmp_path / "good.txt").write_text("good")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    (tmp_path / "nul.txt").write_bytes(b"\x00\x00")
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    (tmp_path / "d1" / "same.txt").write_text("one")
    (tmp_path / "d2" / "same.txt").write_text("two")
    refused = await asyncio.to_thread(run, "add", "good.txt", "bad.txt", "nul.txt")
    assert refused.returncode == 1
    assert "cannot read bad.txt" in refused.stderr
    assert "nul.txt: content: must not be empty" in refused.stderr
    collide = await asyncio.to_thread(run, "add", "d1/same.txt", "d2/same.txt")
    assert collide.returncode == 1 and "--id" in collide.stderr and "same.txt" in collide.stderr
    assert json.loads((await asyncio.to_thread(run, "--json", "list")).stdout) == []

    (tmp_path / "t.md").write_bytes("# Ti\x00tlé\nbody\x00\n".encode())
    (tmp_path / "_notes.txt").write_text("x\n")
    added = await asyncio.to_thread(run, "--json", "add", "t.md", "_notes.txt")
    assert added.returncode == 0, added.stderr
    rows = json.loads(added.stdout)
    assert [(r["id"], r["title"]) for r in rows] == [("t.md", "Titlé"), ("notes.txt", "_notes.txt")]
    listed = json.loads((await asyncio.to_thread(run, "--json", "list")).stdout)
    bytes_listed = {r["id"]: r["bytes"] for r in listed}
    assert {r["id"]: r["bytes"] for r in rows} == bytes_listed == {"t.md": 14, "notes.txt": 2}

    deleted = await asyncio.to_thread(run, "--json", "delete", "t.md", "nosuch")
    assert deleted.returncode == 1
    assert json.loads(deleted.stdout) == {"deleted": ["t.md"], "not_found": ["nosuch"]}


async def test_list_limits_and_tenant(cli_env: dict[str, str], tmp_path: Path, pg_dsn: str) -> None:
    tenant = f"kbcli-{secrets.token_hex(3)}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await apply_migrations(conn)
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $1)", tenant)
        await conn.executemany(
            "INSERT INTO knowledge_documents (tenant_id, document_id, title, content) "
            "VALUES ($1, $2, $2, 'text')",
            [(tenant, f"doc{i:04d}") for i in range(1205)],
        )
    finally:
        await conn.close()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return kb(*args, env=cli_env, cwd=tmp_path)

    for limit in ("0", "-1"):
        refused = await asyncio.to_thread(run, "--tenant", tenant, "list", "--limit", limit)
        assert refused.returncode == 2 and "--limit" in refused.stderr
    for limit in ("0", "-1", "51"):
        refused = await asyncio.to_thread(run, "--tenant", tenant, "search", "x", "--limit", limit)
        assert refused.returncode == 2
        assert f"argument --limit: {limit!r} is not a whole number from 1 to 50" in refused.stderr
    for args in (["--tenant", "Bad!", "list"], ["--tenant", "Bad!", "delete", "x"]):
        bad = await asyncio.to_thread(run, *args)
        assert bad.returncode == 1 and "tenant:" in bad.stderr, bad.stderr
    first = await asyncio.to_thread(run, "--tenant", tenant, "--json", "list")
    assert len(json.loads(first.stdout)) == 100 and "--after doc0099" in first.stderr
    everything = await asyncio.to_thread(
        run, "--tenant", tenant, "--json", "list", "--limit", "5000"
    )
    ids = [r["id"] for r in json.loads(everything.stdout)]
    assert ids == [f"doc{i:04d}" for i in range(1205)] and "more" not in everything.stderr
    rest = await asyncio.to_thread(
        run, "--tenant", tenant, "--json", "list", "--after", "doc1200", "--limit", "5"
    )
    assert [r["id"] for r in json.loads(rest.stdout)] == [f"doc{i}" for i in range(1201, 1205)]
    assert "more" not in rest.stderr
