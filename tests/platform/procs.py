"""Run `convergio serve` as a real OS process: the lifecycle tests, and every test that needs
a second server process on the session's database and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

CONVERGIO = str(Path(sys.executable).parent / "convergio")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(**values: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({k: v for k, v in values.items() if v is not None})
    env.setdefault("CONVERGIO_LOG_LEVEL", "WARNING")
    return env


def start_serve(
    env: dict[str, str], cwd: Path, stderr: int | IO[Any] = subprocess.PIPE
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CONVERGIO, "serve"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def read_until(process: subprocess.Popen[str], marker: str, limit_seconds: float = 90) -> str:
    """Lines of stdout up to and including the first containing `marker`."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    err = process.stderr.read() if process.stderr and process.poll() is not None else ""
    raise AssertionError(f"{marker!r} never printed; stdout={''.join(seen)!r} stderr={err!r}")


def wait_exit(process: subprocess.Popen[str], log: Path, limit_seconds: float = 60) -> int:
    """The exit code once the process ends; on a timeout the failure shows the log's tail,
    so a hang at shutdown says where it hung."""
    try:
        return process.wait(limit_seconds)
    except subprocess.TimeoutExpired:
        tail = log.read_text()[-4000:] if log.exists() else ""
        message = f"server still running after {limit_seconds}s; log tail:\n{tail}"
        raise AssertionError(message) from None


@contextlib.asynccontextmanager
async def serve_process(
    cwd: Path, database_url: str, redis_url: str, redis_prefix: str, **settings: str
) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """A second server as its own OS process on the given stores; yields the process and
    its host:port once it serves. `settings` are extra environment variables. Its log goes
    to `cwd/serve.log` (a pipe nobody reads could fill up and stall it)."""
    port = free_port()
    env = server_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CONVERGIO_REDIS_PREFIX=redis_prefix,
        CONVERGIO_DATA_DIR=str(cwd / "data"),
        CONVERGIO_LISTEN=f"127.0.0.1:{port}",
        CONVERGIO_BOOTSTRAP_DEV_KEY="false",
        **settings,
    )
    with (cwd / "serve.log").open("w") as log:
        process = start_serve(env, cwd, stderr=log)
        try:
            await asyncio.to_thread(read_until, process, "listening on")
            yield process, f"127.0.0.1:{port}"
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait)
