"""Start-up as an operator meets it: each unusable setting ends `convergio serve` with one
line on stderr naming the setting (exit 2, no traceback); the saved development key is
printed only while it works for the configured tenant; a second signal stops at once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from convergio_server.config import SettingsError, load_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.platform.procs import CONVERGIO, free_port, read_until, server_env, start_serve


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVERGIO, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _on_stores(pg_dsn: str, redis_url: str, redis_prefix: str, **values: str) -> dict[str, str]:
    """The environment of a server on the session's PostgreSQL and Redis."""
    return server_env(
        DATABASE_URL=pg_dsn, REDIS_URL=redis_url, CONVERGIO_REDIS_PREFIX=redis_prefix, **values
    )


def _assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], done.stderr


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("CONVERGIO_LISTEN", "127.0.0.1:99999", ("listen", "65535")),
        ("CONVERGIO_MAX_MESSAGE_BYTES", "99999999999", ("max_message_bytes",)),
        ("CONVERGIO_KEEPALIVE_TIME_SECONDS", "inf", ("keepalive_time_seconds",)),
        ("CONVERGIO_KEEPALIVE_TIME_SECONDS", "1e12", ("keepalive_time_seconds",)),
        ("CONVERGIO_DEV_TENANT", "Bad Tenant", ("dev_tenant",)),
        ("CONVERGIO_METRICS_LISTEN", "bad", ("metrics_listen",)),
        ("CONVERGIO_CONFIG_FILE", "/nonexistent.toml", ("/nonexistent.toml", "no such file")),
    ],
)
async def test_bad_setting_is_one_line_naming_it(
    tmp_path: Path, name: str, value: str, words: tuple[str, ...]
) -> None:
    env = server_env(CONVERGIO_DATA_DIR=str(tmp_path / "data"), **{name: value})
    done = await asyncio.to_thread(_run, ["serve"], env, tmp_path)
    _assert_one_line_error(done, *words)


async def test_pool_bounds_are_a_settings_error(tmp_path: Path) -> None:
    env = server_env(CONVERGIO_DB_POOL_MIN="20", CONVERGIO_DB_POOL_MAX="5")
    done = await asyncio.to_thread(_run, ["serve"], env, tmp_path)
    _assert_one_line_error(done, "db_pool_min", "<= db_pool_max")


