"""Structured predicates evaluated in plain Python: no ``eval``, no expression language.

A ``Predicate`` (app.policy.model) is compiled once per policy set into two lists of small
checks: plan-level checks (environment, team, paths, resources, risk, ...) and step-level checks
(actions, hosts, commands, mutating, ...). Globs are ``fnmatch`` patterns compiled to regular
expressions once (``*`` also matches ``/``). Each check returns a bool; the engine writes the
reason, so predicates stay tiny and fast (the benchmark runs 200 rules x 1,000 plans).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from urllib.parse import urlsplit

from app.plan.model import Compensation, Plan, Step
from app.policy.model import LEVELS, Predicate

__all__ = [
    "CompiledPredicate",
    "PlanFacts",
    "StepFacts",
    "compensation_facts",
    "compile_predicate",
    "glob_any",
    "judged_facts",
    "plan_facts",
    "step_facts",
]


@lru_cache(maxsize=4096)
def _glob_re(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def glob_any(patterns: Sequence[str], values: Iterable[str]) -> bool:
    """True when any value matches any glob (case-sensitive)."""
    rx = _glob_re(tuple(patterns))
    return any(rx.match(v) for v in values)


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What step-level predicates look at, extracted once per step."""

    id: str
    action: str
    mutating: bool
    compensated: bool
    host: str | None
    command: str | None


@dataclass(frozen=True, slots=True)
class PlanFacts:
    """What plan-level predicates look at, extracted once per evaluation."""

    plan_id: str
    environment: str
    team: str
    author: str | None
    paths: tuple[str, ...]
    resources: tuple[str, ...]
    risk_index: int
    money: Decimal
    canary: bool
    max_parallel: int | None
    steps: tuple[StepFacts, ...]


def _host(url: object) -> str | None:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return None  # a ${{ }} reference: unknown until run time, so never allow-listed
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _target(action: str, inputs: dict) -> tuple[str | None, str | None]:
    """The URL host (http, probe) or program (shell) an action's inputs point at."""
    host: str | None = None
    command: str | None = None
    if action == "http":
        host = _host(inputs.get("url"))
    elif action == "probe":
        for source in ("http", "prometheus"):
            if isinstance(inputs.get(source), dict):
                host = _host(inputs[source].get("url"))
    elif action == "shell":
        run = inputs.get("run")
        if isinstance(run, list) and run and isinstance(run[0], str):
            command = run[0]
    return host, command


def step_facts(step: Step) -> StepFacts:
    host, command = _target(step.action, step.with_)
    return StepFacts(
        id=step.id,
        action=step.action,
        # an unresolved ``mutates`` (plan not loaded through the loader) counts as mutating
        mutating=step.mutates is not False,
        compensated=isinstance(step.compensate, Compensation),
        host=host,
        command=command,
    )


def compensation_facts(step: Step) -> StepFacts | None:
    """A step's undo action, judged like a step of its own (id ``<step>/compensate``).

    Why: otherwise a shell command or an unlisted host could hide in a compensation. It counts
    as mutating and as compensated (it *is* the undo), and adds nothing to the risk score.
    """
    comp = step.compensate
    if not isinstance(comp, Compensation):
        return None
    host, command = _target(comp.action, comp.with_)
    return StepFacts(
        id=f"{step.id}/compensate",
        action=comp.action,
        mutating=True,
        compensated=True,
        host=host,
        command=command,
    )


def judged_facts(steps: Iterable[Step]) -> tuple[StepFacts, ...]:
    """Steps followed by their compensation, in plan order: what rules are applied to."""
    out: list[StepFacts] = []
    for step in steps:
        out.append(step_facts(step))
        comp = compensation_facts(step)
        if comp is not None:
            out.append(comp)
    return tuple(out)


