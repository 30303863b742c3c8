"""Presence, per-user connection limits and the typing throttle, shared by replicas in Redis.

Presence of a room is two keys: a sorted set of ``<userId>|<instance>`` entries scored by
their expiry (ms), and a hash counting each user's entries. A process adds its entry when a
user's first connection here joins the room, removes it when the last one leaves, and
refreshes the expiry of all of its entries every third of the TTL. When a replica dies its
entries stop being refreshed and whoever touches the room next (a join, a refresh) reaps
them in the same Lua script and publishes the leaves, so presence heals within the TTL.
Every change is atomic in Lua, so two replicas never both announce the same join or leave.

Connections per user: a sorted set per user of ``<instance>|<connectionId>`` scored by
expiry; a handshake takes a slot only if fewer than the limit are live.

Every command passes through ``gate``, a semaphore shared with the fan-out's publishes, so
a burst (thousands of clients reconnecting at once) queues here instead of exhausting the
Redis connection pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

_REAP: Final = """
local function reap(z, h, now)
  local gone = {}
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, member in ipairs(expired) do
    redis.call('ZREM', z, member)
    local user = string.match(member, '^(.*)|[^|]*$')
    if user and redis.call('HINCRBY', h, user, -1) <= 0 then
      redis.call('HDEL', h, user)
      table.insert(gone, user)
    end
  end
  return gone
end
"""

# KEYS: entries, counts. ARGV: member, user, expiry, now, key ttl.
# Returns {joined (0/1), {users gone}, {users present}}.
_ENTER: Final = (
    _REAP
    + """
local gone = reap(KEYS[1], KEYS[2], ARGV[4])
local joined = 0
if redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then joined = 1 end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {joined, gone, redis.call('HKEYS', KEYS[2])}
"""
)

# KEYS: entries, counts. ARGV: member, user. Returns 1 when the user left the room.
_EXIT: Final = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    return 1
  end
end
return 0
"""

# KEYS: entries, counts. ARGV: expiry, now, key ttl, then member, user pairs.
# Returns {{users back}, {users gone}}.
_REFRESH: Final = (
    _REAP
    + """
local gone = reap(KEYS[1], KEYS[2], ARGV[2])
local back = {}
for i = 4, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) == 1 then
      table.insert(back, ARGV[i + 1])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {back, gone}
"""
)

# KEYS: the user's connections. ARGV: member, expiry, now, limit, key ttl. 1 = slot taken.
_ACQUIRE: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _text(values: Iterable[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


@dataclass(frozen=True, slots=True)
class Entered:
    joined: bool  # the user was not present in the room before (on any replica)
    gone: list[str]  # users whose presence expired (reaped now)
    present: list[str]


@dataclass(frozen=True, slots=True)
class Refreshed:
    back: list[str]
    gone: list[str]


class SharedState:
    """The Redis side of presence, connection slots and typing."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        instance: str,
        ttl_seconds: float,
        gate: asyncio.Semaphore,
    ) -> None:
        self._redis = redis
        self._gate = gate
        self._prefix = f"{namespace}chat:"
        self._instance = instance.replace("|", "_")
        self._ttl_ms = int(ttl_seconds * 1000)
        self._enter = redis.register_script(_ENTER)
        self._exit = redis.register_script(_EXIT)
        self._refresh = redis.register_script(_REFRESH)
        self._acquire = redis.register_script(_ACQUIRE)

    def _keys(self, room: str) -> list[str]:
        return [f"{self._prefix}presence:{room}", f"{self._prefix}presence-users:{room}"]

    def _member(self, user_id: str) -> str:
        return f"{user_id}|{self._instance}"

    def _expiry(self) -> tuple[int, int]:
        now = int(time.time() * 1000)
        return now + self._ttl_ms, now

    # Presence.

    async def enter(self, room: str, user_id: str) -> Entered:
        expiry, now = self._expiry()
        async with self._gate:
            joined, gone, present = await self._enter(
                keys=self._keys(room),
                args=[self._member(user_id), user_id, expiry, now, self._ttl_ms * 2],
            )
        return Entered(bool(joined), _text(gone), _text(present))

    async def exit(self, room: str, user_id: str) -> bool:
        """Remove this process's entry; True when the user is now absent from the room."""
        async with self._gate:
            left = await self._exit(keys=self._keys(room), args=[self._member(user_id), user_id])
        return bool(left)

    async def refresh(self, room: str, user_ids: Sequence[str]) -> Refreshed:
        expiry, now = self._expiry()
        args: list[str | int] = [expiry, now, self._ttl_ms * 2]
        for user_id in user_ids:
            args += [self._member(user_id), user_id]
        async with self._gate:
            back, gone = await self._refresh(keys=self._keys(room), args=args)
        return Refreshed(_text(back), _text(gone))

    # Connection slots.

    def _slots_key(self, user_id: str) -> str:
        return f"{self._prefix}connections:{user_id}"

    async def acquire_slot(self, user_id: str, connection_id: str, limit: int) -> bool:
        expiry, now = self._expiry()
        async with self._gate:
            taken = await self._acquire(
                keys=[self._slots_key(user_id)],
                args=[f"{self._instance}|{connection_id}", expiry, now, limit, self._ttl_ms * 2],
            )
        return bool(taken)

    async def release_slot(self, user_id: str, connection_id: str) -> None:
        async with self._gate:
            await self._redis.zrem(self._slots_key(user_id), f"{self._instance}|{connection_id}")

    async def refresh_slots(self, slots: Iterable[tuple[str, str]], batch: int = 500) -> None:
        """Keep this process's (user, connection) slots alive."""
        expiry, _ = self._expiry()
        pipe = self._redis.pipeline(transaction=False)
        queued = 0
        for user_id, connection_id in slots:
            key = self._slots_key(user_id)
            pipe.zadd(key, {f"{self._instance}|{connection_id}": expiry}, xx=True)
            pipe.pexpire(key, self._ttl_ms * 2)
            queued += 1
            if queued >= batch:
                async with self._gate:
                    await pipe.execute()
                pipe = self._redis.pipeline(transaction=False)
                queued = 0
        if queued:
            async with self._gate:
                await pipe.execute()

    # Typing.

    async def typing_allowed(self, room: str, user_id: str, interval_seconds: float) -> bool:
        """At most one typing event per user and room per interval, across replicas."""
        key = f"{self._prefix}typing:{room}:{user_id}"
        async with self._gate:
            return bool(await self._redis.set(key, b"1", nx=True, px=int(interval_seconds * 1000)))
