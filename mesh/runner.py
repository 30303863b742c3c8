"""Running one mesh process: settings, logging, tracing, uvloop, signals, exit codes.

Exit codes the supervisor relies on: 0 after a clean stop; 1 for a start-up failure worth
retrying (a database not reachable yet); 78 (EX_CONFIG) for a failure that a restart cannot
fix (a bad setting, a port already taken). Each failure is one line on stderr naming the
variable at fault, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import uvloop

from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.logs import configure_logging
from mesh.netbind import StartupError
from mesh.settings import Env, SettingsError
from mesh.telemetry import TracingOptions, setup_tracing
from mesh.topology import ProcessSpec

EX_CONFIG = 78
S = TypeVar("S")

ProcessMain = Callable[[CommonSettings, S, Lifecycle], Awaitable[None]]
log = logging.getLogger("mesh.runner")


def run_process(spec: ProcessSpec, load: Callable[[Env], S], main: ProcessMain[S]) -> NoReturn:
    env = Env()
    try:
        common = CommonSettings.from_env(env, spec)
        tracing = TracingOptions.from_env(env)
        settings = load(env)
    except SettingsError as exc:
        _fail(spec, str(exc), EX_CONFIG)
    configure_logging(spec.name, common.log_level)
    provider = setup_tracing(common, tracing)

    async def lifetime() -> None:
        lifecycle = Lifecycle()
        lifecycle.install_signal_handlers()
        await main(common, settings, lifecycle)

    try:
        uvloop.run(lifetime())
    except StartupError as exc:
        _fail(spec, str(exc), EX_CONFIG if exc.fatal else 1)
    except KeyboardInterrupt:
        pass
    finally:
        provider.shutdown()
    log.info("stopped")
    sys.exit(0)


def _fail(spec: ProcessSpec, message: str, code: int) -> NoReturn:
    print(f"{spec.name}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
