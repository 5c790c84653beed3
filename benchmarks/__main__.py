"""Run every benchmark module (or those named on the command line) and report.

The clients run on uvloop, as the servers do: on the default event loop their own dispatch
added about 2 ms to the platform's and the bare server's delivery latencies alike."""

from __future__ import annotations

import os

# Set before gRPC loads: uvloop starts the benchmarks' helper processes with a plain fork,
# which gRPC's fork handlers (not needed here) would report on every start.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import importlib
import json
import pkgutil
import secrets
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import uvloop
from convergio_server.storage.postgres import ensure_database

import benchmarks
from benchmarks.harness import BenchEnv, Result

OUT_DIR = Path("bench-results")


def _print(results: list[Result]) -> None:
    header = (
        f"{'area':<14}{'measure':<52}{'value':>14} {'unit':<10}{'baseline':>14}{'ratio':>9}  target"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        base = f"{r.baseline:>14.3f}" if r.baseline is not None else f"{'':>14}"
        ratio = f"{r.ratio:>9.3f}" if r.ratio is not None else f"{'':>9}"
        verdict = "" if r.ok is None else ("  ok" if r.ok else "  MISSED")
        value = f"{r.value:>14.3f} {r.unit:<10}"
        print(f"{r.area:<14}{r.name:<52}{value}{base}{ratio}  {r.target}{verdict}")


async def _main(selected: list[str]) -> int:
    modules = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    if selected:
        modules = [m for m in modules if m.removeprefix("bench_") in selected or m in selected]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="convergio-bench-") as tmp:
        env = BenchEnv(data_dir=Path(tmp))
        server_url = env.database_url
        if server_url:
            # A database of its own per run, so a run never sees another's data.
            bench_db = f"convergio_bench_{secrets.token_hex(4)}"
            env.database_url = await ensure_database(server_url, bench_db)
        try:
            for name in modules:
                module = importlib.import_module(f"benchmarks.{name}")
                print(f"running {name} ...", file=sys.stderr, flush=True)
                results += await module.run(env)
        finally:
            if server_url:
                conn = await asyncpg.connect(server_url)
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{bench_db}" WITH (FORCE)')
                finally:
                    await conn.close()
    _print(results)
    print(f"\nsaved {_save(results)}")
    return 0


def _save(results: list[Result]) -> Path:
    OUT_DIR.mkdir(exist_ok=True)
    text = json.dumps([r.as_dict() for r in results], indent=2)
    path = OUT_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(text)
    (OUT_DIR / "latest.json").write_text(text)
    return path


if __name__ == "__main__":
    sys.exit(uvloop.run(_main(sys.argv[1:])))
