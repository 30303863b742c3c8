"""Who a request is counted against: the user, or the address (an IPv6 client per /64)."""

from __future__ import annotations

from gateway.policy import RateLimit
from gateway.ratelimit.limiter import address_bucket, consumer_key
from mesh.auth.identity import Caller

ADA = Caller(user_id="ada", roles=("user",), token_id="t1")
PER_USER = RateLimit("general", 100, 1, 200, key="user")
PER_ADDRESS = RateLimit("auth", 10, 60, 10, key="address")


def test_signed_in_callers_are_counted_per_user_when_the_policy_says_so() -> None:
    assert consumer_key(PER_USER, ADA, "203.0.113.9") == "general:user:ada"
    assert consumer_key(PER_USER, None, "203.0.113.9") == "general:addr:203.0.113.9"
    assert consumer_key(PER_ADDRESS, ADA, "203.0.113.9") == "auth:addr:203.0.113.9"


def test_an_ipv6_client_is_counted_per_64_block() -> None:
    a = address_bucket("2001:db8:1:2:aaaa::1")
    assert a == address_bucket("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") != a
    assert address_bucket("203.0.113.9") == "203.0.113.9"
    assert address_bucket("unknown") == "unknown"
    assert address_bucket("not:an:address") == "not:an:address"
