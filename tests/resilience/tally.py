"""The suite's report: what was tried and what went wrong, counted as the tests run.

Tests add to one process-wide `TALLY`; the conftest prints it at the end of the run and writes
it to ``test-artifacts/resilience-report.json``. The counters only ever grow, and a test that
sees a 5xx or a lost record also fails: the counts are the figures for the report, the asserts
are what keeps them at zero.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    faults: Counter[str] = field(default_factory=Counter)  # fault kind -> times survived
    inputs: Counter[str] = field(default_factory=Counter)  # input family -> inputs sent
    server_errors: int = 0  # responses with a 5xx status (or gRPC INTERNAL/UNKNOWN)
    lost: int = 0  # acknowledged messages or records that could not be found afterwards
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fault_survived(self, kind: str, times: int = 1) -> None:
        with self._lock:
            self.faults[kind] += times

    def tried(self, family: str, count: int = 1) -> None:
        with self._lock:
            self.inputs[family] += count

    def saw_server_errors(self, count: int) -> None:
        with self._lock:
            self.server_errors += count

    def saw_lost(self, count: int) -> None:
        with self._lock:
            self.lost += count

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "faults_survived": sum(self.faults.values()),
                "faults": dict(sorted(self.faults.items())),
                "inputs_tried": sum(self.inputs.values()),
                "inputs": dict(sorted(self.inputs.items())),
                "server_errors_seen": self.server_errors,
                "records_lost": self.lost,
            }


TALLY = Tally()
