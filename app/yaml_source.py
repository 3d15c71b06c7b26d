"""Strict, line-aware YAML reading for plans and policies.

Why our own composer: PyYAML's ``safe_load`` throws away positions, silently keeps the last of
duplicate keys, expands aliases (alias bombs) and accepts several documents. Plans are reviewed
artefacts, so we read YAML the strict way and remember where every key and value came from, so
that every later error can point at ``file:line:col``.

This module builds plain Python values (dict, list, str, int, float, bool, None) directly from
the parser's event stream (libyaml's C parser when present, PyYAML's pure parser otherwise) and
a ``SourceMap`` from paths (``("steps", 3, "with", "url")``) to positions. It never executes
tags, never resolves aliases and never reads more than ``MAX_BYTES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import events as ev
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from app.errors import Issue

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_SAFE_INT",
    "Path",
    "SourceMap",
    "YamlDocument",
    "read_yaml",
]

#: plans and policies are small, reviewed files; anything bigger is a mistake or an attack
MAX_BYTES = 1024 * 1024
#: nesting deeper than this is never a real plan and would only exhaust the stack
MAX_DEPTH = 64
#: integers must survive JSON (RFC 8785 canonical JSON, JavaScript consumers) exactly
MAX_SAFE_INT = 2**53 - 1

Path = tuple[str | int, ...]

_PARSER: type = getattr(yaml, "CBaseLoader", yaml.BaseLoader)  # libyaml when available
_TAG = "tag:yaml.org,2002:"
_ALLOWED_EXPLICIT_TAGS = {
    f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
}
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()


@dataclass(slots=True)
class SourceMap:
    """Where each value (and each mapping key) of a document starts, 1-based."""

    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path``; falls back to the closest ancestor that has one."""
        probe = tuple(path)
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if probe in self.keys:
                return self.keys[probe]
            if not probe:
                return (None, None)
            probe = probe[:-1]


@dataclass(slots=True)
class YamlDocument:
    """The value of a YAML file plus where everything in it came from."""

    path: str
    data: Any
    source: SourceMap


