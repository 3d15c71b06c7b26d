"""Resolve ``${{ ... }}`` references in step inputs, at run time, for values only.

The graph never depends on these: the loader already checked every reference points at an
upstream step (``ref.not_upstream``) or a context value. A string that is exactly one reference
takes the referenced value as is (a number stays a number, a list a list); a reference inside
a longer string is replaced by its text (JSON for non-strings). A missing output is an error
naming the step and the output, never an empty string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.errors import StepFailed
from app.plan.validate import REFERENCE_RE

__all__ = ["resolve"]


def _lookup(
    expr: str, outputs: Mapping[str, Mapping[str, Any]], context: Mapping[str, Any], step: str
) -> Any:
    if expr in context:
        return context[expr]
    parts = expr.split(".")
    if len(parts) == 4 and parts[0] == "steps" and parts[2] == "outputs":
        source, name = parts[1], parts[3]
        if source not in outputs:
            raise StepFailed(
                f"step '{step}': '${{{{ {expr} }}}}' refers to step '{source}', which has not "
                "completed",
                step=step,
                kind="ref.unresolved",
                retryable=False,
            )
        if name not in outputs[source]:
            known = ", ".join(sorted(outputs[source])) or "none"
            raise StepFailed(
                f"step '{step}': step '{source}' has no output '{name}' (outputs: {known})",
                step=step,
                kind="ref.unresolved",
                retryable=False,
                hint=f"check what '{source}' returns; the plan references an output it lacks",
            )
        return outputs[source][name]
    raise StepFailed(
        f"step '{step}': unsupported reference '${{{{ {expr} }}}}'",
        step=step,
        kind="ref.invalid",
        retryable=False,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def resolve(
    value: Any,
    *,
    outputs: Mapping[str, Mapping[str, Any]],
    context: Mapping[str, Any],
    step: str,
) -> Any:
    """``value`` with every reference replaced. ``context`` maps e.g. ``plan.id`` -> value."""
    if isinstance(value, str):
        if "${{" not in value:
            return value
        whole = REFERENCE_RE.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), outputs, context, step)
        return REFERENCE_RE.sub(lambda m: _text(_lookup(m.group(1), outputs, context, step)), value)
    if isinstance(value, dict):
        return {
            k: resolve(v, outputs=outputs, context=context, step=step) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [resolve(v, outputs=outputs, context=context, step=step) for v in value]
    return value
