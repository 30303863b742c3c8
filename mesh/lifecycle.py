"""A process's life: started, ready, stopping. The ops server reports it; signals end it."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from mesh.metrics import PROCESS_READY

ReadinessCheck = Callable[[], Awaitable[bool]]
log = logging.getLogger("mesh.lifecycle")


class Lifecycle:
    def __init__(self) -> None:
        self.started = False
        self._ready = False
        self._stopping = asyncio.Event()
        self._checks: list[tuple[str, ReadinessCheck]] = []

    @property
    def ready(self) -> bool:
        return self._ready and not self._stopping.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """A dependency that must answer for the process to report ready."""
        self._checks.append((name, check))

    async def failing_checks(self, timeout: float = 1.0) -> list[str]:
        async def run(check: ReadinessCheck) -> bool:
            try:
                return await asyncio.wait_for(check(), timeout)
            except Exception:
                return False

        results = await asyncio.gather(*(run(check) for _, check in self._checks))
        return [name for (name, _), ok in zip(self._checks, results, strict=True) if not ok]

    def mark_ready(self) -> None:
        self.started = True
        self._ready = True
        PROCESS_READY.set(1)

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stop requested: readiness off, draining")
            self._stopping.set()
            PROCESS_READY.set(0)

    async def wait_for_stop(self) -> None:
        await self._stopping.wait()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
