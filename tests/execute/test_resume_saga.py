from __future__ import annotations

import asyncio

from app.execute.ports import StaticPolicy
from app.execute.runner import RunOptions
from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from, shell_step


def _plan():
    return plan_from("steps:\n" + shell_step("a") + shell_step("b", ["a"]) + shell_step("c", ["b"]))


def _crashed_during_saga(tmp_path, open_state, loaded, *, undo_b: str):
    """a and b completed, c failed, the saga undid b (or was inside undoing it) and died."""
    s = open_state(tmp_path)
    d = loaded.digest
    s.start_run(d, "run-1", loaded.plan.id, loaded.path, 1.0)
    for n, sid in enumerate(("a", "b"), 1):
        s.begin_attempt(d, "step", sid, 1, "k", float(n))
        s.complete_step(d, "step", sid, 1, {}, {}, float(n))
    s.begin_attempt(d, "step", "c", 1, "k", 3.0)
    s.fail_attempt(d, "step", "c", 1, "boom", "boom", 3.0)
    s.fail_step(d, "step", "c", "failed", "boom", 3.0)
    s.finish_run(d, "compensating", "step 'c' failed: boom", 4.0)
    s.begin_attempt(d, "compensate", "b", 1, "k", 5.0)
    if undo_b == "done":
        s.complete_step(d, "compensate", "b", 1, {}, {}, 6.0)
    s.close()


def test_a_saga_interrupted_by_a_crash_resumes_where_it_stopped(tmp_path, open_state):
    loaded = _plan()
    _crashed_during_saga(tmp_path, open_state, loaded, undo_b="done")
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert [c.inputs["run"] for c in shell.calls] == [["undo", "a"]]  # b's undo is not repeated
    assert [(c.step_id, c.status) for c in result.compensations] == [
        ("b", "skipped"),
        ("a", "succeeded"),
    ]


def test_an_interrupted_non_idempotent_compensation_needs_a_human(tmp_path, open_state):
    loaded = _plan()
    _crashed_during_saga(tmp_path, open_state, loaded, undo_b="running")
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "needs_attention"
    assert "compensation of step 'b' (attempt 1) was interrupted" in result.reason
    assert shell.calls == []
    # told to retry it, the saga continues: b's undo again (attempt 2), then a's
    h.runner.options = RunOptions(resolve_interrupted={"b": "retry"})
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert [c.inputs["run"] for c in shell.calls] == [["undo", "b"], ["undo", "a"]]
    assert shell.calls[0].key == f"{loaded.digest}:b:compensate"
    assert shell.calls[0].attempt == 2


def test_policy_can_cap_parallelism(tmp_path, open_state):
    loaded = plan_from("max_parallel: 8\nsteps:\n" + shell_step("a"))
    h = make_runner(
        tmp_path, impls(), policy=StaticPolicy(max_parallel=2), options=RunOptions(max_parallel=5)
    )
    assert h.runner.max_parallel(loaded.plan) == 2
    h2 = make_runner(tmp_path, open_state=open_state, implementations=impls())
    assert h2.runner.max_parallel(loaded.plan) == 8


def test_lease_is_renewed_while_the_run_is_alive(tmp_path, open_state):
    loaded = plan_from("resources: [r1]\nsteps:\n" + shell_step("a"))
    beats = []

    class Slow(RecordingAction):
        async def run(self, inputs, ctx):
            for _ in range(50):
                await asyncio.sleep(0)
            return await super().run(inputs, ctx)

    h = make_runner(tmp_path, open_state=open_state, implementations=impls(Slow("shell")))

    async def beat(seconds: float) -> None:
        beats.append(seconds)
        h.clock.t += seconds
        await asyncio.sleep(0)

    h.runner.heartbeat_sleep = beat
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    assert beats and beats[0] == 20.0  # lease / 3
    assert h.runner.locks.holders() == []


def test_a_failed_step_is_never_retried_by_a_rerun(tmp_path, open_state):
    loaded = _plan()
    s = open_state(tmp_path)
    d = loaded.digest
    s.start_run(d, "run-1", loaded.plan.id, loaded.path, 1.0)
    s.begin_attempt(d, "step", "a", 1, "k", 1.0)
    s.complete_step(d, "step", "a", 1, {}, {}, 1.0)
    s.begin_attempt(d, "step", "b", 1, "k", 2.0)
    s.fail_attempt(d, "step", "b", 1, "boom", "boom", 2.0)
    s.fail_step(d, "step", "b", "failed", "boom", 2.0)  # ... and the process died here
    s.close()
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert "step 'b' failed: boom" in result.reason
    assert [c.inputs["run"] for c in shell.calls] == [["undo", "a"]]


def test_a_lost_lease_pauses_before_the_next_step(tmp_path, open_state):
    loaded = plan_from("resources: [r1]\nsteps:\n" + shell_step("a") + shell_step("b", ["a"]))
    h = make_runner(tmp_path, open_state=open_state, implementations=impls())
    beat = asyncio.Event()

    class StallThenSteal(RecordingAction):
        async def run(self, inputs, ctx):
            if ctx.step_id == "a":
                # we stall past the lease; another run takes the expired resource
                h.clock.t += 120
                assert h.runner.locks.try_acquire(["r1"], "thief", "other") == []
                beat.set()
                for _ in range(20):
                    await asyncio.sleep(0)
            return await super().run(inputs, ctx)

    shell = StallThenSteal("shell")
    h.runner.implementations = impls(shell)

    async def heartbeat(_: float) -> None:
        await beat.wait()
        beat.clear()

    h.runner.heartbeat_sleep = heartbeat
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "paused"
    assert "lease on the plan's resources was lost before step 'b'" in result.reason
    assert shell.steps() == ["a"]
    assert "lock.lost" in h.events.types()
    assert [x.holder for x in h.runner.locks.holders()] == ["thief"]  # ours only were released
