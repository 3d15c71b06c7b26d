"""Semantic checks that a schema alone cannot express.

Run after the structural (pydantic) validation of each step. Findings are ``Finding`` values
with a *data path* (``("steps", 4, "with", "url")``); the loader turns paths into ``file:line:col``.
Checks: known actions and their inputs, ``mutates`` overrides, compensations declared for
mutating steps, the canary stage, value references (``${{ steps.<id>.outputs.<name> }}``) that
point only at earlier steps, and the task graph itself (``app.plan.graph``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from app.actions.registry import ActionRegistry
from app.plan.graph import Reachability, downstream_origins, find_graph_issues
from app.plan.model import (
    COMPENSATE_NONE_TAG,
    COMPENSATE_STEP_TAG,
    ID_PATTERN,
    Compensation,
    NoCompensation,
    Plan,
    Step,
)

__all__ = ["REFERENCE_RE", "Finding", "check_steps", "pydantic_findings"]

#: ``${{ ... }}`` — the only run-time substitution, for values, never for the graph
REFERENCE_RE = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
_STEP_OUTPUT = re.compile(r"^steps\.([a-z0-9._-]+)\.outputs\.([A-Za-z0-9_-]+)$")
_CONTEXT_REFS = {"plan.id", "plan.digest", "plan.environment", "plan.team", "run.id"}

DataPath = tuple[str | int, ...]
_UNION_TAGS = {COMPENSATE_STEP_TAG, COMPENSATE_NONE_TAG}


@dataclass(frozen=True, slots=True)
class Finding:
    path: DataPath
    code: str
    message: str
    step: str | None = None
    hint: str | None = None
    on_key: bool = False


def pydantic_findings(
    exc: ValidationError,
    prefix: DataPath,
    data: Any,
    step: str | None = None,
    *,
    model: type[BaseModel] | None = None,
) -> list[Finding]:
    """Turn a pydantic ``ValidationError`` into findings with real data paths.

    Pydantic's ``loc`` contains union tags and model names that are not keys in the data; we walk
    the data and keep only components that exist, so the path points at a real YAML node.
    """
    findings: list[Finding] = []
    errors = exc.errors(include_url=False)
    # pydantic reports a list whose items failed as "too short" as well (the failed items are
    # dropped first); only the items' own errors are the user's problem
    has_failed_children = {
        tuple(err["loc"][:cut]) for err in errors for cut in range(len(err["loc"]))
    }
    suggestions_left = _MAX_SUGGESTIONS
    for err in errors:
        kind = err["type"]
        if kind == "too_short" and tuple(err["loc"]) in has_failed_children:
            continue
        path, _ = _real_path(err["loc"], data)
        full = (*prefix, *path)
        field = field_name(full) or "plan"
        where = f"step '{step}': " if step else ""
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            findings.append(
                Finding(
                    full,
                    "field.unknown",
                    f"{where}unknown field '{key}'"
                    + (f" in '{field_name(full[:-1])}'" if field_name(full[:-1]) else ""),
                    step=step,
                    hint=_suggest(
                        key,
                        _real_path(err["loc"][:-1], data)[1],
                        _fields_at(model, err["loc"][:-1]) if suggestions_left > 0 else (),
                    ),
                    on_key=True,
                )
            )
            suggestions_left -= 1
        elif kind == "missing":
            missing = str(err["loc"][-1])
            findings.append(
                Finding(
                    full,
                    "field.missing",
                    f"{where}missing required field '{missing}'"
                    + (f" in '{field_name(full)}'" if field_name(full) else ""),
                    step=step,
                )
            )
        elif kind in _TYPE_MESSAGES:
            findings.append(
                Finding(
                    full,
                    "field.invalid",
                    f"{where}{_label(full)}{_TYPE_MESSAGES[kind]}, found {_kind(err['input'])}",
                    step=step,
                    hint=_TYPE_HINTS.get(_last_key(full)) or _quote_hint(kind, err["input"]),
                )
            )
        else:
            message = err["msg"].removeprefix("Value error, ")
            if (
                kind == "string_pattern_mismatch"
                and err.get("ctx", {}).get("pattern") == ID_PATTERN
            ):
                message = (
                    f"{err['input']!r} is not a valid id: use 1-64 lowercase letters, digits, "
                    "'.', '_' or '-', starting and ending with a letter or digit"
                )
            findings.append(
                Finding(full, "field.invalid", f"{where}field '{field}': {message}", step=step)
            )
    return findings


#: "did you mean" suggestions per validation error; difflib scans every known field name
_MAX_SUGGESTIONS = 50

_TYPE_MESSAGES = {
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "dict_type": "expected a mapping (key: value)",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected text",
}
_TYPE_HINTS = {
    "compensate": "write 'compensate: {action: ..., with: ...}' or "
    "'compensate: {none: <why it cannot be undone>}'",
    "steps": "each step is a mapping with at least 'id' and 'action'",
}
_YAML_KINDS = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


def _quote_hint(kind: str, value: Any) -> str | None:
    """YAML reads ``yes``, ``on``, ``123`` or ``1.10`` as booleans and numbers: say so."""
    if kind != "string_type" or not isinstance(value, bool | int | float):
        return None
    if isinstance(value, bool):
        return "YAML reads yes/no/on/off/true/false as booleans; quote the value"
    return f"quote the value to keep it text, e.g. '{value}'"


def _kind(value: Any) -> str:
    return _YAML_KINDS.get(type(value), type(value).__name__)


def _last_key(path: DataPath) -> str | None:
    keys = [part for part in path if isinstance(part, str)]
    return keys[-1] if keys else None


def _label(path: DataPath) -> str:
    """How a message names the place: ``field 'retry': `` (nothing for a step itself)."""
    name = field_name(path)
    return f"field '{name}': " if name else ""


def field_name(path: DataPath) -> str:
    """``("steps", 3, "with", "run", 0)`` → ``with.run[0]`` (relative to the step, if any)."""
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        path = path[2:]
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _real_path(loc: Sequence[str | int], data: Any) -> tuple[DataPath, Any]:
    path: list[str | int] = []
    node = data
    for part in loc:
        if part in _UNION_TAGS:
            continue
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            path.append(part)
    return tuple(path), node


def _suggest(key: str, parent_node: Any, candidates: Sequence[str]) -> str | None:
    """'did you mean ...' among the fields allowed where ``key`` was written."""
    if isinstance(parent_node, dict) and "none" in parent_node and key != "none":
        return "'compensate: {none: <reason>}' stands alone: remove 'none' or the other fields"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if close and close[0] != key:
        return f"did you mean '{close[0]}'?"
    if candidates:
        return "allowed here: " + ", ".join(sorted(candidates))
    return "remove it; `plangate schema` lists the allowed fields"


_TAGGED = {COMPENSATE_STEP_TAG: Compensation, COMPENSATE_NONE_TAG: NoCompensation}


def _fields_at(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str]:
    """Field names (as written in YAML) of the model found at ``loc`` below ``model``."""
    current: Any = model
    for part in loc:
        current = _step_into(current, part)
        if current is None:
            return []
    return sorted(
        {f.alias or name for cls in _models_in(current) for name, f in cls.model_fields.items()}
    )


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """The models a type annotation allows (``X``, ``X | None``, ``Annotated[X | Y, ...]``)."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if get_origin(tp) in (Union, UnionType):
        return [cls for option in get_args(tp) for cls in _models_in(option)]
    return []


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _step_into(tp: Any, part: str | int) -> Any:
    if isinstance(part, str) and part in _TAGGED:
        return _TAGGED[part]
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if isinstance(part, str):
            for name, f in tp.model_fields.items():
                if part in (name, f.alias):
                    return f.annotation
        return None
    origin = get_origin(tp)
    if origin in (tuple, list) and isinstance(part, int):
        return get_args(tp)[0]
    if origin in (Union, UnionType):
        for option in get_args(tp):
            found = _step_into(option, part)
            if found is not None:
                return found
    return None


