"""The OWASP table of README.md stays true: ten rows, each naming tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = Path(__file__).with_name("README.md")
ROW = re.compile(r"^\| \*\*(API\d+) [^|]*\*\* \|[^|]*\| (?P<tests>.*) \|$", re.M)
TEST = re.compile(r"`(?P<path>tests/[\w/]+\.py)::(?P<name>test_\w+)`")


def test_every_owasp_row_names_tests_that_exist() -> None:
    rows = {found[1]: found["tests"] for found in ROW.finditer(README.read_text())}
    assert sorted(rows, key=lambda name: int(name[3:])) == [f"API{n}" for n in range(1, 11)]
    for risk, cell in rows.items():
        named = TEST.findall(cell)
        assert named, f"{risk} names no test"
        for path, name in named:
            source = ROOT / path
            assert source.is_file(), f"{risk}: {path} does not exist"
            assert re.search(rf"^(async )?def {name}\(", source.read_text(), re.M), (
                f"{risk}: {path} has no {name}"
            )
