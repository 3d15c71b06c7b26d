"""The schedule of a plan: effective dependencies, ready order, levels and critical path. Pure.

Deterministic on purpose: the same plan always produces the same schedule. Ready steps start
in plan order (ties broken by the step's index in the file), so two runs of one plan start
steps in the same order whenever their timings allow.

The canary stage is expressed as dependencies: every step outside the stage (the canary steps,
the analysis probes and everything they need) implicitly needs every analysis probe, so it can
only start once the canary was judged good.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.plan.graph import ancestors, topological_levels
from app.plan.model import Plan, Step

__all__ = ["ReadyQueue", "Schedule", "canary_stage", "effective_needs", "step_duration"]


def canary_stage(plan: Plan) -> set[str]:
    """Canary steps, analysis probes and everything they (transitively) need."""
    if plan.canary is None:
        return set()
    needs = {s.id: s.needs for s in plan.steps}
    stage = set(plan.canary.steps) | set(plan.canary.analysis)
    for step_id in list(stage):
        stage |= ancestors(step_id, needs)
    return stage


def effective_needs(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Declared ``needs`` plus the canary gate (non-stage steps need every analysis probe)."""
    needs = {s.id: tuple(s.needs) for s in plan.steps}
    if plan.canary is None:
        return needs
    stage = canary_stage(plan)
    gate = tuple(plan.canary.analysis)
    for step in plan.steps:
        if step.id not in stage:
            needs[step.id] = needs[step.id] + tuple(a for a in gate if a not in step.needs)
    return needs


def step_duration(step: Step) -> float:
    """Expected duration for the critical path: the estimate if any, else the timeout."""
    if step.estimate.runner_minutes:
        return step.estimate.runner_minutes * 60.0
    return step.timeout


@dataclass(frozen=True, slots=True)
class Schedule:
    levels: list[list[str]]
    critical_path: list[str]
    critical_seconds: float
    needs: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, plan: Plan) -> Schedule:
        needs = effective_needs(plan)
        order = [s.id for s in plan.steps]
        levels = topological_levels([(sid, needs[sid]) for sid in order])
        index = plan.step_index()
        finish: dict[str, float] = {}
        via: dict[str, str | None] = {}
        for level in levels:
            for sid in level:
                best, best_need = 0.0, None
                for need in needs[sid]:
                    if finish[need] > best:  # strict: ties keep the earlier need (plan order)
                        best, best_need = finish[need], need
                finish[sid] = best + step_duration(index[sid])
                via[sid] = best_need
        end: str | None = None
        if order:
            end = order[max(range(len(order)), key=lambda i: (finish[order[i]], -i))]
        path: list[str] = []
        while end is not None:
            path.append(end)
            end = via[end]
        path.reverse()
        return cls(levels, path, finish[path[-1]] if path else 0.0, needs)

    def render(self, plan: Plan) -> str:
        index = plan.step_index()
        lines = [f"Schedule of plan {plan.id} ({len(plan.steps)} steps, {len(self.levels)} levels)"]
        for n, level in enumerate(self.levels):
            lines.append(f"  level {n}: " + ", ".join(level))
        lines.append(
            f"Critical path ({self.critical_seconds:g}s by estimate or timeout): "
            + " -> ".join(f"{s} ({step_duration(index[s]):g}s)" for s in self.critical_path)
        )
        return "\n".join(lines)


class ReadyQueue:
    """Which steps may start now: a min-heap of ready steps keyed by plan order.

    ``done(step)`` releases its dependants; ``block(step)`` removes it and every step that
    (transitively) needs it from consideration. Linear in steps + edges over a whole run.
    """

    def __init__(self, order: Iterable[str], needs: Mapping[str, Iterable[str]]) -> None:
        self._index = {sid: i for i, sid in enumerate(order)}
        self._missing: dict[str, int] = {}
        self._dependants: dict[str, list[str]] = {sid: [] for sid in self._index}
        for sid in self._index:
            deps = list(needs.get(sid, ()))
            self._missing[sid] = len(deps)
            for d in deps:
                self._dependants[d].append(sid)
        self._heap = [(i, sid) for sid, i in self._index.items() if self._missing[sid] == 0]
        heapq.heapify(self._heap)
        self.blocked: set[str] = set()

    def pop(self) -> str | None:
        while self._heap:
            _, sid = heapq.heappop(self._heap)
            if sid not in self.blocked:
                return sid
        return None

    def __bool__(self) -> bool:
        return any(sid not in self.blocked for _, sid in self._heap)

    def done(self, step_id: str) -> None:
        for child in self._dependants[step_id]:
            self._missing[child] -= 1
            if self._missing[child] == 0 and child not in self.blocked:
                heapq.heappush(self._heap, (self._index[child], child))

    def block(self, step_id: str) -> set[str]:
        """Hold back ``step_id`` and everything downstream of it; returns what was newly held."""
        newly: set[str] = set()
        stack = [step_id]
        while stack:
            sid = stack.pop()
            if sid in self.blocked:
                continue
            self.blocked.add(sid)
            newly.add(sid)
            stack.extend(self._dependants[sid])
        return newly
