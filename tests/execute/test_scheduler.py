from __future__ import annotations

import asyncio

from app.execute.actions.base import ActionResult
from app.execute.runner import RunOptions
from app.execute.scheduler import ReadyQueue, Schedule, effective_needs
from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from


def _noop(sid: str, needs=(), extra: str = "") -> str:
    n = f"    needs: [{', '.join(needs)}]\n" if needs else ""
    return f"  - id: {sid}\n    action: noop\n{n}{extra}"


def test_levels_and_critical_path_are_deterministic():
    loaded = plan_from(
        "steps:\n"
        + _noop("a", extra="    timeout: 10s\n")
        + _noop("b", extra="    timeout: 50s\n")
        + _noop("c", ["a", "b"], extra="    timeout: 5s\n")
        + _noop("d", ["a"], extra="    estimate: {runner_minutes: 2}\n")
    )
    s = Schedule.of(loaded.plan)
    assert s.levels == [["a", "b"], ["c", "d"]]
    assert s.critical_path == ["a", "d"]
    assert s.critical_seconds == 130.0
    assert Schedule.of(loaded.plan).render(loaded.plan) == s.render(loaded.plan)
    assert "Critical path (130s" in s.render(loaded.plan)


def test_ready_queue_keeps_plan_order_and_blocks_downstream():
    q = ReadyQueue(["x", "a", "b", "c"], {"b": ["a"], "c": ["b"]})
    assert q.pop() == "x"
    assert q.pop() == "a"
    assert q.pop() is None
    assert q.block("b") == {"b", "c"}
    q.done("a")
    assert q.pop() is None


def test_canary_gate_makes_other_steps_wait_for_analysis():
    loaded = plan_from(
        "canary: {steps: [canary], analysis: [judge]}\nsteps:\n"
        + _noop("prep")
        + _noop("canary", ["prep"])
        + "  - id: judge\n    action: probe\n    needs: [canary]\n    with:\n"
        "      metric: error_rate\n      http: {url: 'https://m.example/x', json_path: v}\n"
        "      thresholds: {max_error_rate: 0.1}\n" + _noop("rest", ["prep"])
    )
    needs = effective_needs(loaded.plan)
    assert needs["rest"] == ("prep", "judge")
    assert needs["canary"] == ("prep",)


class _Gauge(RecordingAction):
    """Tracks the peak number of concurrent calls; ``gates`` hold steps until released."""

    def __init__(self):
        super().__init__("noop")
        self.active = 0
        self.peak = 0
        self.order: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def run(self, inputs, ctx):
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.order.append(ctx.step_id)
        gate = self.gates.get(ctx.step_id)
        if gate is not None:
            await gate.wait()
        for _ in range(3):
            await asyncio.sleep(0)
        self.active -= 1
        return ActionResult(outputs={})


def test_parallelism_is_bounded(tmp_path):
    loaded = plan_from("steps:\n" + "".join(_noop(f"s{i}") for i in range(10)))
    gauge = _Gauge()
    h = make_runner(tmp_path, impls(gauge), options=RunOptions(max_parallel=3))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "succeeded"
    assert gauge.peak == 3
    assert gauge.order == [f"s{i}" for i in range(10)]


def test_step_starts_as_soon_as_its_needs_are_done(tmp_path):
    # 'slow' is held until 'after-fast' has started: that can only happen if 'after-fast'
    # does not wait for the whole level containing 'slow'
    loaded = plan_from("steps:\n" + _noop("slow") + _noop("fast") + _noop("after-fast", ["fast"]))
    gauge = _Gauge()
    release = asyncio.Event()
    gauge.gates["slow"] = release

    original = gauge.run

    async def run(inputs, ctx):
        if ctx.step_id == "after-fast":
            release.set()
        return await original(inputs, ctx)

    gauge.run = run  # type: ignore[method-assign]
    h = make_runner(tmp_path, impls(gauge))
    result = asyncio.run(asyncio.wait_for(h.runner.run(loaded), 30))
    assert result.status == "succeeded"
    assert gauge.order == ["slow", "fast", "after-fast"]
