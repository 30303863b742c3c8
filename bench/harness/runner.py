"""Running scenarios: settings, the shared context, the time budget, the command line.

Each scenario module exposes ``SCENARIO = Scenario(number, key, title, measure)``;
``measure(context)`` returns a `ScenarioResult`. `python -m bench` runs them all and writes
the report; ``python -m bench.<module>`` (for the modules that have no command line of their
own) and ``python -m bench --only <key>`` run one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench.harness import machine
from bench.harness.cores import CoreSplit, available_cpus, pin_self
from bench.harness.mesh import SharedMesh
from bench.harness.procfs import load_average
from bench.harness.report import RESULTS, Report, ScenarioResult, now, scenario_markdown


@dataclass(frozen=True)
class Settings:
    mode: str = "full"  # "full", or "quick": a smoke run whose figures mean nothing
    repetitions: int = 3
    seconds: float = 5.0  # one measurement's load
    warmup: float = 2.0  # before the first measurement of each server
    connections: int = 64
    budget_minutes: float = 18.0  # scenarios not started by then are skipped

    @classmethod
    def quick(cls) -> Settings:
        return cls(mode="quick", repetitions=1, seconds=1.0, warmup=0.5, connections=16)

    @property
    def is_quick(self) -> bool:
        return self.mode == "quick"

    def pick(self, full: int, quick: int) -> int:
        return quick if self.is_quick else full


@dataclass
class Context:
    settings: Settings
    scratch: Path
    _mesh: SharedMesh | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def one_server_core(self) -> CoreSplit:
        return CoreSplit.plan(1)

    def mesh(self) -> SharedMesh:
        """The shared mesh, started on first use."""
        if self._mesh is None:
            mesh = SharedMesh(self.scratch)
            self._mesh = mesh
            mesh.start(self.one_server_core.load)
            print(f"  mesh ready in {mesh.ready_seconds:.1f} s", flush=True)
        return self._mesh

    def stop_mesh(self) -> None:
        if self._mesh is not None:
            self._mesh.stop()
            self._mesh = None

    def close(self) -> None:
        self.stop_mesh()


@dataclass(frozen=True)
class Scenario:
    number: int
    key: str
    title: str
    measure: Callable[[Context], ScenarioResult]
    uses_mesh: bool = False


def run_one(scenario: Scenario, context: Context) -> ScenarioResult:
    print(f"[{scenario.number}] {scenario.title}", flush=True)
    load_before = load_average()
    started = time.monotonic()
    cpus = available_cpus()
    try:
        result = scenario.measure(context)
    except Exception:  # the report says what failed; the other scenarios still run
        result = ScenarioResult(scenario.number, scenario.key, scenario.title)
        result.failed = traceback.format_exc()
        print(result.failed, file=sys.stderr, flush=True)
    finally:
        pin_self(cpus)  # a scenario may have pinned this process as its load generator
    result.seconds = time.monotonic() - started
    result.load_average = f"{load_before} → {load_average()}"
    print(f"    done in {result.seconds:.0f} s, errors {result.errors}", flush=True)
    return result


def run(scenarios: Sequence[Scenario], settings: Settings) -> Report:
    """Every scenario in turn (those on the shared mesh together), then the report."""
    started_at = now()
    info = machine.describe()
    ordered = sorted(scenarios, key=lambda s: (not s.uses_mesh, s.number))
    results = []
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as scratch:
        context = Context(settings, Path(scratch))
        try:
            for scenario in ordered:
                if not scenario.uses_mesh:
                    context.stop_mesh()
                spent = (time.monotonic() - context.started) / 60
                if spent > settings.budget_minutes:
                    skipped = ScenarioResult(scenario.number, scenario.key, scenario.title)
                    skipped.failed = (
                        f"skipped: the {settings.budget_minutes:.0f} min budget ran out"
                    )
                    results.append(skipped)
                    continue
                results.append(run_one(scenario, context))
        finally:
            context.close()
    report = Report(
        started=started_at,
        mode=settings.mode,
        settings=asdict(settings),
        machine=info,
        scenarios=sorted(results, key=lambda s: s.number),
        seconds=time.monotonic() - context.started,
    )
    return report


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny durations, one repetition"
    )
    parser.add_argument("--repetitions", type=int, help="per figure (default 3)")
    parser.add_argument("--seconds", type=float, help="of load per measurement (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 2)")
    parser.add_argument("--connections", type=int, help="HTTP connections (default 64)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.quick() if args.quick else Settings()
    changes: dict[str, float] = {}
    if args.repetitions:
        changes["repetitions"] = max(1, min(args.repetitions, 20))
    if args.seconds:
        changes["seconds"] = max(0.5, min(args.seconds, 60.0))
    if args.warmup is not None:
        changes["warmup"] = max(0.0, min(args.warmup, 30.0))
    if args.connections:
        changes["connections"] = max(1, min(args.connections, 1024))
    return replace(settings, **changes)  # type: ignore[arg-type]


def main(scenarios: Sequence[Scenario], argv: Sequence[str] | None = None) -> int:
    """`python -m bench`: all (or `--only` some), the report written under bench/results/."""
    p = parser("Runs the benchmark scenarios and writes bench/results/<date>-<sha>.md/.json.")
    p.add_argument(
        "--only", help="comma-separated scenario keys: " + ", ".join(s.key for s in scenarios)
    )
    p.add_argument("--output", type=Path, default=RESULTS, help="directory of the report")
    args = p.parse_args(argv)
    chosen = list(scenarios)
    if args.only:
        keys = {k.strip() for k in args.only.split(",")}
        unknown = keys - {s.key for s in scenarios}
        if unknown:
            p.error(f"unknown scenario {', '.join(sorted(unknown))}")
        chosen = [s for s in scenarios if s.key in keys]
    missing = [t for t in ("taskset",) if shutil.which(t) is None]
    if missing:
        print(f"note: {', '.join(missing)} missing: nothing is pinned", file=sys.stderr)
    report = run(chosen, settings_from(args))
    if args.only:
        report.only = tuple(s.key for s in chosen)
    markdown, data = report.write(args.output)
    print()
    print(report.summary())
    print(f"\nreport: {markdown}\n        {data}")
    failed = [s.key for s in report.scenarios if s.failed]
    return 1 if failed else 0


def main_one(scenario: Scenario, argv: Sequence[str] | None = None) -> int:
    """``python -m bench.<scenario>``: that scenario alone, its section printed."""
    p = parser(f"{scenario.number}. {scenario.title} (prints its section of the report)")
    args = p.parse_args(argv)
    report = run([scenario], settings_from(args))
    print()
    print(scenario_markdown(report.scenarios[0]))
    return 1 if report.scenarios[0].failed else 0