def plan_facts(
    plan: Plan,
    *,
    author: str | None,
    paths: tuple[str, ...],
    risk_level: str,
    money: Decimal,
    steps: tuple[StepFacts, ...] | None = None,
) -> PlanFacts:
    return PlanFacts(
        plan_id=plan.id,
        environment=plan.environment,
        team=plan.team,
        author=author,
        paths=paths,
        resources=tuple(plan.resources),
        risk_index=LEVELS.index(risk_level),  # type: ignore[arg-type]
        money=money,
        canary=plan.canary is not None,
        max_parallel=plan.max_parallel,
        steps=steps if steps is not None else tuple(step_facts(s) for s in plan.steps),
    )


PlanCheck = Callable[[PlanFacts], bool]
StepCheck = Callable[[StepFacts], bool]


def _names(patterns: list[str], attr: str) -> PlanCheck:
    rx = _glob_re(tuple(patterns))

    def check(f: PlanFacts) -> bool:
        value = getattr(f, attr)
        return value is not None and bool(rx.match(value))  # unknown (None) never matches

    return check


def _step_names(patterns: list[str], attr: str) -> StepCheck:
    rx = _glob_re(tuple(patterns))

    def check(s: StepFacts) -> bool:
        value = getattr(s, attr)
        return value is not None and bool(rx.match(value))

    return check


@dataclass(frozen=True, slots=True)
class CompiledPredicate:
    """A predicate as two lists of checks; ``step_level`` says whether it applies per step."""

    plan_checks: tuple[PlanCheck, ...]
    step_checks: tuple[StepCheck, ...]

    @property
    def step_level(self) -> bool:
        return bool(self.step_checks)

    def plan_holds(self, facts: PlanFacts) -> bool:
        return all(check(facts) for check in self.plan_checks)

    def step_holds(self, step: StepFacts) -> bool:
        return all(check(step) for check in self.step_checks)

    def matching_steps(self, facts: PlanFacts) -> list[StepFacts]:
        return [s for s in facts.steps if self.step_holds(s)]

    def holds(self, facts: PlanFacts) -> bool:
        """Plan-level checks hold and (if step-level) at least one step matches."""
        if not self.plan_holds(facts):
            return False
        return not self.step_checks or any(self.step_holds(s) for s in facts.steps)


def compile_predicate(pred: Predicate) -> CompiledPredicate:
    plan: list[PlanCheck] = []
    step: list[StepCheck] = []
    if pred.environment is not None:
        plan.append(_names(pred.environment, "environment"))
    if pred.team is not None:
        plan.append(_names(pred.team, "team"))
    if pred.plans is not None:
        plan.append(_names(pred.plans, "plan_id"))
    if pred.author is not None:
        plan.append(_names(pred.author, "author"))
    if pred.paths is not None:
        rx = _glob_re(tuple(pred.paths))
        plan.append(lambda f: any(rx.match(p) for p in f.paths))
    if pred.resources is not None:
        rx_r = _glob_re(tuple(pred.resources))
        plan.append(lambda f: any(rx_r.match(r) for r in f.resources))
    if pred.risk is not None:
        level = LEVELS.index(pred.risk.at_least)
        plan.append(lambda f: f.risk_index >= level)
    if pred.cost is not None:
        floor = pred.cost.at_least
        plan.append(lambda f: f.money >= floor)
    if pred.canary is not None:
        want = pred.canary
        plan.append(lambda f: f.canary is want)
    if pred.parallelism is not None:
        above = pred.parallelism.above
        plan.append(lambda f: f.max_parallel is not None and f.max_parallel > above)
    if pred.steps is not None:
        step.append(_step_names(pred.steps, "id"))
    if pred.actions is not None:
        step.append(_step_names(pred.actions, "action"))
    if pred.hosts is not None:
        step.append(_step_names(pred.hosts, "host"))
    if pred.commands is not None:
        step.append(_step_names(pred.commands, "command"))
    if pred.mutating is not None:
        want_m = pred.mutating
        step.append(lambda s: s.mutating is want_m)
    if pred.compensated is not None:
        want_c = pred.compensated
        step.append(lambda s: s.compensated is want_c)
    return CompiledPredicate(tuple(plan), tuple(step))
