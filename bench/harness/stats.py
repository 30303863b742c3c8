"""Percentiles, and repetitions summed up: the median is the figure, min..max beside it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` 0..1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Figure:
    """One quantity measured once per repetition."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Figure:
        return cls(tuple(v for v in values if not math.isnan(v)))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "median": _finite(self.median),
            "min": _finite(self.min),
            "max": _finite(self.max),
            "values": [_finite(v) for v in self.values],
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def paired(
    numerators: Sequence[float], denominators: Sequence[float], *, difference: bool = False
) -> Figure:
    """Per repetition a ÷ b (or a - b): both sides measured in the same round, so the noise
    of that round cancels; the median of the rounds is the figure."""
    out = []
    for a, b in zip(numerators, denominators, strict=False):
        if difference:
            out.append(a - b)
        elif b:
            out.append(a / b)
    return Figure.of(out)


def column(samples: Sequence[dict[str, float]], key: str) -> list[float]:
    return [s[key] for s in samples if key in s]


class LoadFigures(Protocol):
    @property
    def requests(self) -> int: ...
    @property
    def requests_per_second(self) -> float: ...
    @property
    def p50_ms(self) -> float: ...
    @property
    def p99_ms(self) -> float: ...
    @property
    def errors(self) -> int: ...
    @property
    def generator_cpu_seconds(self) -> float: ...


def load_sample(load: LoadFigures, cpu: Mapping[str, float], generator: str) -> dict[str, float]:
    """One repetition of a load run: req/s, p50/p99 ms, errors, and CPU seconds per 1,000
    requests of each process group (``cpu <group>``), the load generator's included."""
    per_thousand = 1000 / max(load.requests, 1)
    sample = {
        "req/s": load.requests_per_second,
        "p50 ms": load.p50_ms,
        "p99 ms": load.p99_ms,
        "errors": float(load.errors),
    }
    for name, seconds in cpu.items():
        sample[f"cpu {name}"] = seconds * per_thousand
    sample[f"cpu {generator}"] = load.generator_cpu_seconds * per_thousand
    return sample
