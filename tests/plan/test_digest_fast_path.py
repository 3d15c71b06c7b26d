"""The fast canonical JSON path produces exactly the bytes of the ``rfc8785`` reference."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from app.plan.digest import canonical_json

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def _reference(value):
    try:
        return rfc8785.dumps(value)
    except Exception as exc:  # the reference refuses (e.g. lone surrogates): so must we
        return type(exc)


def _ours(value):
    try:
        return canonical_json(value)
    except Exception as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fast_path_equals_rfc8785(value):
    assert _ours(value) == _reference(value)


def test_number_edge_cases_equal_rfc8785():
    for number in [0.0, -0.0, 1.0, 300.0, 2.5, 1e-4, 9.99e-5, 1e15 + 0.5, 1e16, 1e21, 5e-324,
                   2.0**53, 2.0**53 + 2, 0.1 + 0.2, -123.456, 1e-7]:  # fmt: skip
        assert canonical_json({"n": number}) == rfc8785.dumps({"n": number}), number


def test_non_bmp_keys_sort_like_utf16():
    value = {"\U0001f600": 1, "\ufb01": 2, "a": 3}
    assert canonical_json(value) == rfc8785.dumps(value)
