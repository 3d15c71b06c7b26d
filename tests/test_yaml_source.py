"""The strict, line-aware YAML reader: values, positions, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.yaml_source import MAX_BYTES, MAX_DEPTH, read_yaml


def read(text: str | bytes):
    raw = text.encode() if isinstance(text, str) else text
    return read_yaml("f.yaml", raw)


def only_issue(text: str | bytes):
    doc, issues = read(text)
    assert doc is None
    assert len(issues) == 1
    return issues[0]


def test_values_match_safe_load_semantics():
    doc, issues = read(
        "a: 1\nb: 1.5\nc: true\nd: ~\ne: 'quoted'\nf: [x, 'y', 3]\ng: {h: no}\n"
        "i: 0x10\nj: 2024-01-01\nk: '1'\n"
    )
    assert issues == []
    assert doc.data == {
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": None,
        "e": "quoted",
        "f": ["x", "y", 3],
        "g": {"h": False},
        "i": 16,
        "j": "2024-01-01",  # dates stay text: no implicit datetime conversion
        "k": "1",
    }


def test_source_map_positions_are_one_based():
    doc, _ = read("top: 1\nsteps:\n  - id: a\n    with: {url: x}\n")
    src = doc.source
    assert src.locate(("top",)) == (1, 6)
    assert src.locate(("top",), key=True) == (1, 1)
    assert src.locate(("steps", 0)) == (3, 5)
    assert src.locate(("steps", 0, "with", "url")) == (4, 17)
    assert src.locate(("steps", 0, "with", "url"), key=True) == (4, 12)


def test_locate_falls_back_to_the_closest_ancestor():
    doc, _ = read("steps:\n  - id: a\n")
    assert doc.source.locate(("steps", 0, "retry", "max_attempts")) == (2, 5)
    assert doc.source.locate(("nothing",)) == (1, 1)  # the document itself


def test_bom_is_ignored():
    doc, issues = read(b"\xef\xbb\xbfa: 1\n")
    assert issues == [] and doc.data == {"a": 1}


def test_explicit_core_tags_are_allowed():
    doc, issues = read("a: !!str 1\nb: !!int '2'\nc: !!map {x: 1}\n")
    assert issues == []
    assert doc.data == {"a": "1", "b": 2, "c": {"x": 1}}


@pytest.mark.parametrize(
    ("text", "code", "line"),
    [
        ("a: 1\na: 2\n", "yaml.duplicate_key", 2),
        ("a: &x 1\nb: *x\n", "yaml.anchor", 1),
        ("a: *x\n", "yaml.alias", 1),
        ("a: 1\n---\nb: 2\n", "yaml.multiple_documents", 2),
        ("- 1\n", "yaml.not_mapping", 1),
        ("a: !!python/object:x {}\n", "yaml.tag", 1),
        ("a: .nan\n", "yaml.number", 1),
        ("a: 9007199254740992\n", "yaml.number", 1),
        ("1: a\n", "yaml.key", 1),
        ("? [a]\n: 1\n", "yaml.key", 1),
        ("<<: {a: 1}\n", "yaml.merge", 1),
        ("a: [\n", "yaml.syntax", 2),
    ],
)
def test_refusals_are_located(text, code, line):
    issue = only_issue(text)
    assert issue.code == code
    assert issue.line == line
    assert issue.path == "f.yaml"


@pytest.mark.parametrize("text", ["a: !!str {x: 1}\n", "a: !!map [1]\n", "a: !!seq x\n"])
def test_core_tags_must_fit_the_node(text):
    issue = only_issue(text)
    assert issue.code == "yaml.tag"
    assert issue.message.startswith("YAML tag '!!")


def test_too_deep():
    issue = only_issue("a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    assert issue.code == "yaml.too_deep"
    assert issue.message == f"nesting deeper than {MAX_DEPTH} levels"


def test_largest_safe_integer_is_accepted():
    doc, issues = read("a: 9007199254740991\nb: -9007199254740991\n")
    assert issues == [] and doc.data["a"] == 2**53 - 1


def test_size_limit_is_exact():
    ok = b"a: " + b"x" * (MAX_BYTES - 4) + b"\n"
    assert len(ok) == MAX_BYTES
    assert read(ok)[1] == []
    issue = only_issue(ok + b" ")
    assert issue.code == "file.too_large"


def test_non_utf8_line_is_the_line_of_the_bad_byte():
    issue = only_issue(b"a: 1\nb: 2\nc: \xc3\x28\n")
    assert issue.code == "file.encoding"
    assert issue.line == 3


def test_nul_line():
    issue = only_issue(b"a: 1\nb: \x00\n")
    assert (issue.code, issue.line) == ("file.binary", 2)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw):
    doc, issues = read_yaml("f.yaml", raw)
    assert (doc is None) == bool(issues)
    if doc is not None:
        assert isinstance(doc.data, dict)


_KEYS = st.text(alphabet="abcxyz019-_ ", min_size=1, max_size=6)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet="abc xyz:-#'\"{}[],019", max_size=10),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


def _key_paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _key_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _key_paths(item, (*path, index))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=5), st.sampled_from([True, False]))
def test_values_and_key_positions_agree_with_pyyaml(data, flow):
    import yaml

    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, width=60)
    doc, issues = read(text)
    assert issues == []
    assert doc.data == yaml.safe_load(text) == data
    deferred, _ = read_yaml("f.yaml", text.encode(), defer_positions=True)
    assert deferred.data == data
    lines = text.splitlines()
    for path in _key_paths(data):
        assert deferred.source.locate(path) == doc.source.locate(path)
        line, col = doc.source.locate(path, key=True)
        assert deferred.source.locate(path, key=True) == (line, col)
        at = lines[line - 1][col - 1 :]
        key = path[-1]
        assert at.startswith((key, f"'{key}", f'"{key}')), (path, line, col, text)


def test_deferred_positions_report_duplicate_keys_with_the_first_line():
    doc, issues = read_yaml("f.yaml", b"a: 1\nb:\n  c: 1\n  c: 2\n", defer_positions=True)
    assert doc is None
    assert (issues[0].code, issues[0].line) == ("yaml.duplicate_key", 4)
    assert issues[0].message == "duplicate key 'c' (first defined on line 3)"
