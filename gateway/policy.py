"""Route policies: each route's group, deadline, body limit and rate limit, from a TOML file.

The file (`gateway/policies.toml` by default, `MESH_GATEWAY_POLICIES` for another) lists
route groups; a route belongs to the first group with a glob matching its method's full
name (`users.v1.UsersService.Login`), the chat REST proxy to the one matching `chat.http`.
`PolicyTable.for_route` resolves that once per route at start-up, so a request pays a dict
lookup. A malformed file fails start-up with a `SettingsError` naming the variable.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from mesh.settings import SettingsError

POLICIES_VAR: Final = "MESH_GATEWAY_POLICIES"
DEFAULT_POLICY_FILE: Final = Path(__file__).with_name("policies.toml")
CHAT_HTTP: Final = "chat.http"
"""The name the chat REST proxy (`/api/v1/chat/...`) is matched by."""

KeyKind = Literal["user", "address"]
CostKind = Literal["requests", "events"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` units per `window_seconds` per consumer, `burst` of them at once."""

    name: str  # the group's name: the policy's name in `RateLimit-Policy`
    limit: int
    window_seconds: float
    burst: int
    key: KeyKind = "user"
    cost: CostKind = "requests"

    @property
    def interval_seconds(self) -> float:
        """The emission interval: one unit is earned back every `interval_seconds`."""
        return self.window_seconds / self.limit


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    group: str
    timeout_seconds: float
    body_limit_bytes: int
    rate_limit: RateLimit | None


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    patterns: tuple[str, ...]
    timeout_seconds: float | None  # None: the gateway's default
    body_limit_bytes: int | None
    rate_limit: RateLimit | None


class PolicyTable:
    """The groups of a policy file, in order; `for_name` picks the first that matches."""

    def __init__(self, groups: Sequence[_Group] = ()) -> None:
        self._groups = tuple(groups)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PolicyTable) and self._groups == other._groups

    def __hash__(self) -> int:
        return hash(self._groups)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self._groups)

    def for_name(self, name: str, default: RoutePolicy) -> RoutePolicy:
        """The policy of the route whose method full name (or `chat.http`) is `name`;
        `default` gives what its group leaves out (and everything when no group matches)."""
        for group in self._groups:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in group.patterns):
                return RoutePolicy(
                    group=group.name,
                    timeout_seconds=group.timeout_seconds or default.timeout_seconds,
                    body_limit_bytes=group.body_limit_bytes or default.body_limit_bytes,
                    rate_limit=group.rate_limit,
                )
        return default

    @classmethod
    def load(cls, path: Path, variable: str = POLICIES_VAR) -> PolicyTable:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SettingsError(variable, f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(variable, f"{path} is not valid TOML: {exc}") from None
        try:
            return cls.parse(document)
        except (KeyError, TypeError, ValueError) as exc:
            raise SettingsError(variable, f"{path}: {exc}") from None

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> PolicyTable:
        _only(document, {"group"}, "the file")
        groups = []
        names: set[str] = set()
        for index, raw in enumerate(document.get("group", [])):
            where = f"group #{index + 1}"
            _only(raw, {"name", "routes", "timeout_seconds", "body_limit_bytes", "rate"}, where)
            name = raw.get("name")
            # ASCII: the name is sent in the RateLimit header fields
            if not isinstance(name, str) or not name.isascii() or not name.isidentifier():
                raise ValueError(f"{where}: name must be an ASCII word, got {name!r}")
            if name in names:
                raise ValueError(f"{where}: group {name!r} is defined twice")
            names.add(name)
            patterns = raw.get("routes")
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"group {name!r}: routes must be a list of globs")
            timeout = raw.get("timeout_seconds")
            body_limit = raw.get("body_limit_bytes")
            groups.append(
                _Group(
                    name=name,
                    patterns=tuple(patterns),
                    timeout_seconds=None
                    if timeout is None
                    else _positive_float(timeout, f"{name}.timeout_seconds"),
                    body_limit_bytes=None
                    if body_limit is None
                    else _positive_int(body_limit, f"{name}.body_limit_bytes"),
                    rate_limit=_rate(name, raw["rate"]) if "rate" in raw else None,
                )
            )
        return cls(groups)


def _rate(group: str, raw: Any) -> RateLimit:
    where = f"{group}.rate"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table")
    _only(raw, {"limit", "window_seconds", "burst", "key", "cost"}, where)
    limit = _positive_int(raw.get("limit"), f"{where}.limit")
    key = raw.get("key", "user")
    if key not in ("user", "address"):
        raise ValueError(f"{where}.key must be 'user' or 'address', got {key!r}")
    cost = raw.get("cost", "requests")
    if cost not in ("requests", "events"):
        raise ValueError(f"{where}.cost must be 'requests' or 'events', got {cost!r}")
    return RateLimit(
        name=group,
        limit=limit,
        window_seconds=_positive_float(raw.get("window_seconds"), f"{where}.window_seconds"),
        burst=_positive_int(raw.get("burst", limit), f"{where}.burst"),
        key=key,
        cost=cost,
    )


def _only(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a whole number >= 1, got {value!r}")
    return value


def _positive_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{where} must be a number > 0, got {value!r}")
    return float(value)
