"""Password hashing with argon2id, always off the event loop.

Hashing and verifying run in a small thread pool (argon2 releases the GIL) whose threads
run at a lower CPU priority, so a burst of logins queues there and uses the CPU other
requests leave instead of stalling them. `verify_dummy` costs the same as a
real verification and lets a login for an unknown email take the same time as one for a
known email with a wrong password.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# How much lower than the event loop the hashing threads run (nice increment, Linux).
HASHING_NICENESS = 10


def _lower_priority() -> None:
    """Run this hashing thread below the event loop, so that a burst of logins takes only
    the CPU that other requests leave (on Linux a thread id can be given to setpriority)."""
    with contextlib.suppress(OSError, AttributeError):
        thread_id = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + HASHING_NICENESS))


class Passwords:
    def __init__(self, *, memory_kib: int, time_cost: int, threads: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID
        )
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when `password` matches; False for a mismatch or an unreadable hash."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one verification with the current parameters; always fails."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(32))
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
