"""The resilience and security suite: faults injected into a running mesh, abuse tried on it.

Every test here is marked `resilience` (`make test-resilience` runs just them). At the end
of a run that collected any of them, the counts of `tests.resilience.tally.TALLY` are printed
and written to ``test-artifacts/resilience-report.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from mesh.harness import BackingUrls
from tests.e2e import conftest as e2e
from tests.e2e.mesh_process import MeshProcess
from tests.resilience.faultproxy import ProxyHost
from tests.resilience.inventory import Operation, operations
from tests.resilience.stack import FaultyMesh, faulty_mesh
from tests.resilience.tally import TALLY
from tests.resilience.world import World, build_world

# The e2e fixtures, shared: `mesh` (the whole mesh, one per module) and `http` (a client).
mesh = e2e.mesh
http = e2e.http

REPORT = Path("test-artifacts") / "resilience-report.json"
_HERE = Path(__file__).parent


def _ours(item: pytest.Item) -> bool:
    return _HERE in Path(str(item.fspath)).parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _ours(item):
            item.add_marker(pytest.mark.resilience)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    passed = [r for r in terminalreporter.stats.get("passed", []) if _HERE.name in r.nodeid]
    failed = [r for r in terminalreporter.stats.get("failed", []) if _HERE.name in r.nodeid]
    if not passed and not failed:
        return
    report = {"cases_passed": len(passed), "cases_failed": len(failed), **TALLY.as_dict()}
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    terminalreporter.section("resilience report")
    for key, value in report.items():
        terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="session")
def proxies() -> Iterator[ProxyHost]:
    """The thread that runs every fault proxy of the session."""
    host = ProxyHost()
    yield host
    host.close()


@pytest.fixture(scope="module")
def faulty(
    backing: BackingUrls, proxies: ProxyHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultyMesh]:
    """The whole mesh with a fault proxy on every link (tests/resilience/stack.py), per module."""
    with faulty_mesh(backing, tmp_path_factory.mktemp("faulty-mesh"), proxies) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def world(mesh: MeshProcess) -> World:
    """The users and objects the security tests attack (`world.py`), on the module's mesh."""
    return await build_world(mesh)


@pytest_asyncio.fixture(scope="module")
async def ops(mesh: MeshProcess) -> list[Operation]:
    """Every operation of the module's mesh, from its live /openapi.json (`inventory.py`)."""
    async with aiohttp.ClientSession() as http:
        return await operations(http, mesh.gateway)
