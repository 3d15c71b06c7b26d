"""The canonical plan digest: what reviewers approve and what the executor verifies.

``sha256`` over RFC 8785 (JCS) canonical JSON of the *validated* plan, defaults filled in. Key
order, comments, quoting, whitespace and omitted defaults do not change it; any semantic change
does. The digest never depends on the file path: moving a plan does not re-open its review, but
the attestation binds the path separately.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import rfc8785
from pydantic import BaseModel

__all__ = ["canonical_json", "plan_digest", "sha256_hex"]


_MAX_SAFE_INT = 2**53 - 1


class _NotPlain(Exception):
    """Internal: the value needs the full RFC 8785 encoder."""


def _jcs_ready(value: Any) -> Any:
    """``value`` rewritten so that sorted-key ``json.dumps`` gives RFC 8785 bytes, or raise.

    Why: ``rfc8785`` is pure Python and was a third of the time of checking a large plan. For
    strings, booleans, null, safe integers, lists and objects whose keys have no character above
    U+FFFF (code point order then equals RFC 8785's UTF-16 order), the C ``json`` encoder writes
    the same bytes (same escapes, raw UTF-8). Numbers need care: RFC 8785 writes numbers as
    ECMAScript does, so an integral float (``300.0``, ``-0.0``) becomes an integer, and other
    floats are kept only where Python's shortest round-trip ``repr`` and ECMAScript agree on
    the notation (no exponent: ``1e-4 <= |x| < 1e16``). Anything else takes the full encoder.
    A property test checks this against ``rfc8785`` itself.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return value
        raise _NotPlain
    if kind is float:
        if not math.isfinite(value):
            raise _NotPlain
        if value.is_integer():
            if abs(value) <= _MAX_SAFE_INT:
                return int(value)
            raise _NotPlain
        if 1e-4 <= abs(value) < 1e16:
            return value
        raise _NotPlain
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(key, default="") <= "\uffff"):
                raise _NotPlain
            out[key] = _jcs_ready(item)
        return out
    if kind is list or kind is tuple:
        return [_jcs_ready(item) for item in value]
    raise _NotPlain


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of a JSON-compatible value or pydantic model."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    try:
        ready = _jcs_ready(value)
        text = json.dumps(ready, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return text.encode("utf-8")
    except (_NotPlain, UnicodeEncodeError, RecursionError):
        # lone surrogates, huge integers, exotic floats: the reference encoder decides
        return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_digest(plan: BaseModel) -> str:
    """``sha256:<hex>`` of the plan's canonical JSON."""
    return "sha256:" + sha256_hex(canonical_json(plan))
