"""The canonical plan digest: what reviewers approve and what the executor verifies.

``sha256`` over RFC 8785 (JCS) canonical JSON of the *validated* plan, defaults filled in. Key
order, comments, quoting, whitespace and omitted defaults do not change it; any semantic change
does. The digest never depends on the file path: moving a plan does not re-open its review, but
the attestation binds the path separately.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
from pydantic import BaseModel

__all__ = ["canonical_json", "plan_digest", "sha256_hex"]


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of a JSON-compatible value or pydantic model."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_digest(plan: BaseModel) -> str:
    """``sha256:<hex>`` of the plan's canonical JSON."""
    return "sha256:" + sha256_hex(canonical_json(plan))
