"""Request deadlines: the client's headers parsed, capped by the route, counted from arrival."""

from __future__ import annotations

import re
import time

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.deadline import (
    Deadline,
    client_timeout,
    parse_grpc_timeout,
    parse_request_timeout,
    request_deadline,
)
from mesh.problem import ProblemError


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("100m", 0.1),
        ("2S", 2.0),
        ("500u", 0.0005),
        ("1500000n", 0.0015),
        ("3M", 180.0),
        ("1H", 3600.0),
        ("99999999S", 99999999.0),
        ("0m", 0.0),
    ],
)
def test_grpc_timeout_values(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "100", "m", "100x", "100 m", "1.5S", "-1S", "123456789S", "100ms", "\uff11S", "+1S", "1s"],
)
def test_malformed_grpc_timeouts(value: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(value)}$"):
        parse_grpc_timeout(value)


@pytest.mark.parametrize(("value", "seconds"), [("1.5", 1.5), ("2", 2.0), ("0.050", 0.05)])
def test_request_timeout_values(value: str, seconds: float) -> None:
    assert parse_request_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "abc", "1,5", "-1", "1.", ".5", "1e3", "inf", "nan", "1s"])
def test_malformed_request_timeouts(value: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(value)}$"):
        parse_request_timeout(value)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_no_header_no_client_timeout() -> None:
    assert client_timeout(headers()) is None


def test_the_shorter_header_wins() -> None:
    both = headers(("grpc-timeout", "300m"), ("Request-Timeout", "0.2"))
    assert client_timeout(both) == pytest.approx(0.2)
    both = headers(("Grpc-Timeout", "100m"), ("request-timeout", "0.2"))
    assert client_timeout(both) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("name", "value"),
    [("grpc-timeout", "soon"), ("Request-Timeout", "1 second"), ("grpc-timeout", "1.5S")],
)
def test_a_malformed_header_is_a_400_naming_it(name: str, value: str) -> None:
    with pytest.raises(ProblemError) as raised:
        client_timeout(headers((name, value)))
    problem = raised.value
    assert problem.status == 400
    assert name in problem.detail
    assert repr(value) in problem.detail
    assert problem.extensions == {"header": name}


def test_a_header_repeated_with_different_values_is_a_400() -> None:
    with pytest.raises(ProblemError) as raised:
        client_timeout(headers(("grpc-timeout", "1S"), ("grpc-timeout", "2S")))
    assert raised.value.status == 400
    assert "grpc-timeout" in raised.value.detail
    assert client_timeout(headers(("grpc-timeout", "1S"), ("grpc-timeout", "1S"))) == 1.0


def test_the_route_timeout_when_the_client_says_nothing() -> None:
    before = time.monotonic()
    deadline = request_deadline(make_mocked_request("GET", "/"), 5.0)
    after = time.monotonic()
    assert before + 5.0 <= deadline.expires_at <= after + 5.0
    assert deadline.timeout_seconds == 5.0
    assert not deadline.set_by_client


def test_a_shorter_client_timeout_shortens_it() -> None:
    request = make_mocked_request("GET", "/", headers={"grpc-timeout": "250m"})
    deadline = request_deadline(request, 5.0)
    assert deadline.timeout_seconds == pytest.approx(0.25)
    assert deadline.set_by_client
    assert 0.2 < deadline.remaining() <= 0.25


@pytest.mark.parametrize(("name", "value"), [("grpc-timeout", "1M"), ("Request-Timeout", "9.5")])
def test_a_longer_client_timeout_is_capped_at_the_routes(name: str, value: str) -> None:
    deadline = request_deadline(make_mocked_request("GET", "/", headers={name: value}), 2.0)
    assert deadline.timeout_seconds == 2.0
    assert not deadline.set_by_client
    assert deadline.remaining() <= 2.0


def test_a_zero_timeout_is_already_expired() -> None:
    request = make_mocked_request("GET", "/", headers={"Request-Timeout": "0"})
    deadline = request_deadline(request, 5.0)
    assert deadline.expired()
    assert deadline.remaining() == 0.0


def test_time_spent_since_it_was_made_is_subtracted() -> None:
    deadline = request_deadline(make_mocked_request("GET", "/"), 1.0)
    time.sleep(0.4)  # auth, rate limit, body read
    assert deadline.remaining() <= 0.6
    deadline = Deadline.after(1.0, start=time.monotonic() - 0.4)
    assert 0.55 < deadline.remaining() <= 0.6


def test_the_deadline_is_fixed_when_made_and_runs_down() -> None:
    deadline = Deadline.after(0.2)
    first = deadline.remaining()
    time.sleep(0.05)
    second = deadline.remaining()
    assert first - second >= 0.04  # it counts from when it was made, not from each call
    time.sleep(0.2)
    assert deadline.remaining() == 0.0
    assert deadline.expired()
