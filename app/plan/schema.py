"""The plan format's JSON Schema, for editors (yaml-language-server) and ``plangate schema``.

Generated from the pydantic models; each built-in action's input schema is attached to steps
through ``if/then`` on ``action`` so editors complete and check ``with:`` too. A committed copy
lives in docs/plan.schema.json and a test keeps it in sync.
"""

from __future__ import annotations

import json
from typing import Any

from app.actions.registry import ActionRegistry
from app.plan.model import Plan

__all__ = ["plan_json_schema", "plan_json_schema_text"]

SCHEMA_ID = "https://plangate.dev/schemas/plan-v1.json"


def plan_json_schema(registry: ActionRegistry | None = None) -> dict[str, Any]:
    registry = registry or ActionRegistry.builtins()
    schema = Plan.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    conditions: list[dict[str, Any]] = []
    for spec in registry:
        inputs = spec.inputs.model_json_schema(by_alias=True, mode="validation")
        for name, sub in inputs.pop("$defs", {}).items():
            defs.setdefault(name, sub)
        defs[spec.inputs.__name__] = inputs
        conditions.append(
            {
                "if": {"properties": {"action": {"const": spec.name}}, "required": ["action"]},
                "then": {"properties": {"with": {"$ref": f"#/$defs/{spec.inputs.__name__}"}}},
            }
        )
    for step_model in ("Step", "Compensation"):
        defs[step_model]["allOf"] = conditions
        defs[step_model]["properties"]["action"]["examples"] = registry.names()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def plan_json_schema_text(registry: ActionRegistry | None = None) -> str:
    return json.dumps(plan_json_schema(registry), indent=2, sort_keys=True) + "\n"
