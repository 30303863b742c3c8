"""Property-based fuzzing of every operation of the live ``/openapi.json`` with schemathesis.

Schemathesis's engine (what ``st run`` drives) loads the document from the running gateway
and runs its examples, coverage and fuzzing phases on every operation: valid requests and,
in its negative mode, requests that break the schema (wrong types, missing required parts,
out-of-range and malformed values, unknown methods). It runs twice over sockets against
the real mesh: with an admin's token (up to 150 generated examples per operation), so that
admin operations really run, then with an ordinary user's (50). The seed is fixed and
schemathesis's cross-run cache is off, so each run generates the same inputs; the request
count still moves by a percent or so, as generation follows the answers (ids it is given).

Checks on every response:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``,
  ``response_headers_conformance``: the answer is one the document describes (errors as
  ``application/problem+json`` Problems);
- ``negative_data_rejection``: input that breaks the schema gets a 4xx;
- ``missing_required_header``, ``ignored_auth``: a call without the token is refused;
- ``unsupported_method``, ``allow_header_conformance``: an undocumented method is a 405
  whose ``Allow`` lists exactly the documented methods;
- ``use_after_free``, ``ensure_resource_availability`` (for what the runs create and delete).

Left out: ``positive_data_acceptance``, which wants every schema-valid request accepted,
while the services rightly refuse some with a 400 for rules a JSON Schema cannot say (a
password equal to the email, an id that must be a UUID that exists), and
``object_level_authorization``, which needs two owners of each resource (the OWASP tests
cover that). ``missing_required_header`` is off for ``GET /ws/chat`` alone: a plain GET there
is not a WebSocket handshake and is answered 426 before the token is looked at.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import schemathesis
from schemathesis.engine import Status, events, from_schema

from tests.e2e.client import call, new_account
from tests.e2e.mesh_process import MeshProcess, pid_alive
from tests.resilience.tally import TALLY

SEED = 20261122
ADMIN_EXAMPLES, USER_EXAMPLES = 150, 50  # the file takes about a minute on 2 cores
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
)
WEBSOCKET = "gateway.ChatWebSocket"
DOCUMENT = "openapi.json"
NOT_ALLOWED = frozenset({401, 403})


@dataclass
class Run:
    """What one schemathesis run sent and saw."""

    operations: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    allowed: Counter[str] = field(default_factory=Counter)  # operation -> answers past auth
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def inputs(self) -> int:
        return sum(self.statuses.values())

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def report(self) -> str:
        found = [f"{op} {check}: {text}" for (op, check, _), text in self.failures.items()]
        return "\n\n".join(found + [f"error: {e}" for e in self.errors])


def _config(token: str, max_examples: int) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "cache": {"enabled": False},  # no state carried from one run to the next
            "headers": {"Authorization": f"Bearer {token}"},
            "workers": 2,
            "request-timeout": 30,
            "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "operations": [
                {
                    "include-operation-id": WEBSOCKET,
                    "checks": {"missing_required_header": {"enabled": False}},
                }
            ],
        }
    )


def fuzz(base: str, token: str, max_examples: int) -> Run:
    """One schemathesis run over every operation of ``base``'s document (blocking)."""
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(
        f"{base}/{DOCUMENT}", config=_config(token, max_examples)
    )
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            _scenario(run, event)
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"schemathesis failed: {event.exception!r}")
    run.seconds = time.monotonic() - started
    return run


def _scenario(run: Run, event: events.ScenarioFinished) -> None:
    label = event.recorder.label
    run.operations.add(label)
    for interaction in event.recorder.interactions.values():
        if interaction.response is None:
            run.errors.append(f"{label}: no response to {interaction.request.uri}")
            continue
        status = interaction.response.status_code
        run.statuses[status] += 1
        if status not in NOT_ALLOWED:
            run.allowed[label] += 1
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                key = (label, check.name, failure.title)
                text = f"{failure.title}\n{failure.message}\n{check.failure_info.code_sample}"
                run.failures.setdefault(key, text)


async def _documented_operations(http: aiohttp.ClientSession, base: str) -> set[str]:
    status, _, document = await call(http, "GET", f"{base}/{DOCUMENT}")
    assert status == 200
    paths: dict[str, dict[str, Any]] = document["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item}


async def test_every_operation_of_the_openapi_document_under_fuzzing(
    mesh: MeshProcess, http: aiohttp.ClientSession
) -> None:
    documented = await _documented_operations(http, mesh.gateway)
    admin = await new_account(mesh, http, admin=True)
    user = await new_account(mesh, http)

    runs = {
        "admin": await asyncio.to_thread(fuzz, mesh.gateway, admin.access_token, ADMIN_EXAMPLES),
        "user": await asyncio.to_thread(fuzz, mesh.gateway, user.access_token, USER_EXAMPLES),
    }
    for who, run in runs.items():
        TALLY.tried("schemathesis", run.inputs)
        TALLY.saw_server_errors(run.server_errors())
        print(
            f"\nschemathesis as {who}: {len(run.operations)} operations, {run.inputs} requests "
            f"in {run.seconds:.1f} s, statuses {dict(sorted(run.statuses.items()))}"
        )

    for who, run in runs.items():
        assert not run.failures, f"as {who}:\n\n{run.report()}"
        assert not run.errors, f"as {who}:\n\n{run.report()}"
        # Schemathesis leaves out the document's own URL (GET /openapi.json, no parameters).
        assert run.operations == documented - {f"GET /{DOCUMENT}"}, (who, run.operations)
        assert run.server_errors() == 0, (who, run.statuses)
        assert any(400 <= status < 500 for status in run.statuses), who  # negative cases ran
    # The admin's token got past access control on every operation, so each really ran.
    fuzzed = runs["admin"].operations
    assert not [op for op in fuzzed if runs["admin"].allowed[op] == 0], runs["admin"].allowed
    assert runs["user"].statuses[403] > 0  # and a user's did not, on the admin ones

    status, _, health = await call(http, "GET", f"{mesh.gateway}/health")
    assert (status, health["status"]) == (200, "ok"), health
    assert mesh.process.poll() is None, "mesh up exited"
    for name, pids in mesh.child_pids().items():
        assert pid_alive(pids[-1]), f"{name} (pid {pids[-1]}) is gone"
