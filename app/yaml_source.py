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

import contextlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
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
_MAP_TAG = f"{_TAG}map"
_SEQ_TAG = f"{_TAG}seq"
_ALLOWED_EXPLICIT_TAGS = {
    f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")
}
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()


@dataclass(slots=True)
class SourceMap:
    """Where each value (and each mapping key) of a document starts.

    Stores the parser's 0-based ``(line, column)`` and converts to 1-based only in ``locate``,
    for the few positions an error message needs: a big plan has ~60,000 nodes
    (benchmarks/check.py). Plain int tuples, not the parser's ``Mark`` objects, because the
    cyclic garbage collector has to scan every live ``Mark`` but soon ignores int tuples.
    """

    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """1-based ``(line, col)`` of ``path``; falls back to the closest ancestor that has one."""
        probe = tuple(path)
        while True:
            mark = None
            if key:
                mark = self.keys.get(probe)
            if mark is None:
                mark = self.values.get(probe, self.keys.get(probe))
            if mark is not None:
                return (mark[0] + 1, mark[1] + 1)
            if not probe:
                return (None, None)
            probe = probe[:-1]


class _DeferredSourceMap(SourceMap):
    """A source map built on first use, by reading the text again with positions.

    Most plans are valid, and a valid plan needs no positions at all; building them for every
    node was ~15% of loading a big plan. Errors (the only users of ``locate``) pay instead.
    """

    __slots__ = ("_path", "_text")

    def __init__(self, path: str, text: str) -> None:
        super().__init__()
        self._path: str = path
        self._text: str | None = text

    def locate(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        if self._text is not None:
            reader = _Reader(self._path, self._text, positions=True)
            self._text = None
            # the same text was read once without positions, so this succeeds; if it ever did
            # not, positions would stay unknown rather than turn an error report into a crash
            with contextlib.suppress(_Stop, yaml.YAMLError):
                reader.read()
            self.values, self.keys = reader.source.values, reader.source.keys
        return SourceMap.locate(self, path, key=key)


@dataclass(slots=True)
class YamlDocument:
    """The value of a YAML file plus where everything in it came from."""

    path: str
    data: Any
    source: SourceMap


def _show_tag(tag: str) -> str:
    """Tags as people write them: ``!!python/object``, not ``tag:yaml.org,2002:python/object``."""
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


class _Stop(Exception):
    """Internal: abort reading on the first structural problem (after recording it)."""


class _NeedPositions(Exception):
    """Internal: a problem whose message needs the source map (a duplicate key's first line)."""


_ANCHOR_HINT = "write the value out in full; anchors and aliases are rejected"


@lru_cache(maxsize=8192)
def _plain_scalar(value: str) -> tuple[str, Any]:
    """Type of a plain (unquoted) scalar, as PyYAML's safe loader would resolve it.

    Returns ``("ok", value)`` or ``(error_code, message)``. Cached: plans repeat the same plain
    words (action names, ``true``, small numbers) thousands of times, and resolution runs a
    regex per candidate type.
    """
    tag = _RESOLVER.resolve(ScalarNode, value, (True, False))
    return _construct(tag, value)


def _construct(tag: str, value: str) -> tuple[str, Any]:
    kind = tag.removeprefix(_TAG)
    if kind in ("str", "timestamp"):
        # dates stay text: plans never need YAML's implicit datetime conversion
        return "ok", value
    if kind == "null":
        return "ok", None
    if kind == "merge":
        return "yaml.merge", "YAML merge keys ('<<') are not allowed"
    node = ScalarNode(tag, value)
    try:
        if kind == "bool":
            return "ok", _CONSTRUCTOR.construct_yaml_bool(node)
        if kind == "int":
            integer = _CONSTRUCTOR.construct_yaml_int(node)
            if abs(integer) > MAX_SAFE_INT:
                return "yaml.number", f"integer {value!r} is too large (limit ±{MAX_SAFE_INT:,})"
            return "ok", integer
        if kind == "float":
            number = _CONSTRUCTOR.construct_yaml_float(node)
            if not math.isfinite(number):
                return "yaml.number", f"number {value!r} is not finite"
            return "ok", number
    except (ValueError, yaml.YAMLError) as exc:
        return "yaml.scalar", f"cannot read {value!r}: {exc}"
    return "yaml.tag", f"YAML type '{kind}' is not allowed"


class _Reader:
    """Builds values and the source map from the parser's events, in one pass.

    Hot loop: a 1,000-step plan is ~60,000 events, so each event is fetched once with
    ``get_event`` (no ``peek``/``check``) and dispatched on its exact type.
    """

    def __init__(self, path: str, text: str, *, positions: bool = True) -> None:
        self.path = path
        self.parser = _PARSER(text)
        self.source = SourceMap()
        self.issues: list[Issue] = []
        #: without positions no data paths are built either: the fast path for valid files
        self.positions = positions

    def _fail(self, code: str, message: str, mark: Any, hint: str | None = None) -> _Stop:
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        self.issues.append(
            Issue(path=self.path, line=line, col=col, code=code, message=message, hint=hint)
        )
        return _Stop()

    # -- document ----------------------------------------------------------------------------
    def read(self) -> Any:
        get = self.parser.get_event
        get()  # StreamStart
        event = get()
        if type(event) is ev.StreamEndEvent:
            raise self._fail("file.empty", "file is empty: expected a YAML mapping", None)
        value = self._node(get(), (), 0)  # after DocumentStart
        get()  # DocumentEnd
        event = get()
        if type(event) is not ev.StreamEndEvent:
            raise self._fail(
                "yaml.multiple_documents",
                "more than one YAML document: a plan file holds exactly one",
                event.start_mark,
                hint="remove the extra `---` document or move it to its own file",
            )
        return value

    def _node(self, event: Any, path: Path, depth: int) -> Any:
        kind = type(event)
        mark = event.start_mark
        if kind is ev.AliasEvent:
            raise self._fail(
                "yaml.alias",
                f"YAML alias '*{event.anchor}' is not allowed",
                mark,
                hint=_ANCHOR_HINT,
            )
        if event.anchor is not None:
            raise self._fail(
                "yaml.anchor", f"YAML anchor '&{event.anchor}' is not allowed", mark, _ANCHOR_HINT
            )
        if self.positions:
            self.source.values[path] = (mark.line, mark.column)
        if kind is ev.ScalarEvent:
            return self._scalar(event)
        if depth >= MAX_DEPTH:
            raise self._fail("yaml.too_deep", f"nesting deeper than {MAX_DEPTH} levels", mark)
        tag = event.tag
        if tag is not None and tag != "!":
            expected = _MAP_TAG if kind is ev.MappingStartEvent else _SEQ_TAG
            if tag != expected:
                raise self._fail(
                    "yaml.tag", f"YAML tag '{_show_tag(tag)}' is not allowed here", mark
                )
        if kind is ev.MappingStartEvent:
            return self._mapping(path, depth)
        if kind is ev.SequenceStartEvent:
            get = self.parser.get_event
            items: list[Any] = []
            index = 0
            positions = self.positions
            while True:
                item = get()
                if type(item) is ev.SequenceEndEvent:
                    return items
                items.append(self._node(item, (*path, index) if positions else path, depth + 1))
                index += 1
        raise self._fail("yaml.syntax", "unexpected YAML structure", mark)  # pragma: no cover

    def _mapping(self, path: Path, depth: int) -> dict[str, Any]:
        get = self.parser.get_event
        keys = self.source.keys
        positions = self.positions
        result: dict[str, Any] = {}
        while True:
            key_event = get()
            kind = type(key_event)
            if kind is ev.MappingEndEvent:
                return result
            mark = key_event.start_mark
            if kind is not ev.ScalarEvent:
                raise self._fail("yaml.key", "mapping keys must be plain strings", mark)
            key = self._scalar(key_event)
            if not isinstance(key, str):
                raise self._fail(
                    "yaml.key", f"mapping key {key!r} is not a string", mark, hint="quote the key"
                )
            child = (*path, key) if positions else path
            if key in result:
                if not positions:
                    raise _NeedPositions
                first = keys.get(child)
                where = f" (first defined on line {first[0] + 1})" if first else ""
                raise self._fail(
                    "yaml.duplicate_key",
                    f"duplicate key '{key}'{where}",
                    mark,
                    hint="each key may appear once in a mapping",
                )
            if positions:
                keys[child] = (mark.line, mark.column)
            result[key] = self._node(get(), child, depth + 1)

    def _scalar(self, event: Any) -> Any:
        if event.anchor is not None:
            raise self._fail(
                "yaml.anchor",
                f"YAML anchor '&{event.anchor}' is not allowed",
                event.start_mark,
                _ANCHOR_HINT,
            )
        tag = event.tag
        value = event.value
        if tag is None or tag == "!":
            if tag == "!" or not event.implicit[0]:
                return value  # quoted, block or non-specific tag: always a string
            status, result = _plain_scalar(value)
        elif tag in _ALLOWED_EXPLICIT_TAGS and tag not in (_MAP_TAG, _SEQ_TAG):
            status, result = _construct(tag, value)
        else:
            raise self._fail(
                "yaml.tag", f"YAML tag '{_show_tag(tag)}' is not allowed", event.start_mark
            )
        if status != "ok":
            raise self._fail(status, result, event.start_mark)
        return result


def decode_text(
    path: str, raw: bytes, *, max_bytes: int = MAX_BYTES
) -> tuple[str | None, list[Issue]]:
    """Bytes → text, refusing oversized, binary or non-UTF-8 input with a located issue."""
    if len(raw) > max_bytes:
        return None, [
            Issue(
                path=path,
                code="file.too_large",
                message=f"file is {len(raw):,} bytes; the limit is {max_bytes:,} bytes",
                hint="split the plan into several smaller plans",
            )
        ]
    nul = raw.find(b"\x00")
    if nul >= 0:
        return None, [
            Issue(
                path=path,
                line=raw.count(b"\n", 0, nul) + 1,
                code="file.binary",
                message="file contains NUL bytes: it looks binary, not YAML",
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
    return text.removeprefix("\ufeff"), []


def read_yaml(
    path: str, raw: bytes, *, max_bytes: int = MAX_BYTES, defer_positions: bool = False
) -> tuple[YamlDocument | None, list[Issue]]:
    """Parse one YAML file strictly. Returns the document, or ``None`` and the issues found.

    ``defer_positions``: build the source map only when ``locate`` is first called (by reading
    the text again); for callers that mostly see valid files, like the plan loader.
    ``max_bytes`` exists for measurements (benchmarks/check.py); callers checking user input
    keep the default.
    """
    text, issues = decode_text(path, raw, max_bytes=max_bytes)
    if text is None:
        return None, issues
    reader = _Reader(path, text, positions=not defer_positions)
    try:
        try:
            data = reader.read()
        except _NeedPositions:
            reader = _Reader(path, text, positions=True)
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
    source = _DeferredSourceMap(path, text) if defer_positions else reader.source
    return YamlDocument(path=path, data=data, source=source), []
