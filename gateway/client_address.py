"""Who is on the other end: the client's IP address, through trusted proxies only.

`X-Forwarded-For` is a list each proxy appends its peer to, so only its right end can be
believed, and only as far as the proxies that wrote it are ours. `client_address` starts
from the direct peer; while that address is in `MESH_GATEWAY_TRUSTED_PROXIES` it steps one
entry left in `X-Forwarded-For` (all its field lines, in order), and the first address that
is not a trusted proxy is the client. A client can prepend whatever it likes to the header,
but never past the entry our own proxy appended for it.

- No trusted proxies configured, or a peer outside them: the peer, header ignored.
- Empty entries are skipped (RFC 9110 list syntax); an entry that is not an IP address
  (``unknown``, garbage) stops the walk and the last trusted hop is answered (stricter for
  rate limits: forging cannot escape them).
- Every entry trusted: the left-most one (a client inside a trusted network).

Addresses come back in canonical form (``2001:db8::1``; an IPv4-mapped IPv6 peer as plain
IPv4; ports and ``[...]`` stripped from entries), so one client always has one spelling.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from aiohttp import hdrs, web

from gateway.settings import IpNetwork

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN: Final = "unknown"
"""The address of a peer without one (a Unix socket)."""
_CLIENT_ADDRESS: Final = web.RequestKey("gateway_client_address", str)


def parse_address(text: str) -> IpAddress | None:
    """An IP address from a peer or an `X-Forwarded-For` entry (``1.2.3.4:80``,
    ``[2001:db8::1]:443`` and IPv4-mapped IPv6 included); None when it is not one."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IpAddress, trusted: Sequence[IpNetwork]) -> bool:
    return any(address in network for network in trusted)


def peer_is_trusted(request: web.Request, trusted: Sequence[IpNetwork]) -> bool:
    """True when the direct peer is one of our proxies."""
    if not trusted or not request.remote:
        return False
    peer = parse_address(request.remote)
    return peer is not None and _trusted(peer, trusted)


def client_address(request: web.Request, trusted: Sequence[IpNetwork]) -> str:
    """The client's address for `request`, believing `X-Forwarded-For` only from `trusted`.

    Worked out once per request (the rate limiter and the upstream metadata both ask) and
    kept on the request; `trusted` is the gateway's one setting, the same for every call.
    """
    known = request.get(_CLIENT_ADDRESS)
    if known is None:
        known = request[_CLIENT_ADDRESS] = _client_address(request, trusted)
    return known


def _client_address(request: web.Request, trusted: Sequence[IpNetwork]) -> str:
    peer_text = request.remote
    peer = parse_address(peer_text) if peer_text else None
    if peer is None:
        return peer_text or UNKNOWN
    if not trusted or not _trusted(peer, trusted):
        return str(peer)
    lines = request.headers.getall(hdrs.X_FORWARDED_FOR, ())
    hops = [hop for line in lines for hop in line.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        if not _trusted(client, trusted):
            break
        address = parse_address(hop)
        if address is None:
            break
        client = address
    return str(client)
