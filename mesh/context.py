"""Per-request context shared by logging, errors and outgoing calls."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("mesh_request_id", default=None)
