"""The task graph: unique ids, known ``needs``, no cycles, deterministic topological levels.

Everything here is linear in steps + edges: plans reach 10,000 steps and are checked on every
push, so no quadratic lookups. Cycle detection uses ``graphlib`` from the standard library.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "GraphIssue",
    "Reachability",
    "ancestors",
    "downstream_origins",
    "find_graph_issues",
    "topological_levels",
]


#: "did you mean" suggestions per plan; each costs a scan of every step id
MAX_SUGGESTIONS = 20


class GraphIssue:
    """A graph problem; the loader turns it into a located ``Issue``."""

    __slots__ = ("code", "hint", "index", "message", "need_index", "step")

    def __init__(
        self,
        code: str,
        message: str,
        *,
        step: str | None = None,
        index: int | None = None,
        need_index: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.step = step
        self.index = index
        self.need_index = need_index
        self.hint = hint


def find_graph_issues(
    steps: Sequence[tuple[str, Sequence[str]]], *, known_ids: Iterable[str] = ()
) -> list[GraphIssue]:
    """Check ``(id, needs)`` pairs in plan order. ``known_ids`` are ids that exist but did not
    validate (so a broken step is not reported a second time as an unknown need)."""
    issues: list[GraphIssue] = []
    first_seen: dict[str, int] = {}
    for index, (step_id, _) in enumerate(steps):
        if step_id in first_seen:
            issues.append(
                GraphIssue(
                    "step.duplicate_id",
                    f"step id '{step_id}' is used twice (first by step #{first_seen[step_id] + 1})",
                    step=step_id,
                    index=index,
                    hint="give every step a unique id",
                )
            )
        else:
            first_seen[step_id] = index
    ids = set(first_seen)
    sorted_ids: list[str] | None = None
    suggestions_left = MAX_SUGGESTIONS
    tolerated = set(known_ids)
    edges: dict[str, list[str]] = {}
    for index, (step_id, needs) in enumerate(steps):
        deps: list[str] = []
        for need_index, need in enumerate(needs):
            if need == step_id:
                issues.append(
                    GraphIssue(
                        "graph.cycle",
                        f"step '{step_id}' needs itself",
                        step=step_id,
                        index=index,
                        need_index=need_index,
                    )
                )
            elif need in ids:
                deps.append(need)
            elif need not in tolerated:
                # difflib is O(ids) per call: suggest for the first few only, so a plan with
                # thousands of bad needs is still checked in linear time
                close: list[str] = []
                if suggestions_left > 0:
                    suggestions_left -= 1
                    sorted_ids = sorted_ids or sorted(ids)
                    close = difflib.get_close_matches(need, sorted_ids, n=1)
                issues.append(
                    GraphIssue(
                        "step.unknown_need",
                        f"step '{step_id}' needs unknown step '{need}'",
                        step=step_id,
                        index=index,
                        need_index=need_index,
                        hint=f"did you mean '{close[0]}'?" if close else "list an existing step id",
                    )
                )
        if first_seen.get(step_id) == index:
            edges[step_id] = deps
    sorter = graphlib.TopologicalSorter(edges)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = list(exc.args[1])
        # graphlib reports the cycle against dependency direction; show it as "a needs b"
        cycle.reverse()
        start = min(range(len(cycle) - 1), key=lambda i: first_seen.get(cycle[i], 0))
        ordered = cycle[start:-1] + cycle[:start] + [cycle[start]]
        issues.append(
            GraphIssue(
                "graph.cycle",
                "steps form a cycle: " + " -> ".join(ordered),
                step=ordered[0],
                index=first_seen.get(ordered[0]),
                hint="remove one of these 'needs' entries",
            )
        )
    return issues


def topological_levels(steps: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
    """Group an acyclic graph into levels (a step's level is 1 + its deepest need).

    Within a level, steps keep plan order, so the same plan always gives the same schedule.
    """
    order = {step_id: i for i, (step_id, _) in enumerate(steps)}
    needs = dict(steps)
    sorter = graphlib.TopologicalSorter({s: list(n) for s, n in steps})
    depth: dict[str, int] = {}
    for step_id in sorter.static_order():
        depth[step_id] = 1 + max((depth[n] for n in needs.get(step_id, ())), default=-1)
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step_id in sorted(depth, key=order.__getitem__):
        levels[depth[step_id]].append(step_id)
    return levels


def ancestors(step_id: str, needs: Mapping[str, Sequence[str]]) -> set[str]:
    """Every step that must finish before ``step_id`` (transitive ``needs``)."""
    seen: set[str] = set()
    stack = list(needs.get(step_id, ()))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(needs.get(current, ()))
    return seen


class Reachability:
    """Answers "must ``target`` finish before ``step``?" on an acyclic graph, fast.

    Computing every step's full ancestor set is quadratic (a 10,000-step chain has 50 million
    ancestor pairs). Instead each query walks ``needs`` backwards from ``step`` and prunes every
    node that comes before ``target`` in a topological order, since such a node cannot have
    ``target`` upstream. References almost always name a direct or near need, so a query
    usually touches a handful of nodes.
    """

    def __init__(self, needs: Mapping[str, Sequence[str]]) -> None:
        self._needs = needs
        order = graphlib.TopologicalSorter({s: list(n) for s, n in needs.items()}).static_order()
        self._position = {step_id: i for i, step_id in enumerate(order)}

    def is_upstream(self, target: str, step: str) -> bool:
        position = self._position
        if target not in position or step not in position:
            return False
        floor = position[target]
        if floor >= position[step]:
            return False
        needs = self._needs
        if target in needs.get(step, ()):
            return True
        seen = {step}
        stack = [step]
        while stack:
            for need in needs.get(stack.pop(), ()):
                if need == target:
                    return True
                if need not in seen and position.get(need, -1) > floor:
                    seen.add(need)
                    stack.append(need)
        return False


def downstream_origins(
    sources: Iterable[str], needs: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Every step that (transitively) needs one of ``sources`` → the first such source found.

    One breadth-first walk over reversed edges: linear in steps + edges.
    """
    dependants: dict[str, list[str]] = {}
    for step_id, step_needs in needs.items():
        for need in step_needs:
            dependants.setdefault(need, []).append(step_id)
    origin: dict[str, str] = {}
    queue = [(source, source) for source in sources]
    while queue:
        next_queue: list[tuple[str, str]] = []
        for node, source in queue:
            for child in dependants.get(node, ()):
                if child not in origin:
                    origin[child] = source
                    next_queue.append((child, source))
        queue = next_queue
    return origin
