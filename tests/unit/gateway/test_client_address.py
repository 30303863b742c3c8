"""client_address: X-Forwarded-For believed only through trusted proxies, right to left."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.client_address import UNKNOWN, client_address, parse_address
from gateway.settings import IpNetwork

LB: tuple[IpNetwork, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("fd00::/8"),
)


def address(peer: str | None, *forwarded: str, trusted: tuple[IpNetwork, ...] = LB) -> str:
    headers = CIMultiDict(("X-Forwarded-For", line) for line in forwarded)
    request = make_mocked_request("GET", "/", headers=headers)
    if peer is not None:  # a mocked request has no peer address
        request = request.clone(remote=peer)
    return client_address(request, trusted)


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert address("203.0.113.9", "198.51.100.1", trusted=()) == "203.0.113.9"


def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    assert address("203.0.113.9", "198.51.100.1") == "203.0.113.9"


def test_a_trusted_peer_gives_the_right_most_untrusted_entry() -> None:
    # the client forged "1.1.1.1"; our load balancer appended what it saw: 198.51.100.7
    assert address("10.0.0.2", "1.1.1.1, 198.51.100.7") == "198.51.100.7"


def test_trusted_hops_are_stepped_over_across_field_lines() -> None:
    forwarded = ("1.1.1.1, 198.51.100.7", "10.1.2.3 , fd00::5")
    assert address("10.0.0.2", *forwarded) == "198.51.100.7"


def test_every_entry_trusted_gives_the_left_most() -> None:
    assert address("10.0.0.2", "10.9.9.9, 10.0.0.3") == "10.9.9.9"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert address("10.0.0.2") == "10.0.0.2"


def test_garbage_stops_the_walk_at_the_last_trusted_hop() -> None:
    assert address("10.0.0.2", "198.51.100.7, unknown, 10.0.0.3") == "10.0.0.3"
    assert address("10.0.0.2", "198.51.100.7,,") == "198.51.100.7"  # empty entries skipped


def test_ports_brackets_and_mapped_addresses_are_normalised() -> None:
    assert address("10.0.0.2", "198.51.100.7:4711") == "198.51.100.7"
    assert address("10.0.0.2", "[2001:DB8::1]:443") == "2001:db8::1"
    assert address("::ffff:203.0.113.9") == "203.0.113.9"
    assert address("::ffff:10.0.0.2", "198.51.100.7") == "198.51.100.7"


def test_a_peer_without_an_address() -> None:
    assert address(None, "198.51.100.7") == UNKNOWN


@pytest.mark.parametrize("text", ["", "unknown", "1.2.3", "[::1", "300.1.1.1", "_hidden"])
def test_parse_address_rejects_what_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None