class _Stop(Exception):
    """Internal: abort reading on the first structural problem (after recording it)."""


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.parser = _PARSER(text)
        self.source = SourceMap()
        self.issues: list[Issue] = []

    # -- helpers -----------------------------------------------------------------------------
    def _fail(self, code: str, message: str, mark: Any, hint: str | None = None) -> _Stop:
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        self.issues.append(
            Issue(path=self.path, line=line, col=col, code=code, message=message, hint=hint)
        )
        return _Stop()

    def _pos(self, mark: Any) -> tuple[int, int]:
        return (mark.line + 1, mark.column + 1)

    # -- document ----------------------------------------------------------------------------
    def read(self) -> Any:
        p = self.parser
        p.get_event()  # StreamStart
        if p.check_event(ev.StreamEndEvent):
            raise self._fail("file.empty", "file is empty: expected a YAML mapping", None)
        p.get_event()  # DocumentStart
        value = self._node((), 0)
        p.get_event()  # DocumentEnd
        if not p.check_event(ev.StreamEndEvent):
            mark = p.peek_event().start_mark
            raise self._fail(
                "yaml.multiple_documents",
                "more than one YAML document: a plan file holds exactly one",
                mark,
                hint="remove the extra `---` document or move it to its own file",
            )
        return value

    def _node(self, path: Path, depth: int) -> Any:
        p = self.parser
        event = p.get_event()
        if depth > MAX_DEPTH:
            raise self._fail(
                "yaml.too_deep", f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
            )
        if isinstance(event, ev.AliasEvent):
            raise self._fail(
                "yaml.alias",
                f"YAML alias '*{event.anchor}' is not allowed",
                event.start_mark,
                hint="write the value out in full; anchors and aliases are rejected",
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise self._fail(
                "yaml.anchor",
                f"YAML anchor '&{anchor}' is not allowed",
                event.start_mark,
                hint="write the value out in full; anchors and aliases are rejected",
            )
        self.source.values[path] = self._pos(event.start_mark)
        tag = event.tag
        if isinstance(event, ev.ScalarEvent):
            return self._scalar(event)
        if tag not in (None, "!") and tag not in _ALLOWED_EXPLICIT_TAGS:
            raise self._fail("yaml.tag", f"YAML tag '{tag}' is not allowed", event.start_mark)
        if isinstance(event, ev.SequenceStartEvent):
            items: list[Any] = []
            index = 0
            while not p.check_event(ev.SequenceEndEvent):
                items.append(self._node((*path, index), depth + 1))
                index += 1
            p.get_event()
            return items
        if isinstance(event, ev.MappingStartEvent):
            return self._mapping(path, depth)
        raise self._fail("yaml.syntax", "unexpected YAML structure", event.start_mark)

    def _mapping(self, path: Path, depth: int) -> dict[str, Any]:
        p = self.parser
        result: dict[str, Any] = {}
        while not p.check_event(ev.MappingEndEvent):
            key_event = p.peek_event()
            if not isinstance(key_event, ev.ScalarEvent):
                p.get_event()
                raise self._fail(
                    "yaml.key", "mapping keys must be plain strings", key_event.start_mark
                )
            key_value = self._scalar(p.get_event(), is_key=True)
            if not isinstance(key_value, str):
                raise self._fail(
                    "yaml.key",
                    f"mapping key {key_value!r} is not a string",
                    key_event.start_mark,
                    hint="quote the key",
                )
            if key_value in result:
                first = self.source.keys.get((*path, key_value))
                where = f" (first defined on line {first[0]})" if first else ""
                raise self._fail(
                    "yaml.duplicate_key",
                    f"duplicate key '{key_value}'{where}",
                    key_event.start_mark,
                    hint="each key may appear once in a mapping",
                )
            child = (*path, key_value)
            self.source.keys[child] = self._pos(key_event.start_mark)
            result[key_value] = self._node(child, depth + 1)
        p.get_event()
        return result

    def _scalar(self, event: ev.ScalarEvent, *, is_key: bool = False) -> Any:
        if event.anchor is not None:
            raise self._fail(
                "yaml.anchor", f"YAML anchor '&{event.anchor}' is not allowed", event.start_mark
            )
        value = event.value
        tag = event.tag
        if tag in (None, "!"):
            if tag == "!" or not event.implicit[0]:
                return value  # quoted or non-specific tag: always a string
            tag = _RESOLVER.resolve(ScalarNode, value, event.implicit)
        elif tag not in _ALLOWED_EXPLICIT_TAGS:
            raise self._fail("yaml.tag", f"YAML tag '{tag}' is not allowed", event.start_mark)
        kind = tag.removeprefix(_TAG)
        if kind == "str" or kind == "timestamp":
            # dates stay text: plans never need YAML's implicit datetime conversion
            return value
        if kind == "merge":
            raise self._fail(
                "yaml.merge", "YAML merge keys ('<<') are not allowed", event.start_mark
            )
        node = ScalarNode(tag, value, event.start_mark, event.end_mark)
        try:
            if kind == "null":
                return None
            if kind == "bool":
                return _CONSTRUCTOR.construct_yaml_bool(node)
            if kind == "int":
                integer = _CONSTRUCTOR.construct_yaml_int(node)
                if abs(integer) > MAX_SAFE_INT:
                    raise self._fail(
                        "yaml.number",
                        f"integer {value!r} is too large (limit ±{MAX_SAFE_INT:,})",
                        event.start_mark,
                        hint="quote it to pass it as text",
                    )
                return integer
            if kind == "float":
                number = _CONSTRUCTOR.construct_yaml_float(node)
                if not math.isfinite(number):
                    raise self._fail(
                        "yaml.number", f"number {value!r} is not finite", event.start_mark
                    )
                return number
        except (ValueError, yaml.YAMLError) as exc:
            raise self._fail(
                "yaml.scalar", f"cannot read {value!r}: {exc}", event.start_mark
            ) from exc
        raise self._fail("yaml.tag", f"YAML type '{kind}' is not allowed", event.start_mark)


def decode_text(path: str, raw: bytes) -> tuple[str | None, list[Issue]]:
    """Bytes → text, refusing oversized, binary or non-UTF-8 input with a located issue."""
    if len(raw) > MAX_BYTES:
        return None, [
            Issue(
                path=path,
                code="file.too_large",
                message=f"file is {len(raw):,} bytes; the limit is {MAX_BYTES:,} bytes",
                hint="split the plan into several smaller plans",
            )
        ]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [
            Issue(
                path=path,
                line=line,
                code="file.encoding",
                message=f"file is not valid UTF-8 (byte {exc.start})",
                hint="save the file as UTF-8 text",
            )
        ]
    text = text.removeprefix("\ufeff")
    bad = next((i for i, ch in enumerate(text) if ch == "\x00"), None)
    if bad is not None:
        return None, [
            Issue(
                path=path,
                line=text.count("\n", 0, bad) + 1,
                code="file.binary",
                message="file contains NUL bytes: it looks binary, not YAML",
            )
        ]
    return text, []


def read_yaml(path: str, raw: bytes) -> tuple[YamlDocument | None, list[Issue]]:
    """Parse one YAML file strictly. Returns the document, or ``None`` and the issues found."""
    text, issues = decode_text(path, raw)
    if text is None:
        return None, issues
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        return None, [
            Issue(path=path, code="file.empty", message="file is empty: expected a YAML mapping")
        ]
    reader = _Reader(path, text)
    try:
        data = reader.read()
    except _Stop:
        return None, reader.issues
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        return None, [
            Issue(
                path=path,
                line=mark.line + 1 if mark else None,
                col=mark.column + 1 if mark else None,
                code="yaml.syntax",
                message=f"invalid YAML: {problem}",
            )
        ]
    except (yaml.YAMLError, RecursionError) as exc:
        return None, [Issue(path=path, code="yaml.syntax", message=f"invalid YAML: {exc}")]
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        return None, [
            Issue(
                path=path,
                line=1,
                col=1,
                code="yaml.not_mapping",
                message=f"top level must be a mapping (key: value), found {kind}",
            )
        ]
    return YamlDocument(path=path, data=data, source=reader.source), []
