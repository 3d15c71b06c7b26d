from __future__ import annotations

import asyncio

import pytest

from app.execute.locks import LockBusy
from app.execute.runner import RunOptions
from tests.execute.fakes import (
    FakeClock,
    RecordingAction,
    fail,
    impls,
    make_runner,
    plan_from,
    shell_step,
)


def _chain(idempotent_b: bool = False):
    extra = "    idempotent: true\n" if idempotent_b else ""
    return plan_from(
        "resources: [db/orders]\nsteps:\n"
        + shell_step("a")
        + shell_step("b", ["a"], extra=extra)
        + shell_step("c", ["b"])
    )


def _interrupt_b(tmp_path, open_state, loaded):
    """Simulate a crash while 'b' ran: 'a' completed, 'b' has an attempt left 'running'."""
    state = open_state(tmp_path)
    state.start_run(loaded.digest, "run-1", loaded.plan.id, loaded.path, 1.0)
    state.begin_attempt(loaded.digest, "step", "a", 1, "k", 1.0)
    state.complete_step(loaded.digest, "step", "a", 1, {"done": "a"}, {}, 2.0)
    state.begin_attempt(loaded.digest, "step", "b", 1, "k", 3.0)
    state.close()


def test_resume_skips_completed_and_retries_interrupted_idempotent_step(tmp_path, open_state):
    loaded = _chain(idempotent_b=True)
    _interrupt_b(tmp_path, open_state, loaded)
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "succeeded" and result.resumed
    assert shell.steps() == ["b", "c"]
    assert shell.calls[0].attempt == 2  # attempt numbers continue ...
    assert shell.calls[0].key == f"{loaded.digest}:b"  # ... under the same idempotency key
    assert result.steps["a"].status == "skipped"
    statuses = [(a.step_id, a.attempt, a.status) for a in h.state.attempts(loaded.digest)]
    assert ("b", 1, "interrupted") in statuses and ("b", 2, "succeeded") in statuses


def test_interrupted_non_idempotent_step_needs_a_human(tmp_path, open_state):
    loaded = _chain()
    _interrupt_b(tmp_path, open_state, loaded)
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "needs_attention"
    assert "step 'b' (attempt 1) was interrupted and is not idempotent" in result.reason
    assert "--mark-done b" in result.reason and "--retry-step b" in result.reason
    assert shell.calls == []
    # the human says it took effect: b is done, only c runs
    h.runner.options = RunOptions(resolve_interrupted={"b": "done"})
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "succeeded"
    assert shell.steps() == ["c"]


def test_retry_step_resolution_runs_it_again(tmp_path, open_state):
    loaded = _chain()
    _interrupt_b(tmp_path, open_state, loaded)
    shell = RecordingAction("shell")
    h = make_runner(
        tmp_path,
        open_state=open_state,
        implementations=impls(shell),
        options=RunOptions(resolve_interrupted={"b": "retry"}),
    )
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    assert shell.steps() == ["b", "c"]


def test_a_finished_run_is_not_run_again(tmp_path, open_state):
    loaded = _chain()
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    again = asyncio.run(h.runner.run(loaded))
    assert again.status == "succeeded" and "nothing ran" in again.warnings[0]
    assert shell.steps() == ["a", "b", "c"]


def test_every_attempt_is_recorded_before_it_runs(tmp_path, open_state):
    loaded = _chain()
    seen = []

    class Peek(RecordingAction):
        async def run(self, inputs, ctx):
            rows = open_state(tmp_path).running_attempts(ctx.plan_digest)
            seen.append([(r.step_id, r.attempt) for r in rows])
            return await super().run(inputs, ctx)

    peek = Peek("shell", script={"b": [fail("flaky")]})
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(peek))
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    assert seen == [[("a", 1)], [("b", 1)], [("b", 2)], [("c", 1)]]
    # a retry is the same logical operation: same idempotency key, next attempt number
    b_calls = [(c.attempt, c.key) for c in peek.calls if c.step == "b"]
    assert b_calls == [(1, f"{loaded.digest}:b"), (2, f"{loaded.digest}:b")]


def test_hanging_step_is_cancelled_at_its_timeout(tmp_path, open_state):
    loaded = plan_from(
        "steps:\n" + shell_step("slow", extra="    timeout: 10ms\n", retry="{max_attempts: 2}")
    )
    shell = RecordingAction("shell", hang={"slow"})

    async def go():
        h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
        return await h.runner.run(loaded)

    result = asyncio.run(go())
    assert result.status == "compensated"
    assert result.steps["slow"].error_kind == "timeout"
    assert shell.cancelled == ["slow", "slow"]


# -- locks ---------------------------------------------------------------------------------


