"""Per-request deadlines: the route's timeout, shortened by the client, counted from arrival.

Every upstream call of a request shares one `Deadline`, fixed when the request arrives: the
route's ``timeout_seconds`` (`gateway/policies.toml`), or less when the client sent

- ``grpc-timeout``: the gRPC wire format, 1 to 8 digits and a unit, ``H`` hours, ``M``
  minutes, ``S`` seconds, ``m`` milliseconds, ``u`` microseconds, ``n`` nanoseconds
  (``100m``, ``2S``, ``500u``);
- ``Request-Timeout``: seconds as a decimal number (``1.5``).

The shorter of the two wins; a value over the route's timeout is capped to it; a malformed
value is a 400 problem naming the header. ``0`` is valid and means "already too late": the
request gets its 504 without the upstream being called. Time spent in the gateway before
the call (authorization, rate limit, reading the body) comes off the deadline, because it
is fixed on the handler's first line, where `request_deadline` is called: the earliest
point aiohttp gives (it keeps no arrival time on the request), reached through middlewares
that do no I/O, once the request's head is parsed.

The clock is `time.monotonic` (never the wall clock, which may step).
"""

from __future__ import annotations

import re
import time
from typing import Final, NamedTuple

from aiohttp import web
from multidict import CIMultiDictProxy

from mesh.problem import ProblemError

GRPC_TIMEOUT_HEADER: Final = "grpc-timeout"
REQUEST_TIMEOUT_HEADER: Final = "Request-Timeout"

_GRPC_TIMEOUT: Final = re.compile(r"([0-9]{1,8})([HMSmun])")
_GRPC_UNIT_SECONDS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_DECIMAL_SECONDS: Final = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")


class Deadline(NamedTuple):
    """When a request's upstream work must be done, on the `time.monotonic` clock.

    (A named tuple: immutable, and made on every request at about half a frozen
    dataclass's cost.)
    """

    expires_at: float
    timeout_seconds: float  # the whole allowance, from the handler's first line
    set_by_client: bool = False  # a client header made it shorter than the route's timeout

    @classmethod
    def after(
        cls, seconds: float, *, start: float | None = None, set_by_client: bool = False
    ) -> Deadline:
        begin = time.monotonic() if start is None else start
        return cls(begin + seconds, seconds, set_by_client)

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at


def parse_grpc_timeout(value: str) -> float:
    """Seconds of a ``grpc-timeout`` value (``100m`` -> 0.1); ValueError when malformed."""
    match = _GRPC_TIMEOUT.fullmatch(value)
    if match is None:
        raise ValueError(value)
    return int(match[1]) * _GRPC_UNIT_SECONDS[match[2]]


def parse_request_timeout(value: str) -> float:
    """Seconds of a ``Request-Timeout`` value (``1.5`` -> 1.5); ValueError when malformed."""
    if _DECIMAL_SECONDS.fullmatch(value) is None:
        raise ValueError(value)
    return float(value)


def client_timeout(headers: CIMultiDictProxy[str]) -> float | None:
    """The shortest timeout the client asked for in either header, or None.

    Raises a 400 `ProblemError` naming the header when one is malformed (or repeated with
    different values: which one the client meant is unknowable).
    """
    if GRPC_TIMEOUT_HEADER not in headers and REQUEST_TIMEOUT_HEADER not in headers:
        return None  # the common case, at two lookups
    shortest: float | None = None
    for header, parse, expected in (
        (GRPC_TIMEOUT_HEADER, parse_grpc_timeout, "1 to 8 digits and a unit H, M, S, m, u or n"),
        (REQUEST_TIMEOUT_HEADER, parse_request_timeout, "a number of seconds, e.g. 1.5"),
    ):
        values = headers.getall(header, ())
        if not values:
            continue
        if len(set(values)) > 1:
            raise _malformed(header, f"it is sent {len(values)} times with different values")
        try:
            seconds = parse(values[0])
        except ValueError:
            raise _malformed(header, f"expected {expected}, got {values[0][:40]!r}") from None
        shortest = seconds if shortest is None else min(shortest, seconds)
    return shortest


def _malformed(header: str, why: str) -> ProblemError:
    return ProblemError(
        400, f"The {header} header is malformed: {why}.", extensions={"header": header}
    )


def request_deadline(request: web.Request, timeout_seconds: float) -> Deadline:
    """The deadline of `request`'s upstream calls from now: `timeout_seconds` (the route's)
    or the client's shorter ``grpc-timeout`` / ``Request-Timeout``. Call it first thing."""
    start = time.monotonic()
    asked = client_timeout(request.headers)
    if asked is not None and asked < timeout_seconds:
        return Deadline(start + asked, asked, set_by_client=True)
    return Deadline(start + timeout_seconds, timeout_seconds)
