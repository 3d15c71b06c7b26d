"""Property: on any DAG, every step runs exactly once, after all its needs, within the cap."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from app.execute.actions.base import ActionResult
from app.execute.runner import RunOptions
from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from


@st.composite
def dags(draw):
    n = draw(st.integers(1, 12))
    steps = []
    for i in range(n):
        needs = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        steps.append((f"s{i}", sorted(f"s{j}" for j in needs)))
    return steps, draw(st.integers(1, 4)), draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))


class Tracking(RecordingAction):
    def __init__(self, yields):
        super().__init__("noop")
        self.yields = yields
        self.active = 0
        self.peak = 0
        self.finished: list[str] = []
        self.started: list[tuple[str, set[str]]] = []

    async def run(self, inputs, ctx):
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.started.append((ctx.step_id, set(self.finished)))
        for _ in range(self.yields[int(ctx.step_id[1:])]):
            await asyncio.sleep(0)
        self.active -= 1
        self.finished.append(ctx.step_id)
        return ActionResult()


@settings(max_examples=40, deadline=None)
@given(dags())
def test_any_dag_runs_each_step_once_after_its_needs(case):
    steps, cap, yields = case
    body = "steps:\n" + "".join(
        f"  - id: {sid}\n    action: noop\n" + (f"    needs: [{', '.join(n)}]\n" if n else "")
        for sid, n in steps
    )
    loaded = plan_from(body)
    action = Tracking(yields)
    with tempfile.TemporaryDirectory() as tmp:
        h = make_runner(Path(tmp), impls(action), options=RunOptions(max_parallel=cap))
        result = asyncio.run(h.runner.run(loaded))
        h.state.close()
    assert result.status == "succeeded"
    assert sorted(action.finished) == sorted(s for s, _ in steps)
    needs = dict(steps)
    for sid, done_before in action.started:
        assert set(needs[sid]) <= done_before
    assert action.peak <= cap
