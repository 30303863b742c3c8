"""argon2id hashing off the event loop: verify, dummy verify, rehash detection."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest

from services.users.passwords import Passwords


@pytest.fixture
async def passwords() -> AsyncIterator[Passwords]:
    hasher = Passwords(memory_kib=19 * 1024, time_cost=2, threads=2)
    yield hasher
    hasher.close()


async def test_verify(passwords: Passwords) -> None:
    stored = await passwords.hash("a long enough password")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await passwords.verify(stored, "a long enough password")
    assert not await passwords.verify(stored, "another password!")
    assert not await passwords.verify("not a hash", "a long enough password")


async def test_needs_rehash_when_the_parameters_change(passwords: Passwords) -> None:
    stored = await passwords.hash("a long enough password")
    assert not passwords.needs_rehash(stored)
    stronger = Passwords(memory_kib=19 * 1024, time_cost=3, threads=1)
    try:
        assert stronger.needs_rehash(stored)
        assert await stronger.verify(stored, "a long enough password")  # old hashes still verify
    finally:
        stronger.close()
    assert passwords.needs_rehash("garbage")


async def test_dummy_verify_costs_a_real_verification(passwords: Passwords) -> None:
    stored = await passwords.hash("a long enough password")
    await passwords.verify_dummy("warm up")
    started = time.perf_counter()
    await passwords.verify(stored, "wrong password!!")
    real = time.perf_counter() - started
    started = time.perf_counter()
    await passwords.verify_dummy("wrong password!!")
    dummy = time.perf_counter() - started
    assert dummy > 0.5 * real


async def test_hashing_runs_off_the_event_loop(passwords: Passwords) -> None:
    loop_thread = threading.get_ident()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(passwords.hash(f"password number {i}") for i in range(4)))
    finally:
        task.cancel()
    assert threading.get_ident() == loop_thread
    assert ticks >= 10  # the loop kept running while four hashes were computed


async def test_hashing_threads_run_below_the_event_loop() -> None:
    import os
    import threading

    from services.users.passwords import HASHING_NICENESS, Passwords

    passwords = Passwords(memory_kib=19 * 1024, time_cost=2, threads=1)
    try:
        loop = asyncio.get_running_loop()
        niceness = await loop.run_in_executor(
            passwords._pool,
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
        )
    finally:
        passwords.close()
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + HASHING_NICENESS)
