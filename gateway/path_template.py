"""Path templates of `google.api.http` rules, compiled for aiohttp's router and OpenAPI.

The grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

``*`` matches one segment, ``**`` one or more (last position only), ``{id}`` is
``{id=*}``. A ``:`` in the *last* segment always starts the custom verb, so a variable
never swallows it: ``/products/{id}:reserve`` binds ``id=p1`` for ``/products/p1:reserve``,
and ``/products/{id}`` does not match ``/products/p1:reserve`` at all (a client needing a
literal colon there has no way to send one; the mesh's ids never contain one).

Each variable becomes an aiohttp ``{name:regex}`` part (``{book__id:...}`` for
``{book.id}``), so aiohttp's router does the matching (and answers 405 with ``Allow``), and
the resource's canonical form (``/api/v1/products/{id}``) is a readable route label;
`PathTemplate.match` applies the same regex on its own, for tests and tools.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

_VERB: Final = re.compile(r"[A-Za-z0-9_.~-]+")
_FIELD_PATH: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SEGMENT: Final = r"[^/]+"
_LAST_SEGMENT: Final = r"[^/:]+"
_MULTI_SEGMENT: Final = rf"{_SEGMENT}(?:/{_SEGMENT})*"
_LAST_MULTI_SEGMENT: Final = rf"(?:{_SEGMENT}/)*{_LAST_SEGMENT}"
_FORBIDDEN_IN_LITERAL: Final = frozenset("{}*=")


class TemplateError(ValueError):
    """A path template that does not follow the google.api.http grammar."""


@dataclass(frozen=True, slots=True)
class TemplateVariable:
    field_path: str  # dotted proto field names, as written in the template
    group: str  # the regex group / aiohttp match_info name: the path with "__" for "."
    pattern: str  # the regex its value matches


@dataclass(frozen=True, slots=True)
class PathTemplate:
    template: str
    variables: tuple[TemplateVariable, ...]
    verb: str | None
    aiohttp_path: str
    openapi_path: str
    regex: re.Pattern[str] = field(compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        """The variables' values (by field path) if `path` matches, else None."""
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return self.bindings({k: unquote(v) for k, v in found.groupdict().items()})

    def bindings(self, match_info: Mapping[str, str]) -> dict[str, str]:
        """Variable values by field path, from aiohttp's match_info (already unquoted)."""
        return {v.field_path: match_info[v.group] for v in self.variables}


@dataclass(frozen=True, slots=True)
class _Segment:
    kind: str  # "literal", "*", "**" or "var"
    literal: str = ""
    field_path: str = ""
    inner: tuple[_Segment, ...] = ()


@dataclass(slots=True)
class _Parser:
    text: str
    pos: int = 0

    def error(self, message: str) -> TemplateError:
        return TemplateError(f"{message} at position {self.pos} in path template {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def segments(self, end: str) -> tuple[_Segment, ...]:
        """Segments up to `end` ("" for the end of the path, "}" inside a variable)."""
        result = [self.segment(nested=end == "}")]
        while self.peek() == "/":
            self.pos += 1
            result.append(self.segment(nested=end == "}"))
        if self.peek() != end:
            if not self.peek():
                raise self.error("unclosed variable")
            raise self.error(f"unexpected {self.peek()!r}")
        for segment in result[:-1]:
            if segment.kind == "**":
                raise self.error("'**' must be the last segment")
        return tuple(result)

    def segment(self, nested: bool) -> _Segment:
        if self.text.startswith("**", self.pos):
            self.pos += 2
            return _Segment("**")
        if self.peek() == "*":
            self.pos += 1
            return _Segment("*")
        if self.peek() == "{":
            if nested:
                raise self.error("nested variable")
            return self.variable()
        start = self.pos
        while self.peek() not in ("", "/", "}"):
            if self.peek() in _FORBIDDEN_IN_LITERAL:
                raise self.error(f"unexpected {self.peek()!r}")
            self.pos += 1
        if self.pos == start:
            raise self.error("empty segment")
        return _Segment("literal", literal=self.text[start : self.pos])

    def variable(self) -> _Segment:
        self.pos += 1  # "{"
        match = _FIELD_PATH.match(self.text, self.pos)
        if match is None:
            raise self.error("expected a field path")
        self.pos = match.end()
        if self.peek() == "=":
            self.pos += 1
            inner = self.segments(end="}")
        else:
            inner = (_Segment("*"),)
        if self.peek() != "}":
            raise self.error("unclosed variable")
        self.pos += 1
        return _Segment("var", field_path=match.group(), inner=inner)


def _regex(segments: tuple[_Segment, ...], ends_path: bool) -> str:
    """The regex of wildcard/literal `segments`; `ends_path` when nothing follows them."""
    parts = []
    for i, segment in enumerate(segments):
        last = ends_path and i == len(segments) - 1
        if segment.kind == "literal":
            parts.append(re.escape(segment.literal))
        elif segment.kind == "*":
            parts.append(_LAST_SEGMENT if last else _SEGMENT)
        else:  # "**": one or more segments
            parts.append(
                rf"(?:{_SEGMENT}/)*{_LAST_SEGMENT}" if last else rf"{_SEGMENT}(?:/{_SEGMENT})*"
            )
    return "/".join(parts)


def parse_template(template: str) -> PathTemplate:
    """Compile a google.api.http path template (raises `TemplateError` when malformed)."""
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    tail_start = max(template.rfind("/"), template.rfind("}"))
    colon = template.find(":", tail_start + 1)
    path, verb = (template[:colon], template[colon + 1 :]) if colon != -1 else (template, None)
    if verb is not None and not _VERB.fullmatch(verb):
        raise TemplateError(f"bad custom verb {verb!r} in path template {template!r}")
    segments = _Parser(path, pos=1).segments(end="")
    regex_parts: list[str] = []
    aiohttp_parts: list[str] = []
    openapi_parts: list[str] = []
    variables: list[TemplateVariable] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment.kind == "literal":
            regex_parts.append(re.escape(segment.literal))
            aiohttp_parts.append(segment.literal)
            openapi_parts.append(segment.literal)
            continue
        if segment.kind == "var":
            if any(v.field_path == segment.field_path for v in variables):
                raise TemplateError(f"{segment.field_path!r} bound twice in {template!r}")
            group = segment.field_path.replace(".", "__")  # a valid regex group name
            var = TemplateVariable(segment.field_path, group, _regex(segment.inner, last))
            variables.append(var)
            name, pattern, openapi_name = var.group, var.pattern, var.field_path
        else:  # an anonymous wildcard: matched, bound to nothing
            name = f"_w{i}"
            pattern = _regex((segment,), last)
            openapi_name = name
        regex_parts.append(f"(?P<{name}>{pattern})")
        aiohttp_parts.append(f"{{{name}:{pattern}}}")
        openapi_parts.append(f"{{{openapi_name}}}")
    suffix = f":{verb}" if verb is not None else ""
    return PathTemplate(
        template=template,
        variables=tuple(variables),
        verb=verb,
        aiohttp_path="/" + "/".join(aiohttp_parts) + suffix,
        openapi_path="/" + "/".join(openapi_parts) + suffix,
        regex=re.compile("/" + "/".join(regex_parts) + re.escape(suffix)),
    )
