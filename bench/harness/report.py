"""Results, and the report they make: `bench/results/<date>-<git sha>.md` and `.json`.

A scenario returns a `ScenarioResult`: tables of rows (one per configuration; each figure
the median of the repetitions with min..max), headlines (ratios to a baseline measured in
the same run, each with its target when the issue sets one) and the count of error
responses it did not mean to produce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.harness.stats import Figure, column

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Row:
    name: str
    figures: dict[str, Figure]
    cpu: dict[str, Figure] = field(default_factory=dict)  # CPU s per 1,000 units, by process
    note: str = ""

    @classmethod
    def of(
        cls,
        name: str,
        samples: Sequence[dict[str, float]],
        note: str = "",
        cpu_prefix: str = "cpu ",
    ) -> Row:
        """A row from one dict per repetition; keys starting with `cpu_prefix` are CPU."""
        keys = list(dict.fromkeys(k for s in samples for k in s))
        figures = {k: Figure.of(column(samples, k)) for k in keys if not k.startswith(cpu_prefix)}
        cpu = {
            k.removeprefix(cpu_prefix): Figure.of(column(samples, k))
            for k in keys
            if k.startswith(cpu_prefix)
        }
        return cls(name, figures, cpu, note)


@dataclass
class Table:
    title: str
    rows: list[Row]
    cpu_unit: str = "CPU s per 1,000 requests"


@dataclass
class Headline:
    name: str
    figure: Figure
    unit: str = ""
    target: str = ""  # as the issue states it, e.g. "≥ 0.35"
    met: bool | None = None  # None: no target for it


def at_least(bound: float) -> Callable[[Figure], bool | None]:
    return lambda f: None if math.isnan(f.median) else f.median >= bound


def at_most(bound: float) -> Callable[[Figure], bool | None]:
    return lambda f: None if math.isnan(f.median) else f.median <= bound


def headline(
    name: str,
    figure: Figure,
    unit: str = "",
    target: str = "",
    check: Callable[[Figure], bool | None] | None = None,
) -> Headline:
    return Headline(name, figure, unit, target, check(figure) if check else None)


@dataclass
class ScenarioResult:
    number: int
    key: str
    title: str
    setup: str = ""  # what ran, with which load
    cores: str = ""  # how the cores were split
    tables: list[Table] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    errors: int = 0  # error responses the scenario did not mean to produce
    errors_expected: str = ""  # the refusals it means to produce, if any
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load_average: str = ""  # before → after, the machine's noise
    failed: str = ""  # the exception, when the scenario could not finish


@dataclass
class Report:
    started: datetime
    mode: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    scenarios: list[ScenarioResult]
    seconds: float = 0.0
    only: tuple[str, ...] = ()  # `--only` keys: a partial report, named apart from a full one

    # --- targets ------------------------------------------------------------------------

    def targets(self) -> list[tuple[str, str, str, bool | None]]:
        """(scenario, what, measured, met) for every headline with a target, and the
        no-error rule."""
        rows = []
        for s in self.scenarios:
            for h in s.headlines:
                if h.target:
                    rows.append((s.title, f"{h.name} {h.target}", _figure(h.figure, h.unit), h.met))
        errors = sum(s.errors for s in self.scenarios)
        ran = [s for s in self.scenarios if not s.failed]
        rows.append(
            (
                "all",
                "no error responses where none are meant",
                ", ".join(f"{s.key}: {s.errors}" for s in ran if s.errors) or "0",
                errors == 0 if ran else None,
            )
        )
        return rows

    # --- writing ------------------------------------------------------------------------

    def stem(self) -> str:
        suffix = "" if self.mode == "full" else f"-{self.mode}"
        if self.only:
            suffix += "-only-" + "-".join(self.only)
        return f"{self.started:%Y-%m-%d}-{self.machine['git_sha']}{suffix}"

    def write(self, directory: Path = RESULTS) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        markdown = directory / f"{self.stem()}.md"
        data = directory / f"{self.stem()}.json"
        markdown.write_text(self.markdown())
        data.write_bytes(
            orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
        return markdown, data

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "mode": self.mode,
            "settings": self.settings,
            "machine": self.machine,
            "seconds": round(self.seconds, 1),
            "targets": [
                {"scenario": s, "target": t, "measured": m, "met": met}
                for s, t, m, met in self.targets()
            ],
            "scenarios": [_scenario_json(s) for s in self.scenarios],
        }

    def summary(self) -> str:
        """The summary table: every headline, then the targets."""
        lines = [
            "| scenario | headline | median | min..max | target | met |",
            "|---|---|---|---|---|---|",
        ]
        for s in self.scenarios:
            if s.failed:
                lines.append(f"| {s.number}. {s.title} | failed: {_one_line(s.failed)} | | | | |")
            for h in s.headlines:
                lines.append(
                    f"| {s.number}. {s.title} | {h.name} | {_number(h.figure.median)}{h.unit} | "
                    f"{_range(h.figure)} | {h.target} | {_met(h.met)} |"
                )
        errors = sum(s.errors for s in self.scenarios)
        lines.append(f"| all | error responses not meant | {errors} | | 0 | {_met(errors == 0)} |")
        met = [t[3] for t in self.targets()]
        lines.append("")
        lines.append(
            f"Targets met: {met.count(True)} of {len(met)}"
            + (f" ({met.count(None)} not measured)" if None in met else "")
        )
        return "\n".join(lines)

    def markdown(self) -> str:
        m = self.machine
        out = [
            f"# Benchmarks {self.started:%Y-%m-%d %H:%M} UTC, {m['git_sha']}"
            + (" (work tree differs from it)" if m["work_tree_dirty"] else ""),
            "",
        ]
        if self.mode != "full":
            out += [
                f"**{self.mode} run: tiny durations and repetitions to prove the harness "
                "works; the figures mean nothing.**",
                "",
            ]
        out += [
            f"{m['cpu_model']}, **{m['cores']} cores** ({m['cores_usable']} usable), "
            f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}; "
            f"{self.settings['repetitions']} repetition(s) per figure (median, min..max), "
            f"{self.settings['seconds']} s per measurement after "
            f"{self.settings['warmup']} s of warm-up; the whole run took "
            f"{self.seconds / 60:.1f} min.",
            "",
            "## Summary",
            "",
            self.summary(),
            "",
        ]
        for s in sorted(self.scenarios, key=lambda s: s.number):
            out += scenario_lines(s)
        out += [
            "## Machine",
            "",
            "| tool | version |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in m["tools"].items()),
            "",
            "| dependency | installed |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in m["dependencies"].items()),
            "",
        ]
        return "\n".join(out)


# --- rendering helpers ------------------------------------------------------------------


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if value == int(value) and magnitude < 1e9:  # counts: errors, connections...
        return f"{int(value):,}"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _range(figure: Figure) -> str:
    if len(figure.values) < 2:
        return ""
    return f"{_number(figure.min)}..{_number(figure.max)}"


def _figure(figure: Figure, unit: str = "") -> str:
    spread = _range(figure)
    return f"{_number(figure.median)}{unit}" + (f" ({spread})" if spread else "")


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]


def _one_line(text: str) -> str:
    return text.strip().splitlines()[-1].replace("|", "/")[:160] if text.strip() else ""


def _table_markdown(table: Table) -> list[str]:
    columns = list(dict.fromkeys(k for r in table.rows for k in r.figures))
    has_cpu = any(r.cpu for r in table.rows)
    has_note = any(r.note for r in table.rows)
    header = (
        ["", *columns] + ([table.cpu_unit] if has_cpu else []) + (["cores"] if has_note else [])
    )
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for row in table.rows:
        cells = [row.name] + [_figure(row.figures[c]) if c in row.figures else "" for c in columns]
        if has_cpu:
            cells.append(" · ".join(f"{name} {_number(f.median)}" for name, f in row.cpu.items()))
        if has_note:
            cells.append(row.note)
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def scenario_lines(s: ScenarioResult) -> list[str]:
    out = [f"## {s.number}. {s.title}", ""]
    if s.setup:
        out += [s.setup, ""]
    if s.cores:
        out += [f"Cores: {s.cores}.", ""]
    if s.failed:
        out += ["Failed:", "", "```", s.failed.strip()[-3000:], "```", ""]
    for h in s.headlines:
        target = f" (target {h.target}: {_met(h.met)})" if h.target else ""
        out.append(f"- **{h.name}: {_figure(h.figure, h.unit)}**{target}")
    if s.headlines:
        out.append("")
    for table in s.tables:
        out += _table_markdown(table)
    errors = f"Error responses not meant: {s.errors}."
    if s.errors_expected:
        errors += f" Meant: {s.errors_expected}."
    out += [errors, ""]
    out += [f"- {note}" for note in s.notes]
    out += [
        f"{'' if not s.notes else chr(10)}Took {s.seconds:.0f} s; load average {s.load_average}.",
        "",
    ]
    return out


def scenario_markdown(s: ScenarioResult) -> str:
    return "\n".join(scenario_lines(s))


def _scenario_json(s: ScenarioResult) -> dict[str, Any]:
    return {
        "number": s.number,
        "key": s.key,
        "title": s.title,
        "setup": s.setup,
        "cores": s.cores,
        "headlines": [
            {
                "name": h.name,
                "unit": h.unit,
                "target": h.target,
                "met": h.met,
                **h.figure.to_json(),
            }
            for h in s.headlines
        ],
        "tables": [
            {
                "title": t.title,
                "cpu_unit": t.cpu_unit,
                "rows": [
                    {
                        "name": r.name,
                        "note": r.note,
                        "figures": {k: f.to_json() for k, f in r.figures.items()},
                        "cpu": {k: f.to_json() for k, f in r.cpu.items()},
                    }
                    for r in t.rows
                ],
            }
            for t in s.tables
        ],
        "errors": s.errors,
        "errors_expected": s.errors_expected,
        "notes": s.notes,
        "seconds": round(s.seconds, 1),
        "load_average": s.load_average,
        "failed": s.failed,
    }


def now() -> datetime:
    return datetime.now(UTC)
