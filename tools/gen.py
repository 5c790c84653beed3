"""Regenerate the SDK's code from proto/: messages (_pb2), gRPC stubs (_pb2_grpc),
their typing stubs (.pyi, by mypy-protobuf), the descriptor set with comments
(served by reflection so `grpcurl describe` shows the documentation), and the
typed service facade of the SDK.

    python tools/gen.py            # write into sdk/
    python tools/gen.py --out DIR  # write elsewhere (the codegen test compares)
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIRS = [ROOT / "proto", ROOT / "proto-vendor"]
DESCRIPTOR_SET = "convergio/_descriptors.binpb"
GENERATED_PACKAGES = (
    "convergio/common",
    "convergio/conversation",
    "convergio/workflow",
    "convergio/approval",
    "convergio/flag",
    "convergio/cost",
)
# Generated packages that belong to the server distribution, not the SDK: the
# vendored flagd protocol (OpenFeature providers ship their own copy of it, and
# two copies in one process collide in protobuf's descriptor pool).
SERVER_PACKAGES = ("flagd",)

MYPY_STUB_HEADER = '# mypy: disable-error-code="overload-cannot-match"\n'


def proto_files() -> list[Path]:
    files: list[Path] = []
    for base in PROTO_DIRS:
        if base.is_dir():
            files += sorted(p.relative_to(base) for p in base.rglob("*.proto"))
    return files


def generate(out: Path) -> None:
    bin_dir = Path(sys.executable).parent
    wkt = importlib.resources.files("grpc_tools") / "_proto"
    includes = [f"-I{d}" for d in PROTO_DIRS if d.is_dir()] + [f"-I{wkt}"]
    files = [str(f) for f in proto_files()]
    (out / "convergio").mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *includes,
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_source_info",
        "--include_imports",
        *files,
    ]
    # mypy-protobuf's own extension module is built with a newer protobuf than
    # the runtime the SDK pins; it works, but protobuf's version check refuses
    # to load it without this switch (only the plugin process sees it).
    env = {**os.environ, "TEMPORARILY_DISABLE_PROTOBUF_VERSION_CHECK": "true"}
    subprocess.run(command, check=True, cwd=ROOT, env=env)
    # Every generated directory becomes a package.
    for path in sorted(out.rglob("*_pb2.py")):
        directory = path.parent
        while directory != out and directory != out / "convergio":
            init = directory / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from proto/ by `make gen`; do not edit."""\n')
            directory = directory.parent
    for stub in sorted(out.rglob("*_pb2_grpc.pyi")):
        # mypy-protobuf overloads the stubs' constructors on grpc.Channel and
        # grpc.aio.Channel; grpc ships no type information, so both are Any and
        # mypy reports the second overload as unreachable.
        stub.write_text(MYPY_STUB_HEADER + stub.read_text())
    # tools/ is not a package: its modules import each other through sys.path.
    sys.path.insert(0, str(ROOT / "tools"))
    from gen_facade import write_facade  # type: ignore[import-not-found]

    write_facade(out / DESCRIPTOR_SET, out / "convergio" / "_services.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "sdk")
    args = parser.parse_args()
    if args.out == ROOT / "sdk":
        # Regenerate from scratch so a deleted proto leaves no stale module behind.
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            for package, home in [(p, "sdk") for p in GENERATED_PACKAGES] + [
                (p, "server") for p in SERVER_PACKAGES
            ]:
                shutil.rmtree(ROOT / home / package, ignore_errors=True)
                if (Path(tmp) / package).exists():
                    shutil.copytree(Path(tmp) / package, ROOT / home / package)
            for name in (DESCRIPTOR_SET, "convergio/_services.py"):
                shutil.copyfile(Path(tmp) / name, ROOT / "sdk" / name)
    else:
        generate(args.out)


if __name__ == "__main__":
    main()
