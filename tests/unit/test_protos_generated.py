"""The committed generated code is exactly what protos/ generates now."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mesh import protogen


def test_generated_code_is_up_to_date() -> None:
    assert protogen.check() == []


def test_a_stale_generated_file_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check compares for real: edit a copy of the repo's protos and it reports it."""
    copy = tmp_path / "repo"
    shutil.copytree(protogen.ROOT / "protos", copy / "protos")
    stub = copy / "protos" / "users" / "v1" / "users_pb2.py"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(protogen, "ROOT", copy)
    monkeypatch.setattr(protogen, "PROTO_ROOT", copy / "protos")
    assert protogen.check() == [f"differs: {Path('protos/users/v1/users_pb2.py')}"]