def test_lock_contention_fail_fast(tmp_path, open_state):
    loaded = _chain()
    gate = asyncio.Event()

    class Holding(RecordingAction):
        async def run(self, inputs, ctx):
            if ctx.step_id == "a":
                await gate.wait()
            return await super().run(inputs, ctx)

    async def go():
        first = make_runner(
            tmp_path, open_state=open_state, implementations=impls(Holding("shell")), run_id="run-1"
        )
        other = plan_from(
            "resources: [cache/x, db/orders]\nsteps:\n" + shell_step("z"), plan_id="other"
        )
        second_shell = RecordingAction("shell")
        second = make_runner(
            tmp_path, open_state=open_state, implementations=impls(second_shell), run_id="run-2"
        )
        task = asyncio.create_task(first.runner.run(loaded))
        while not first.state.attempts(loaded.digest):
            await asyncio.sleep(0)
        refused = await second.runner.run(other)
        gate.set()
        done = await task
        after = await second.runner.run(other)
        return refused, done, after, second_shell

    refused, done, after, second_shell = asyncio.run(go())
    assert refused.status == "refused"
    assert "'db/orders' is held by plan test-plan (run run-1" in refused.reason
    assert done.status == "succeeded"
    assert after.status == "succeeded"  # released on exit
    assert second_shell.steps() == ["z"]


def test_lock_wait_mode_waits_for_the_holder(tmp_path, open_state):
    clock = FakeClock()
    state = open_state(tmp_path)
    m = state.lock_manager(now=clock, sleep=clock.sleep, lease=60)
    assert m.try_acquire(["r"], "holder-1", "p1") == []
    waits = []

    async def go():
        async def release_later():
            while not waits:
                await asyncio.sleep(0)
            m.release("holder-1")

        releaser = asyncio.create_task(release_later())
        await m.acquire(
            ["r"], "holder-2", "p2", wait=True, wait_timeout=100, poll=1, on_wait=waits.append
        )
        await releaser

    asyncio.run(go())
    assert [h.holder for h in m.holders()] == ["holder-2"]
    assert waits[0][0].holder == "holder-1"


def test_lock_wait_times_out(tmp_path, open_state):
    clock = FakeClock()
    m = open_state(tmp_path).lock_manager(now=clock, sleep=clock.sleep, lease=600)
    m.try_acquire(["r"], "h1", "p1")
    with pytest.raises(LockBusy, match="'r' is held by plan p1"):
        asyncio.run(m.acquire(["r"], "h2", "p2", wait=True, wait_timeout=30, poll=5))


def test_orphaned_lock_expires_with_its_lease(tmp_path, open_state):
    clock = FakeClock()
    m = open_state(tmp_path).lock_manager(now=clock, sleep=clock.sleep, lease=60)
    assert m.try_acquire(["a", "b"], "dead-holder", "p1") == []
    assert [c.holder for c in m.try_acquire(["b"], "h2", "p2")] == ["dead-holder"]
    clock.t += 30
    m.renew("dead-holder")  # a live holder renews ...
    clock.t += 45
    assert m.try_acquire(["b"], "h2", "p2") != []  # ... so it still holds
    clock.t += 16  # ... but it died and stopped renewing: the lease ran out
    assert m.try_acquire(["b"], "h2", "p2") == []


def test_locks_are_all_or_nothing(tmp_path, open_state):
    clock = FakeClock()
    m = open_state(tmp_path).lock_manager(now=clock, sleep=clock.sleep)
    m.try_acquire(["b"], "h1", "p1")
    assert m.try_acquire(["a", "b"], "h2", "p2") != []
    assert [h.resource for h in m.holders()] == ["b"]


def test_locks_released_when_the_run_crashes(tmp_path, open_state):
    loaded = _chain()

    class Crash(RecordingAction):
        async def run(self, inputs, ctx):
            raise KeyboardInterrupt

    h = make_runner(tmp_path, open_state=open_state, implementations=impls(Crash("shell")))
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(h.runner.run(loaded))
    assert h.runner.locks.holders() == []


def test_a_newer_state_database_is_refused(tmp_path):
    import sqlite3

    from app.errors import InputError
    from app.execute.state import StateStore

    StateStore.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(InputError, match="schema version 99"):
        StateStore.open(tmp_path)


def test_a_newer_postgres_state_schema_is_refused(pg_url):
    import psycopg

    from app.errors import InputError
    from app.execute.state_pg import PostgresStateStore

    PostgresStateStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE plangate_schema SET version=99 WHERE component='state'")
    with pytest.raises(InputError, match="the state schema has version 99; this plangate knows 1"):
        PostgresStateStore(pg_url)