def _strings(value: Any, path: DataPath) -> Iterator[tuple[DataPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def check_steps(
    plan_steps: Sequence[tuple[int, Step]],
    registry: ActionRegistry,
    *,
    all_ids: Sequence[str],
    raw_steps: Sequence[Any],
    validated: dict[DataPath, BaseModel] | None = None,
    pruned: Mapping[int, frozenset[str]] | None = None,
) -> list[Finding]:
    """Semantic checks of structurally valid steps (``(index in file, step)`` pairs).

    ``validated`` collects each ``with`` that passed its action's input model, keyed by the data
    path of the ``with``, so the loader fills in defaults without validating it a second time.
    ``pruned`` names, per step index, invalid fields the loader dropped to check the rest of a
    step; checks that would read a dropped field are skipped (its error is reported already).
    """
    validated = {} if validated is None else validated
    pruned = pruned or {}
    findings: list[Finding] = []
    for index, step in plan_steps:
        base: DataPath = ("steps", index)
        raw = raw_steps[index] if index < len(raw_steps) else {}
        dropped = pruned.get(index, frozenset())
        findings += _check_action(
            step.action,
            None if "with" in dropped else step.with_,
            (*base,),
            raw,
            registry,
            step.id,
            validated,
        )
        spec = registry.get(step.action)
        fixed = spec is not None and spec.mutates_fixed
        if fixed and step.mutates is not None and step.mutates != spec.mutates:
            findings.append(
                Finding(
                    (*base, "mutates"),
                    "step.mutates_fixed",
                    f"step '{step.id}': action '{step.action}' always has mutates: "
                    f"{str(spec.mutates).lower()}",
                    step=step.id,
                    hint="remove the 'mutates' field",
                )
            )
        if fixed:
            mutates = spec.mutates
        else:
            mutates = step.mutates if step.mutates is not None else (spec.mutates if spec else True)
        # an unknown action is already an error; whether it mutates is then unknowable
        if (
            mutates
            and step.compensate is None
            and (spec is not None or step.mutates)
            and not dropped & {"compensate", "mutates"}
        ):
            findings.append(
                Finding(
                    base,
                    "step.compensation_missing",
                    f"step '{step.id}' changes the outside world (mutates: true) but declares "
                    "no 'compensate'",
                    step=step.id,
                    hint="add 'compensate: {action: ..., with: ...}' or "
                    "'compensate: {none: <why it cannot be undone>}'",
                )
            )
        if isinstance(step.compensate, Compensation):
            comp_raw = raw.get("compensate", {}) if isinstance(raw, dict) else {}
            findings += _check_action(
                step.compensate.action,
                step.compensate.with_,
                (*base, "compensate"),
                comp_raw,
                registry,
                step.id,
                validated,
            )
        elif isinstance(step.compensate, NoCompensation) and not mutates:
            pass  # harmless: documents intent on a read-only step
    return findings


def _check_action(
    action: str,
    inputs: dict[str, Any] | None,
    base: DataPath,
    raw: Any,
    registry: ActionRegistry,
    step_id: str,
    validated: dict[DataPath, BaseModel],
) -> list[Finding]:
    spec = registry.get(action)
    if spec is None:
        load_error = registry.load_errors.get(action)
        close = difflib.get_close_matches(action, registry.names(), n=1)
        hint = (
            f"the plugin for '{action}' failed to load: {load_error}"
            if load_error
            else (f"did you mean '{close[0]}'?" if close else None)
        ) or "known actions: " + ", ".join(registry.names())
        return [
            Finding(
                (*base, "action"),
                "action.unknown",
                f"step '{step_id}': unknown action '{action}'",
                step=step_id,
                hint=hint,
            )
        ]
    if inputs is None:  # the step's 'with' was invalid and its error is reported already
        return []
    try:
        validated[(*base, "with")] = spec.inputs.model_validate(inputs)
    except ValidationError as exc:
        raw_with = raw.get("with", {}) if isinstance(raw, dict) else {}
        return [
            Finding(
                f.path,
                "action.input" if f.code == "field.invalid" else f.code,
                f.message,
                step=step_id,
                hint=f.hint,
                on_key=f.on_key,
            )
            for f in pydantic_findings(
                exc, (*base, "with"), raw_with, step=step_id, model=spec.inputs
            )
        ]
    except Exception as exc:  # a plugin's validator crashed: report it, never crash the check
        return [
            Finding(
                (*base, "with"),
                "action.plugin_error",
                f"step '{step_id}': the input model of action '{action}' failed: "
                f"{type(exc).__name__}: {exc}",
                step=step_id,
                hint=f"this is a bug in the package that provides '{action}'",
            )
        ]
    return []


def check_plan(plan: Plan, raw_steps: Sequence[Any]) -> list[Finding]:
    """Whole-plan checks on a structurally valid plan: canary stage, references, resources."""
    findings: list[Finding] = []
    index_of = {step.id: i for i, step in enumerate(plan.steps)}
    needs = {step.id: step.needs for step in plan.steps}

    seen_resources: set[str] = set()
    for i, resource in enumerate(plan.resources):
        if resource in seen_resources:
            findings.append(
                Finding(
                    ("resources", i),
                    "plan.duplicate_resource",
                    f"resource '{resource}' is listed twice",
                )
            )
        seen_resources.add(resource)

    if plan.canary is not None:
        canary_steps = set(plan.canary.steps)
        analysis = set(plan.canary.analysis)
        for field, ids in (("steps", plan.canary.steps), ("analysis", plan.canary.analysis)):
            for i, step_id in enumerate(ids):
                if step_id not in index_of:
                    findings.append(
                        Finding(
                            ("canary", field, i),
                            "canary.unknown_step",
                            f"canary.{field} names unknown step '{step_id}'",
                            hint="list ids of steps defined under 'steps'",
                        )
                    )
        for step_id in sorted(canary_steps & analysis):
            findings.append(
                Finding(
                    ("canary", "analysis"),
                    "canary.overlap",
                    f"step '{step_id}' is both a canary step and an analysis probe",
                )
            )
        for i, step_id in enumerate(plan.canary.analysis):
            if step_id in index_of and plan.step(step_id).action != "probe":
                findings.append(
                    Finding(
                        ("canary", "analysis", i),
                        "canary.not_probe",
                        f"canary analysis step '{step_id}' uses action "
                        f"'{plan.step(step_id).action}'; analysis steps must use 'probe'",
                    )
                )
        # The canary stage is its steps, its analysis probes and everything they need; all
        # other steps wait for the analysis to pass. A canary step that waits on its own
        # analysis could never run.
        after_analysis = downstream_origins(sorted(analysis & set(index_of)), needs)
        for step_id in plan.canary.steps:
            if step_id in after_analysis:
                findings.append(
                    Finding(
                        ("steps", index_of[step_id], "needs"),
                        "canary.needs_analysis",
                        f"canary step '{step_id}' needs analysis step "
                        f"'{after_analysis[step_id]}', which judges the canary after it ran",
                        step=step_id,
                    )
                )
        # ... and a probe that needs no canary step would measure before the canary changed
        known_canary = sorted(canary_steps & set(index_of))
        after_canary = downstream_origins(known_canary, needs)
        for i, probe in enumerate(plan.canary.analysis):
            if (
                known_canary  # else the unknown canary steps are the error to fix first
                and probe in index_of
                and probe not in canary_steps
                and probe not in after_canary
            ):
                findings.append(
                    Finding(
                        ("canary", "analysis", i),
                        "canary.analysis_unrelated",
                        f"analysis step '{probe}' does not need any canary step, so it would "
                        "judge the canary before the canary ran",
                        step=probe,
                        hint=f"add a canary step to the needs of '{probe}'",
                    )
                )

    reach = Reachability(needs)
    for index, step in enumerate(plan.steps):
        findings += _check_references(step, index, reach, index_of)
    return findings


def _check_references(
    step: Step, index: int, reach: Reachability, index_of: dict[str, int]
) -> list[Finding]:
    findings: list[Finding] = []
    sources: list[tuple[DataPath, Any, bool]] = [(("steps", index, "with"), step.with_, False)]
    if isinstance(step.compensate, Compensation):
        sources.append((("steps", index, "compensate", "with"), step.compensate.with_, True))
    for base, value, in_compensation in sources:
        for path, text in _strings(value, base):
            for match in REFERENCE_RE.finditer(text):
                expr = match.group(1)
                if expr in _CONTEXT_REFS:
                    continue
                ref = _STEP_OUTPUT.match(expr)
                if ref is None:
                    hint = (
                        "pass secrets by name (shell 'secret_env', http 'secret_headers')"
                        if expr.startswith("secrets.")
                        else "use ${{ steps.<id>.outputs.<name> }} or one of "
                        + ", ".join(sorted(_CONTEXT_REFS))
                    )
                    findings.append(
                        Finding(
                            path,
                            "ref.invalid",
                            f"step '{step.id}': unsupported reference '${{{{ {expr} }}}}'",
                            step=step.id,
                            hint=hint,
                        )
                    )
                    continue
                target = ref.group(1)
                allowed = reach.is_upstream(target, step.id) or (
                    in_compensation and target == step.id
                )
                if target not in index_of:
                    findings.append(
                        Finding(
                            path,
                            "ref.unknown_step",
                            f"step '{step.id}': reference to unknown step '{target}'",
                            step=step.id,
                        )
                    )
                elif not allowed:
                    findings.append(
                        Finding(
                            path,
                            "ref.not_upstream",
                            f"step '{step.id}': uses outputs of '{target}', which is not among "
                            "its (transitive) needs",
                            step=step.id,
                            hint=f"add '{target}' to needs",
                        )
                    )
    return findings


def check_graph(
    steps: Sequence[tuple[int, str, Sequence[str]]], tolerated: set[str]
) -> list[Finding]:
    """Graph findings for ``(index, id, needs)`` triples."""
    pairs = [(step_id, needs) for _, step_id, needs in steps]
    findings: list[Finding] = []
    for issue in find_graph_issues(pairs, known_ids=tolerated):
        file_index = steps[issue.index][0] if issue.index is not None else None
        if file_index is None:
            path: DataPath = ("steps",)
        elif issue.need_index is not None:
            path = ("steps", file_index, "needs", issue.need_index)
        elif issue.code == "step.duplicate_id":
            path = ("steps", file_index, "id")
        else:
            path = ("steps", file_index)
        findings.append(Finding(path, issue.code, issue.message, step=issue.step, hint=issue.hint))
    return findings
