"""Plan files → validated ``Plan`` values, or every problem found, each at ``file:line:col``.

``load_plan_bytes`` is pure (bytes in, result out) so the app can check a file read from a git
ref or the GitHub API exactly as the CLI checks a file on disk. It never raises anything but
``PlanError`` for bad input.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from pydantic import BaseModel, ValidationError

from app.actions.registry import ActionRegistry, ActionSpec, default_registry
from app.errors import Issue, PlanError
from app.plan.digest import plan_digest
from app.plan.model import Canary, Compensation, Plan, Step
from app.plan.validate import (
    Finding,
    check_graph,
    check_plan,
    check_steps,
    field_name,
    pydantic_findings,
)
from app.yaml_source import MAX_BYTES, SourceMap, read_yaml

__all__ = ["LoadedPlan", "load_plan", "load_plan_bytes", "parse_plan"]


@dataclass(frozen=True, slots=True)
class LoadedPlan:
    """A valid plan with where it came from and its digest."""

    path: str
    plan: Plan
    digest: str
    source: SourceMap

    def line_of(self, *path: str | int) -> int | None:
        return self.source.locate(tuple(path))[0]


def load_plan(path: str | Path, *, registry: ActionRegistry | None = None) -> LoadedPlan:
    """Read and validate one plan file from disk."""
    display = str(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, a device never end
            raise PlanError(
                [Issue(display, "is not a regular file", "path.not_file", hint="name a plan file")]
            )
        if info.st_size > MAX_BYTES:  # refuse before reading: a plan path may point at anything
            raise PlanError(
                [
                    Issue(
                        display,
                        f"file is {info.st_size:,} bytes; the limit is {MAX_BYTES:,} bytes",
                        "file.too_large",
                        hint="split the plan into several smaller plans",
                    )
                ]
            )
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)  # the file may have grown since stat
    except FileNotFoundError as exc:
        raise PlanError([Issue(display, "file does not exist", "path.missing")]) from exc
    except IsADirectoryError as exc:
        raise PlanError(
            [Issue(display, "is a directory, not a plan file", "path.directory")]
        ) from exc
    except OSError as exc:
        raise PlanError(
            [Issue(display, f"cannot read file: {exc.strerror}", "path.unreadable")]
        ) from exc
    return load_plan_bytes(display, raw, registry=registry)


def load_plan_bytes(
    path: str,
    raw: bytes,
    *,
    registry: ActionRegistry | None = None,
    max_bytes: int = MAX_BYTES,
) -> LoadedPlan:
    """Validate plan bytes; ``path`` is only used in messages (repo-relative in the app)."""
    with _gc_paused():
        plan, source, issues = parse_plan(path, raw, registry=registry, max_bytes=max_bytes)
        if issues or plan is None or source is None:
            raise PlanError(issues or [Issue(path, "invalid plan", "plan.invalid")])
        try:
            digest = plan_digest(plan)
        except rfc8785.CanonicalizationError as exc:  # only a plugin's defaults can get here
            raise PlanError(
                [
                    Issue(
                        path,
                        f"the plan has no canonical JSON form, so no digest: {exc}",
                        "plan.canonical",
                        hint="an action's input model produced a value JSON cannot carry "
                        "exactly (e.g. an integer beyond 2**53); fix the plugin",
                    )
                ]
            ) from exc
        return LoadedPlan(path=path, plan=plan, digest=digest, source=source)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one plan is loaded.

    Loading allocates tens of thousands of small, acyclic containers (values, source-map
    entries, models); each allocation burst triggers collections that scan them all and free
    nothing, which cost ~20% of the load time of a 1,000-step plan (benchmarks/check.py).
    Reference counting still frees everything; the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_plan(
    path: str,
    raw: bytes,
    *,
    registry: ActionRegistry | None = None,
    max_bytes: int = MAX_BYTES,
) -> tuple[Plan | None, SourceMap | None, list[Issue]]:
    """Like ``load_plan_bytes`` but returns issues instead of raising (collects all of them)."""
    registry = registry or default_registry()
    doc, issues = read_yaml(path, raw, max_bytes=max_bytes, defer_positions=True)
    if doc is None:
        return None, None, issues
    data: dict[str, Any] = doc.data
    raw_steps = data.get("steps") if isinstance(data.get("steps"), list) else []
    findings: list[Finding] = []

    plan: Plan | None = None
    pruned: dict[int, frozenset[str]] = {}
    bad_fields: set[str] = set()
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        bad_fields = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
        findings += pydantic_findings(exc, (), data, step=None, model=Plan)
        for finding in findings:
            _attach_step(finding, raw_steps)

    if plan is not None:
        steps = [(i, s) for i, s in enumerate(plan.steps)]
        graph_input = [(i, s.id, s.needs) for i, s in steps]
        tolerated: set[str] = set()
    else:
        # Keep checking what we can: every step that is valid on its own still gets the
        # semantic and graph checks, so one broken step does not hide the others' problems.
        steps = []
        tolerated = set()
        for i, raw_step in enumerate(raw_steps):
            try:
                steps.append((i, Step.model_validate(raw_step)))
            except ValidationError as exc:
                partial = _partial_step(raw_step, exc)
                if partial is not None:
                    steps.append((i, partial[0]))
                    pruned[i] = partial[1]
                elif isinstance(raw_step, dict) and isinstance(raw_step.get("id"), str):
                    tolerated.add(raw_step["id"])
        graph_input = [(i, s.id, s.needs) for i, s in steps]

    validated: dict[tuple[str | int, ...], BaseModel] = {}
    registry_findings = check_steps(
        steps,
        registry,
        all_ids=[s.id for _, s in steps],
        raw_steps=raw_steps,
        validated=validated,
        pruned=pruned,
    )
    findings += registry_findings
    findings += check_graph(graph_input, tolerated)
    if not any(f.code.startswith("graph.") for f in findings):
        if plan is not None:
            findings += check_plan(plan, raw_steps)
        elif raw_steps and len(steps) == len(raw_steps):
            findings += check_plan(_shadow_plan(data, steps, bad_fields), raw_steps)

    issues = [_to_issue(path, doc.source, f) for f in _dedupe(findings)]
    issues.sort(key=lambda i: (i.line or 0, i.col or 0, i.code))
    if issues or plan is None:
        return None, doc.source, issues
    try:
        return _resolve_defaults(plan, registry, validated), doc.source, []
    except _InputsFailed as exc:
        return None, doc.source, [_to_issue(path, doc.source, exc.finding)]


def _shadow_plan(data: dict[str, Any], steps: list[tuple[int, Step]], bad: set[str]) -> Plan:
    """An unvalidated stand-in for an invalid plan whose every step is (partly) valid.

    Only the parts ``check_plan`` reads, and only those that validated: so the canary stage,
    references and resources are checked even when, say, the title is missing.
    """
    canary = None
    if data.get("canary") is not None and "canary" not in bad:
        with contextlib.suppress(ValidationError):
            canary = Canary.model_validate(data["canary"])
    resources = data.get("resources") if "resources" not in bad else None
    return Plan.model_construct(
        steps=tuple(step for _, step in steps),
        canary=canary,
        resources=tuple(resources) if isinstance(resources, list) else (),
    )


def _partial_step(raw_step: Any, exc: ValidationError) -> tuple[Step, frozenset[str]] | None:
    """The step without its invalid fields, if that is a valid step (else ``None``).

    A step with a bad ``timeout`` still has ``needs`` and an ``action`` worth checking: an
    unknown need next to a typo in a duration must both be reported in one run. The fields'
    own errors were reported already; checks that depend on a dropped field are skipped.
    """
    if not isinstance(raw_step, dict):
        return None
    bad = frozenset(str(err["loc"][0]) for err in exc.errors() if err["loc"])
    if bad & {"id", "action"}:
        return None
    try:
        return Step.model_validate({k: v for k, v in raw_step.items() if k not in bad}), bad
    except ValidationError:
        return None


def _resolve_defaults(
    plan: Plan, registry: ActionRegistry, validated: dict[tuple[str | int, ...], BaseModel]
) -> Plan:
    """Fill in what the plan leaves to defaults, so the digest binds the *effective* plan.

    ``mutates``/``idempotent`` come from the action; ``with`` (and a compensation's ``with``)
    is replaced by the action's validated inputs with every default written out. Omitting a
    default therefore never changes the digest, and changing a default in code does (what runs
    must be what was approved).
    """
    resolved: list[Step] = []
    for index, step in enumerate(plan.steps):
        spec = registry.get(step.action)
        if spec is None:  # pragma: no cover - rejected by check_steps before we get here
            raise PlanError([Issue("<plan>", f"unknown action '{step.action}'", "action.unknown")])
        where = ("steps", index, "with")
        update: dict[str, Any] = {
            "with_": _effective_inputs(spec, step.with_, where, step.id, validated.get(where))
        }
        if step.mutates is None:
            update["mutates"] = spec.mutates
        if step.idempotent is None:
            update["idempotent"] = spec.idempotent
        if isinstance(step.compensate, Compensation):
            comp_spec = registry.get(step.compensate.action)
            if comp_spec is not None:
                comp_where = ("steps", index, "compensate", "with")
                comp_with = _effective_inputs(
                    comp_spec, step.compensate.with_, comp_where, step.id, validated.get(comp_where)
                )
                update["compensate"] = step.compensate.model_copy(update={"with_": comp_with})
        resolved.append(step.model_copy(update=update))
    return plan.model_copy(update={"steps": tuple(resolved)})


class _InputsFailed(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def _effective_inputs(
    spec: ActionSpec,
    inputs: dict[str, Any],
    where: tuple[str | int, ...],
    step_id: str,
    validated: BaseModel | None,
) -> dict[str, Any]:
    try:
        model = validated if validated is not None else spec.inputs.model_validate(inputs)
        return model.model_dump(mode="json", by_alias=True)
    except Exception as exc:  # validated once already: only a broken plugin model gets here
        raise _InputsFailed(
            Finding(
                where,
                "action.plugin_error",
                f"step '{step_id}': the input model of action '{spec.name}' failed: "
                f"{type(exc).__name__}: {exc}",
                step=step_id,
                hint=f"this is a bug in the package that provides '{spec.name}'",
            )
        ) from exc


def _attach_step(finding: Finding, raw_steps: Sequence[Any]) -> None:
    if finding.step is None and len(finding.path) >= 2 and finding.path[0] == "steps":
        index = finding.path[1]
        if isinstance(index, int) and index < len(raw_steps):
            raw = raw_steps[index]
            step_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(step_id, str):
                object.__setattr__(finding, "step", step_id)
                object.__setattr__(finding, "message", f"step '{step_id}': {finding.message}")
            else:
                object.__setattr__(finding, "message", f"step #{index + 1}: {finding.message}")


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[Any, ...]] = set()
    unique: list[Finding] = []
    for f in findings:
        key = (f.path, f.code, f.message)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _to_issue(path: str, source: SourceMap, finding: Finding) -> Issue:
    line, col = source.locate(finding.path, key=finding.on_key)
    field = field_name(finding.path) or None
    return Issue(
        path=path,
        line=line,
        col=col,
        code=finding.code,
        message=finding.message,
        step=finding.step,
        field=field,
        hint=finding.hint,
    )
