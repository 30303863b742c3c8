"""What the browser tests need on the machine, installed when missing.

- Debian's ``chromium`` (``/usr/bin/chromium``, or ``MESH_CHROMIUM``): ``apt-get install
  chromium`` as root, waiting for the dpkg lock when another install holds it. Test tools'
  own browser downloads (``npx playwright install``) cannot work here: the machine reaches
  the package registries only.
- The npm packages of ``web/package.json`` (``playwright-core`` to drive the browser, and
  ``swagger-ui-dist``, the API docs renderer the gateway serves): ``npm ci --prefix web``,
  as ``make`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
WEB: Final = ROOT / "web"
CHROMIUM: Final = Path(os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium"))
NPM_MARKERS: Final = (
    WEB / "node_modules" / "playwright-core" / "package.json",
    WEB / "node_modules" / "swagger-ui-dist" / "swagger-ui-bundle.js",
)
LOCK_WAIT_SECONDS: Final = 600.0
_LOCKED: Final = ("Could not get lock", "Unable to acquire the dpkg frontend lock", "is locked")


def _apt_get(*args: str) -> None:
    """``apt-get`` with `args`, retried while another process holds apt's or dpkg's lock."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    while True:
        result = subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=60", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=LOCK_WAIT_SECONDS,
            check=False,
        )
        if result.returncode == 0:
            return
        output = result.stdout + result.stderr
        if any(sign in output for sign in _LOCKED) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        pytest.fail(f"apt-get {' '.join(args)} failed ({result.returncode}):\n{output[-3000:]}")


def ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            f"{CHROMIUM} is missing and this test cannot install it (it needs root and "
            "apt-get): run `apt-get install chromium`, or set MESH_CHROMIUM"
        )
    _apt_get("update", "-qq")
    _apt_get("install", "-y", "-qq", "chromium")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def ensure_npm_packages() -> None:
    if all(marker.exists() for marker in NPM_MARKERS):
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install Node.js 20+ and npm, then run `make`")
    result = subprocess.run(
        [npm, "ci", "--prefix", str(WEB), "--ignore-scripts", "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci --prefix web failed:\n{(result.stdout + result.stderr)[-3000:]}")


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is missing: install Node.js 20+")
    return found
