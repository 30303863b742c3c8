"""What the operator files ask of the processes: metric names in PromQL, rules, dashboards.

`metric_names(expr)` reads the metric names out of a PromQL expression without a PromQL
parser: string literals, label matchers, range selectors, grouping clauses and Grafana
variables are removed first; what remains that is not a function, a keyword or a number is
a metric (or recording rule) name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parents[2]
PROMETHEUS: Final = ROOT / "deployments" / "prometheus"
GRAFANA: Final = ROOT / "deployments" / "grafana"
RULES: Final = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARDS: Final = sorted((GRAFANA / "dashboards").glob("*.json"))

_KEYWORDS: Final = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan"}
)
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS: Final = re.compile(r"\{[^{}]*\}")
_RANGE: Final = re.compile(r"\[[^\[\]]*\]")
_GROUPING: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE: Final = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES: Final = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    text = _VARIABLE.sub("", _STRING.sub('""', expr))
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue  # the exponent of a number (1e3)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if token.lower() in _KEYWORDS:
            continue
        names.add(token)
    return names


def rule_groups() -> Iterator[dict[str, Any]]:
    for path in RULES:
        yield from yaml.safe_load(path.read_text())["groups"]


def recording_rules() -> dict[str, str]:
    return {r["record"]: r["expr"] for g in rule_groups() for r in g["rules"] if "record" in r}


def alerting_rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # inside a collapsed row


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            definition = variable.get("definition", "")
            match = _LABEL_VALUES.match(definition)
            yield f"variable {variable['name']!r}", match.group(1) if match else definition


def required_metrics() -> dict[str, set[str]]:
    """Every metric name the dashboards and the rules read, with where it is read;
    recording rules are replaced by the metrics their expressions read."""
    recorded = recording_rules()
    wanted: dict[str, set[str]] = {}

    def need(expr: str, where: str) -> None:
        for name in metric_names(expr):
            if name in recorded:
                need(recorded[name], f"{where} via {name}")
            else:
                wanted.setdefault(name, set()).add(where)

    for name, dashboard in dashboards().items():
        for where, expr in dashboard_queries(dashboard):
            need(expr, f"{name} {where}")
    for alert, rule in alerting_rules().items():
        need(rule["expr"], f"alert {alert}")
    for record, expr in recorded.items():
        need(expr, f"recording rule {record}")
    return wanted


_SUFFIXES: Final = {
    "counter": ("",),
    "gauge": ("",),
    "untyped": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("",),
}


def exported_names(exposition: str) -> set[str]:
    """The series names a text exposition (format 0.0.4) offers, whether or not a labelled
    metric has samples yet (its TYPE line is enough)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.update(name + suffix for suffix in _SUFFIXES.get(kind.strip(), ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names
