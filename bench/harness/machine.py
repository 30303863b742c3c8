"""What a result was measured on: git sha, dependency versions, CPU model, cores, tools."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The pinned dependencies that decide the figures: the runtime ones and the embedded stores.
_EXTRAS = ("embedded",)
_TOOLS = {
    "wrk": ["wrk", "-v"],
    "hey": None,  # prints no version; dpkg knows it
    "nginx": ["nginx", "-v"],
    "taskset": ["taskset", "--version"],
}


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def git_sha() -> tuple[str, bool]:
    """The short sha of HEAD and whether the work tree differs from it."""
    sha = _run(["git", "rev-parse", "--short=12", "HEAD"]).splitlines()
    if not sha or not re.fullmatch(r"[0-9a-f]{7,40}", sha[0]):
        return "nogit", False
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"]))
    return sha[0], dirty


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pinned_dependencies() -> dict[str, str]:
    """Each dependency pyproject.toml pins (runtime and embedded), with the version
    installed here (what `pip freeze` would say for it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in _EXTRAS:
        wanted += project.get("optional-dependencies", {}).get(extra, [])
    versions = {}
    for requirement in wanted:
        name = re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def tool_versions() -> dict[str, str]:
    found = {}
    for tool, argv in _TOOLS.items():
        text = _run(argv or ["dpkg-query", "-W", "-f=${Version}", tool])
        found[tool] = text.splitlines()[0] if text and "not" not in text[:40] else "missing"
    return found


def describe() -> dict[str, Any]:
    sha, dirty = git_sha()
    return {
        "git_sha": sha,
        "work_tree_dirty": dirty,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dependencies": pinned_dependencies(),
        "tools": tool_versions(),
    }
