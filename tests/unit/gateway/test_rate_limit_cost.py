"""event_count: what an ingest request costs under a policy counted in events."""

from __future__ import annotations

import pytest

from gateway.body import NO_BODY
from gateway.ratelimit import event_count


def test_the_length_of_the_events_list() -> None:
    assert event_count({"events": [{}] * 7}) == 7
    assert event_count({"events": [1], "other": [1, 2, 3]}) == 1


@pytest.mark.parametrize(
    "body",
    [NO_BODY, None, {}, {"events": []}, {"events": {"a": 1}}, {"events": "xx"}, [1, 2, 3], "s"],
)
def test_empty_or_malformed_bodies_count_one(body: object) -> None:
    assert event_count(body) == 1
