"""`python -m bench` (`make bench`): every scenario, side by side with its baselines.

Writes bench/results/<date>-<git sha>.md and .json (see bench/README.md). The scenarios
that go through the gateway share one mesh and run first; the others start their own
processes. ``--quick`` is a smoke run (tiny durations, one repetition), written as
``<date>-<sha>-quick``; ``--only gateway_read,auth`` runs some.
"""

from __future__ import annotations

from bench import (
    analytics_ingest,
    auth,
    catalog_reserve,
    chat_fanout,
    gateway_policies,
    gateway_read,
)
from bench.harness.runner import main

SCENARIOS = [
    gateway_read.SCENARIO,
    gateway_policies.SCENARIO,
    catalog_reserve.SCENARIO,
    analytics_ingest.SCENARIO,
    chat_fanout.SCENARIO,
    auth.SCENARIO,
]

if __name__ == "__main__":
    raise SystemExit(main(SCENARIOS))
