"""Retry policy pieces: full-jitter backoff bounds, the retry budget's math, idempotency."""

from __future__ import annotations

import random

import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from gateway.retry import RetryBudget, backoff_seconds, is_idempotent
from protos.catalog.v1 import catalog_pb2
from tests.unit.gateway.bookshelf import SERVICE as SHELF

CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_backoff_ceiling_doubles_up_to_the_maximum() -> None:
    def ceiling(retry: int) -> float:
        return backoff_seconds(retry, 0.025, 0.25, uniform=lambda low, high: high)

    assert [ceiling(r) for r in range(6)] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25])
    assert backoff_seconds(3, 0.025, 0.25, uniform=lambda low, high: low) == 0.0


@given(
    retry=st.integers(0, 10),
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 60.0),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_within_zero_and_the_ceiling(
    retry: int, base: float, cap: float, seed: int
) -> None:
    rng = random.Random(seed)
    pause = backoff_seconds(retry, base, cap, uniform=rng.uniform)
    assert 0.0 <= pause <= min(cap, base * 2**retry)


def test_backoff_is_jittered() -> None:
    pauses = {backoff_seconds(2, 0.025, 0.25) for _ in range(50)}
    assert len(pauses) > 40
    assert all(0.0 <= p <= 0.1 for p in pauses)


def test_the_budget_allows_one_retry_per_five_requests() -> None:
    budget = RetryBudget(0.2, 10.0, clock=Clock())
    for _ in range(4):
        budget.request()
    assert not budget.try_spend()  # 1 retry for 4 requests would be 25 %
    budget.request()
    assert budget.try_spend()
    assert not budget.try_spend()
    for _ in range(5):
        budget.request()
    assert budget.try_spend()
    assert not budget.try_spend()


def test_the_budget_slides_with_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, 10.0, clock=clock)
    for _ in range(10):
        budget.request()
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 10.5  # requests and retries both slide out
    assert not budget.try_spend()
    for _ in range(5):
        budget.request()
    assert budget.try_spend()


def test_a_zero_ratio_never_retries() -> None:
    budget = RetryBudget(0.0, 10.0, clock=Clock())
    for _ in range(1000):
        budget.request()
    assert not budget.try_spend()


@given(
    events=st.lists(st.tuples(st.floats(0.0, 3.0), st.integers(0, 3)), min_size=1, max_size=300),
    ratio=st.sampled_from([0.1, 0.2, 0.5]),
)
def test_retries_never_exceed_the_ratio_of_requests_over_any_run(
    events: list[tuple[float, int]], ratio: float
) -> None:
    """Each request may want up to 3 retries; over the whole run, retries <= ratio * requests."""
    clock = Clock()
    budget = RetryBudget(ratio, 10.0, clock=clock)
    requests = retries = 0
    for gap, wanted in events:
        clock.now += gap
        budget.request()
        requests += 1
        for _ in range(wanted):
            if budget.try_spend():
                retries += 1
    assert retries <= ratio * requests + 1e-9


@pytest.mark.parametrize(
    ("http_method", "method", "idempotent"),
    [
        ("GET", SHELF.methods_by_name["GetBook"], True),
        ("HEAD", SHELF.methods_by_name["GetBook"], True),
        ("POST", SHELF.methods_by_name["ReserveBook"], False),
        ("PATCH", SHELF.methods_by_name["UpdateBook"], False),
        ("DELETE", CATALOG.methods_by_name["DeleteProduct"], True),  # IDEMPOTENT
        ("POST", CATALOG.methods_by_name["ReleaseReservation"], True),  # IDEMPOTENT
        ("POST", CATALOG.methods_by_name["ReserveProduct"], False),
        ("POST", CATALOG.methods_by_name["CreateProduct"], False),
        ("GET", CATALOG.methods_by_name["ListCategories"], True),  # NO_SIDE_EFFECTS too
    ],
)
def test_idempotent_calls(http_method: str, method: MethodDescriptor, idempotent: bool) -> None:
    assert is_idempotent(http_method, method) is idempotent
