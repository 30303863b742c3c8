"""Login throttling per account and per client address, counted in Redis.

Policy: failed attempts count. Each login first reserves an attempt on both counters in one
atomic script (refused, with the time until the window ends, when either counter has
reached the limit), so a burst of concurrent guesses cannot overshoot the limit. A
successful login gives the attempt back: it clears the account's counter and takes one off
the address's counter (not clearing it, so one valid account cannot launder guesses
against others from the same address). Windows are fixed: they start at the first counted
attempt and last `window_seconds`.

Keys: `<namespace>users:login:account:<sha256(email)>` (no email in Redis) and
`<namespace>users:login:address:<address>`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Final, Protocol
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mesh.errors import ResourceExhausted, Unavailable

# KEYS: account, address. ARGV: account limit, window in ms, address limit.
# Returns 0 (reserved) or the wait in ms.
_RESERVE: Final = """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[3])}
local window = tonumber(ARGV[2])
local wait = 0
for i = 1, 2 do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= limits[i] then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
      redis.call('PEXPIRE', KEYS[i], window)
      ttl = window
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], window) end
end
return 0
"""

# KEYS: account, address.
_SUCCEEDED: Final = """
redis.call('DEL', KEYS[1])
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
if count > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""

MAX_ADDRESS_CHARS: Final = 100
TOO_MANY_ATTEMPTS: Final = "too many failed sign-in attempts; try again later"
UNAVAILABLE: Final = "sign-in is unavailable for a moment; try again shortly"
log = logging.getLogger("services.users.throttle")


class LoginThrottle(Protocol):
    async def reserve(self, email: str, address: str) -> None:
        """Count one attempt; raises ResourceExhausted when over the limit."""

    async def succeeded(self, email: str, address: str) -> None:
        """The attempt succeeded: give it back."""


class RedisLoginThrottle:
    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        *,
        limit: int,
        window_seconds: int,
        address_limit: int | None = None,
    ) -> None:
        self._reserve = client.register_script(_RESERVE)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._prefix = f"{namespace}users:login:"
        self._limit = limit
        self._address_limit = limit if address_limit is None else address_limit
        self._window_ms = window_seconds * 1000

    async def reserve(self, email: str, address: str) -> None:
        keys = self._keys(email, address)
        try:
            wait_ms = int(
                await self._reserve(
                    keys=keys, args=[self._limit, self._window_ms, self._address_limit]
                )
            )
        except RedisError:  # fail closed: no counting, no sign-in
            raise Unavailable(UNAVAILABLE) from None
        if wait_ms > 0:
            raise ResourceExhausted(
                TOO_MANY_ATTEMPTS, retry_after_seconds=float(math.ceil(wait_ms / 1000))
            )

    async def succeeded(self, email: str, address: str) -> None:
        try:
            await self._succeeded(keys=self._keys(email, address))
        except RedisError:  # the attempt stays counted; the sign-in itself succeeded
            log.warning("could not give a successful login attempt back", exc_info=True)

    def _keys(self, email: str, address: str) -> list[str]:
        account = hashlib.sha256(email.encode()).hexdigest()
        return [f"{self._prefix}account:{account}", f"{self._prefix}address:{address}"]


def client_address(forwarded: str | None, peer: str) -> str:
    """The client's address: what the gateway forwarded, else the gRPC peer without port.

    gRPC peers look like `ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000` or `unix:/path`.
    """
    if forwarded and forwarded.strip():
        return forwarded.strip()[:MAX_ADDRESS_CHARS]
    kind, _, rest = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            rest = host
        rest = rest.removeprefix("[").removesuffix("]")
    elif not rest:
        rest = kind
    return (rest or "unknown")[:MAX_ADDRESS_CHARS]
