"""Generate the Python code for `protos/` with the repo root as the import root.

`python -m mesh.protogen` writes `*_pb2.py`, `*_pb2_grpc.py` and their `.pyi` stubs beside
each `.proto`; `--check` generates into a scratch folder and fails when the committed output
differs, so CI catches a contract edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def _include_dirs() -> list[str]:
    grpc_tools_protos = Path(protoc.__file__).parent / "_proto"
    site_packages = Path(sysconfig.get_paths()["purelib"])  # google/api/*.proto live here
    return [str(ROOT), str(grpc_tools_protos), str(site_packages)]


def generate(out_dir: Path) -> None:
    plugin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        *(f"-I{d}" for d in _include_dirs()),
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *(str(p.relative_to(ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(base: Path) -> set[Path]:
    return {
        p.relative_to(base)
        for p in (base / "protos").rglob("*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> list[str]:
    """Return the generated files that differ from what `protos/` generates now."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        expected, committed = generated_files(fresh), generated_files(ROOT)
        problems = [f"missing: {p}" for p in sorted(expected - committed)]
        problems += [f"stale (no .proto): {p}" for p in sorted(committed - expected)]
        problems += [
            f"differs: {p}"
            for p in sorted(expected & committed)
            if not filecmp.cmp(fresh / p, ROOT / p, shallow=False)
        ]
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if regeneration changes files")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(f"protos out of date, {line}", file=sys.stderr)
        if problems:
            print("run `make protos` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        for rel in generated_files(Path(scratch)):
            shutil.copyfile(Path(scratch) / rel, ROOT / rel)
    for package in {p.parent for p in proto_files()} | {PROTO_ROOT}:
        for folder in [package, *package.relative_to(ROOT).parents]:
            init = ROOT / folder / "__init__.py"
            if folder != Path(".") and (ROOT / folder).is_dir() and not init.exists():
                init.write_text("")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
