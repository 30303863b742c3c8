"""Typed, fail-fast reading of the environment.

Every process builds one frozen settings object at start from an `Env`. A bad value raises
`SettingsError` whose message names the variable and what was expected; the process prints
that one line and exits (see `mesh.runner`). Secret values are wrapped in `Secret` so they
never show up in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

# The builtins under other names: inside `Env` the method names shadow them.
_Str: TypeAlias = str
_Int: TypeAlias = int
_Float: TypeAlias = float
_Bool: TypeAlias = bool

_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """An environment variable holds a value the process cannot start with."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be printed."""

    value: str

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


class Env:
    """Reads variables from a mapping (the process environment by default), with checks."""

    def __init__(self, environ: Mapping[_Str, _Str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: _Str) -> _Str | None:
        value = self._environ.get(name)
        return None if value is None else value.strip()

    def str(self, name: _Str, default: _Str) -> _Str:
        value = self.raw(name)
        return default if value is None or value == "" else value

    def optional_str(self, name: _Str) -> _Str | None:
        value = self.raw(name)
        return value or None

    def int(
        self, name: _Str, default: _Int, *, minimum: _Int | None = None, maximum: _Int | None = None
    ) -> _Int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"expected a whole number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise SettingsError(name, f"must be at most {maximum}, got {number}")
        return number

    def port(self, name: _Str, default: _Int) -> _Int:
        value = self.raw(name)
        if value is not None and value != "" and not value.isdigit():
            raise SettingsError(name, f"expected a port number (1-65535), got {value!r}")
        return self.int(name, default, minimum=1, maximum=65535)

    def float(
        self,
        name: _Str,
        default: _Float,
        *,
        minimum: _Float | None = None,
        maximum: _Float | None = None,
    ) -> _Float:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise SettingsError(name, f"must be at most {maximum}, got {number}")
        return number

    def bool(self, name: _Str, default: _Bool) -> _Bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(name, f"expected true or false, got {value!r}")

    def choice(self, name: _Str, default: _Str, choices: tuple[_Str, ...]) -> _Str:
        value = self.str(name, default)
        if value not in choices:
            raise SettingsError(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def url(self, name: _Str, default: _Str | None, schemes: tuple[_Str, ...]) -> _Str | None:
        """A URL with one of `schemes` and a host; empty or unset gives `default`."""
        value = self.raw(name)
        if value is None or value == "":
            return default
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise SettingsError(
                name,
                f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
                f", got {redact_url(value)!r}",
            )
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise SettingsError(name, f"bad port in {redact_url(value)!r}") from None
        if not parts.hostname:
            raise SettingsError(name, f"no host in {redact_url(value)!r}")
        return value

    def addresses(self, name: _Str, default: _Str) -> tuple[_Str, ...]:
        """A comma-separated list of host:port addresses (several replicas of one upstream)."""
        items = tuple(a.strip() for a in self.str(name, default).split(",") if a.strip())
        for item in items:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(name, f"expected host:port[,host:port...], got {item!r}")
        if not items:
            raise SettingsError(name, "expected at least one host:port")
        return items

    def secret(self, name: _Str) -> Secret | None:
        value = self.raw(name)
        return Secret(value) if value else None


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server (path replaced)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))