async def test_bad_config_file_is_one_line_in_every_command(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("listen = [1\n")
    env = server_env()
    cases = [
        (["serve", "--config", str(tmp_path)], (str(tmp_path), "directory")),
        (["serve", "--config", str(broken)], (str(broken), "Unclosed array")),
        (["keys", "--config", str(broken), "list"], (str(broken),)),
    ]
    for args, words in cases:
        done = await asyncio.to_thread(_run, args, env, tmp_path)
        _assert_one_line_error(done, *words)
    env = server_env(CONVERGIO_CONFIG_FILE="/nope.toml")
    done = await asyncio.to_thread(_run, ["keys", "list"], env, tmp_path)
    _assert_one_line_error(done, "/nope.toml")


async def test_a_mistyped_file_value_names_the_file_key(tmp_path: Path) -> None:
    config = tmp_path / "convergio.toml"
    config.write_text("listen = 51107\n")
    env = server_env(CONVERGIO_DATA_DIR=str(tmp_path / "data"))
    env.pop("CONVERGIO_LISTEN", None)
    done = await asyncio.to_thread(_run, ["serve", "--config", str(config)], env, tmp_path)
    _assert_one_line_error(done, f"listen (in {config}, where it is an integer)")
    assert "CONVERGIO_LISTEN" not in done.stderr


@pytest.mark.parametrize("kind", ["file", "missing parent"])
async def test_unusable_data_dir_is_refused_before_any_key(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, kind: str
) -> None:
    data_dir = tmp_path / "a-file" if kind == "file" else Path("/proc/nope")
    (tmp_path / "a-file").write_text("")
    env = _on_stores(
        pg_dsn,
        redis_url,
        redis_prefix,
        CONVERGIO_DATA_DIR=str(data_dir),
        CONVERGIO_DEV_TENANT=f"t-{uuid.uuid4().hex[:12]}",
        CONVERGIO_LISTEN=f"127.0.0.1:{free_port()}",
    )
    done = await asyncio.to_thread(_run, ["serve"], env, tmp_path)
    _assert_one_line_error(done, "data_dir", str(data_dir))
    listed = await asyncio.to_thread(
        _run, ["keys", "list", "--tenant", env["CONVERGIO_DEV_TENANT"]], env, tmp_path
    )
    assert listed.stdout.strip() == "(none)"  # no key whose secret would be lost


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("setting", ["listen", "metrics_listen"])
async def test_address_in_use_is_one_line(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, held_port: int, setting: str
) -> None:
    taken = f"127.0.0.1:{held_port}"
    env = _on_stores(
        pg_dsn,
        redis_url,
        redis_prefix,
        CONVERGIO_DATA_DIR=str(tmp_path / "data"),
        CONVERGIO_BOOTSTRAP_DEV_KEY="false",
        CONVERGIO_LISTEN=taken if setting == "listen" else f"127.0.0.1:{free_port()}",
        CONVERGIO_METRICS_LISTEN=taken if setting == "metrics_listen" else "",
    )
    done = await asyncio.to_thread(_run, ["serve"], env, tmp_path)
    _assert_one_line_error(done, f"{setting} (CONVERGIO_{setting.upper()})", "address in use")
    assert "Exception ignored" not in done.stderr


async def test_a_start_up_problem_names_where_the_setting_was_given(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str, held_port: int
) -> None:
    # A value from the command line or the settings file is named there, not as an
    # environment variable the operator never set.
    taken = f"127.0.0.1:{held_port}"
    env = _on_stores(pg_dsn, redis_url, redis_prefix, CONVERGIO_BOOTSTRAP_DEV_KEY="false")
    env.pop("CONVERGIO_LISTEN", None)
    env.pop("CONVERGIO_DATA_DIR", None)
    data = str(tmp_path / "data")
    done = await asyncio.to_thread(
        _run, ["serve", "--listen", taken, "--data-dir", data], env, tmp_path
    )
    _assert_one_line_error(done, "listen (--listen)", "address in use")
    assert "CONVERGIO_LISTEN" not in done.stderr

    config = tmp_path / "convergio.toml"
    config.write_text(f'listen = "{taken}"\ndata_dir = "{tmp_path / "a-file"}"\n')
    (tmp_path / "a-file").write_text("")
    done = await asyncio.to_thread(_run, ["serve", "--config", str(config)], env, tmp_path)
    _assert_one_line_error(done, f"data_dir (in {config})", "not a writable directory")
    (tmp_path / "a-file").unlink()
    config.write_text(f'listen = "{taken}"\ndata_dir = "{data}"\n')
    done = await asyncio.to_thread(_run, ["serve", "--config", str(config)], env, tmp_path)
    _assert_one_line_error(done, f"listen (in {config})", "address in use")


def test_a_default_value_is_named_with_the_variable_that_changes_it() -> None:
    settings = load_settings({})
    assert settings.source("metrics_listen") == (
        "CONVERGIO_METRICS_LISTEN"
        if "CONVERGIO_METRICS_LISTEN" in os.environ
        else "the default; CONVERGIO_METRICS_LISTEN sets it"
    )
    assert load_settings({"listen": "127.0.0.1:7003"}).source("listen") == "--listen"


def test_lowercase_environment_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('listen = "127.0.0.1:7000"\nredis_url = "redis://file/0"\n')
    monkeypatch.delenv("CONVERGIO_LISTEN", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("convergio_listen", "127.0.0.1:7001")
    monkeypatch.setenv("redis_url", "redis://env/0")
    settings = load_settings(None, config)
    assert settings.listen == "127.0.0.1:7001"
    assert settings.redis_url == "redis://env/0"
    assert load_settings({"listen": "127.0.0.1:7002"}, config).listen == "127.0.0.1:7002"


def test_port_zero_means_any_free_port() -> None:
    assert load_settings({"listen": "127.0.0.1:0"}).listen == "127.0.0.1:0"
    with pytest.raises(SettingsError, match="metrics_listen"):
        load_settings({"metrics_listen": "127.0.0.1:0"})


class _Serve:
    """`convergio serve` with the dev key bootstrap on, on the session's stores."""

    def __init__(self, tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str) -> None:
        self.cwd = tmp_path
        self.env = _on_stores(
            pg_dsn,
            redis_url,
            redis_prefix,
            CONVERGIO_DATA_DIR=str(tmp_path / "data"),
            CONVERGIO_GRACE_PERIOD_SECONDS="1",
        )

    def banner(self, tenant: str) -> str:
        env = {**self.env, "CONVERGIO_DEV_TENANT": tenant}
        env["CONVERGIO_LISTEN"] = f"127.0.0.1:{free_port()}"
        with (self.cwd / "serve.log").open("a") as log:
            process = start_serve(env, self.cwd, stderr=log)
            try:
                text = read_until(process, "listening on")
                # Every case here prints one of these two lines right after.
                assert process.stdout is not None
                while not ("grpcurl" in text or "No development" in text):
                    line = process.stdout.readline()
                    assert line, text
                    text += line
                return text
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(30)

    def keys(self, *args: str) -> str:
        done = _run(["keys", *args], self.env, self.cwd)
        assert done.returncode == 0, done.stderr
        return done.stdout


def _token(banner: str) -> str:
    return next(word for word in banner.split() if word.startswith("cvg_"))


async def test_revoked_dev_key_is_not_printed(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    serve = _Serve(tmp_path, pg_dsn, redis_url, redis_prefix)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    first = await asyncio.to_thread(serve.banner, tenant)
    token = _token(first)
    assert "created now" in first
    again = await asyncio.to_thread(serve.banner, tenant)
    assert token in again and "from" in again
    await asyncio.to_thread(serve.keys, "revoke", token.split("_")[1])
    after = await asyncio.to_thread(serve.banner, tenant)
    assert token not in after and "grpcurl" not in after
    assert "was revoked" in after and f"keys create --tenant {tenant}" in after
    # A new data directory, without the saved key: it still says why none is printed.
    (tmp_path / "data" / "dev-api-key").unlink()
    fresh = await asyncio.to_thread(serve.banner, tenant)
    assert "grpcurl" not in fresh and "has API keys already" in fresh
    assert f"keys create --tenant {tenant}" in fresh


async def test_dev_key_of_another_tenant_is_not_printed_as_this_ones(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    serve = _Serve(tmp_path, pg_dsn, redis_url, redis_prefix)
    old, new = f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"
    old_token = _token(await asyncio.to_thread(serve.banner, old))
    # A tenant that already has keys gets none made; the saved key is not passed off as its.
    await asyncio.to_thread(serve.keys, "create", "--tenant", new, "--name", "x", "--role", "admin")
    other = await asyncio.to_thread(serve.banner, new)
    assert old_token not in other and f"belongs to tenant {old}" in other
    # A tenant without keys gets one; the other tenant's key is kept beside it.
    fresh = f"t-{uuid.uuid4().hex[:12]}"
    made = await asyncio.to_thread(serve.banner, fresh)
    assert "created now" in made and old_token not in made
    data = tmp_path / "data"
    assert (data / "dev-api-key").read_text().strip() == _token(made)
    assert (data / f"dev-api-key.{old}").read_text().strip() == old_token


async def test_second_signal_stops_at_once(
    tmp_path: Path, pg_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    env = _on_stores(
        pg_dsn,
        redis_url,
        redis_prefix,
        CONVERGIO_LISTEN=f"127.0.0.1:{port}",
        CONVERGIO_DATA_DIR=str(tmp_path),
        CONVERGIO_BOOTSTRAP_DEV_KEY="false",
        CONVERGIO_GRACE_PERIOD_SECONDS="60",
    )
    with (tmp_path / "serve.log").open("w") as log:
        process = start_serve(env, tmp_path, stderr=log)
        try:
            await asyncio.to_thread(read_until, process, "listening")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
                await watch.read()
                process.send_signal(signal.SIGINT)
                await asyncio.sleep(1)
                assert process.poll() is None  # the open stream holds the graceful stop
                started = time.monotonic()
                process.send_signal(signal.SIGINT)
                code = await asyncio.to_thread(process.wait, 20)
                assert time.monotonic() - started < 10
                assert code == 0
        finally:
            if process.poll() is None:
                process.kill()
