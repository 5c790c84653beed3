"""The generated SDK code checked in under sdk/ is what `make gen` produces from proto/.

A proto change without `make gen` (or a hand edit of generated code) fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk"
# Directories that hold only generated code: a file there that generation no
# longer produces is stale.
GENERATED_DIRS = (
    "convergio/common",
    "convergio/conversation",
    "convergio/workflow",
    "convergio/approval",
    "convergio/flag",
    "convergio/cost",
    "flagd",
)


def _home(name: str) -> Path:
    """Where a generated file is checked in: the vendored flagd protocol belongs to the
    server distribution, everything else to the SDK."""
    return ROOT / "server" if name.startswith("flagd/") else SDK


def _files(base: Path) -> set[str]:
    return {
        path.relative_to(base).as_posix()
        for path in base.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_checked_in_sdk_matches_generation(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen.py"), "--out", str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    generated = _files(tmp_path)
    assert "convergio/_services.py" in generated

    differ = sorted(
        name
        for name in generated
        if not (_home(name) / name).is_file()
        or (_home(name) / name).read_bytes() != (tmp_path / name).read_bytes()
    )
    stale = sorted(
        name
        for directory in GENERATED_DIRS
        if (_home(directory + "/") / directory).is_dir()
        for name in (f"{directory}/{n}" for n in _files(_home(directory + "/") / directory))
        if name not in generated
    )
    assert not differ and not stale, (
        "the generated SDK code under sdk/ is out of date; run `make gen` and commit.\n"
        + "".join(f"  differs or missing: sdk/{name}\n" for name in differ)
        + "".join(f"  no longer generated: sdk/{name}\n" for name in stale)
    )
