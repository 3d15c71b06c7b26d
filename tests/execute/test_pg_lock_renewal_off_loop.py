"""The PostgreSQL lock renewal runs off the event loop: a blocked database cannot stall the steps.

Against the real PostgreSQL of ``tests/pgcluster.py``. Another transaction (a second "host")
holds the row of our lock (``SELECT ... FOR UPDATE``) while a step runs, so the heartbeat's
renewal ``UPDATE`` waits inside PostgreSQL. The blocker lets go only once the running step has
made progress *and* hit its own ``timeout``: if the renewal ran on the event loop, neither could
happen while it waits (the loop is blocked), the blocker would give up after its grace period
and the recorded order would show the renewal finishing first. Ordering, not timing, is
asserted.
"""

from __future__ import annotations

import asyncio
import threading

import psycopg

from app.execute.state_pg import PostgresStateStore
from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from, shell_step

#: how long the blocker holds the row if nothing releases it (only reached on failure)
GRACE = 10.0


def test_blocked_pg_renewal_does_not_delay_a_running_steps_progress_or_timeout(pg_url, tmp_path):
    order: list[str] = []
    lock_row = threading.Event()  # the step asks the blocker to take the row
    row_locked = threading.Event()
    renewing = threading.Event()
    step_done = threading.Event()

    def blocker() -> None:
        lock_row.wait(GRACE)
        with psycopg.connect(pg_url) as conn:  # a transaction: the row lock lasts until commit
            conn.execute("SELECT * FROM plangate_locks WHERE resource = 'db/orders' FOR UPDATE")
            row_locked.set()
            step_done.wait(GRACE)
            order.append("blocker released")

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()

    started = asyncio.Event()

    class Busy(RecordingAction):
        async def run(self, inputs, ctx):
            lock_row.set()
            while not row_locked.is_set():
                await asyncio.sleep(0.01)
            started.set()  # now the heartbeat renews, and its UPDATE waits for the row
            while not renewing.is_set():
                await asyncio.sleep(0.01)
            for _ in range(5):  # progress: the loop keeps scheduling this step
                await asyncio.sleep(0.01)
            order.append("step progressed")
            try:
                await asyncio.sleep(3600)  # until its own 1 s timeout cancels it
            except asyncio.CancelledError:
                order.append("step timed out")
                step_done.set()
                raise
            raise AssertionError("unreachable")

    beats = 0

    async def heartbeat(_seconds: float) -> None:
        nonlocal beats
        beats += 1
        if beats == 1:  # the first renewal starts once the row is held by the other host
            await started.wait()
            return
        await asyncio.Event().wait()

    loaded = plan_from(
        "resources: [db/orders]\nsteps:\n"
        + shell_step("a", compensate=False, retry="{max_attempts: 1}", extra="    timeout: 1s\n")
    )
    h = make_runner(
        tmp_path, impls(Busy("shell")), open_state=lambda _d: PostgresStateStore(pg_url)
    )
    locks = h.runner.locks
    renew = locks.renew

    def recording_renew(holder: str) -> int:
        order.append("renewal started")
        renewing.set()
        held = renew(holder)
        order.append("renewal finished")
        return held

    locks.renew = recording_renew  # type: ignore[method-assign]
    h.runner.heartbeat_sleep = heartbeat
    try:
        result = asyncio.run(h.runner.run(loaded))
        left = locks.holders()
    finally:
        step_done.set()
        thread.join(GRACE)
        h.runner.state.close()
    assert order[:3] == ["renewal started", "step progressed", "step timed out"]
    assert order.index("renewal finished") > order.index("blocker released")
    assert "did not finish within 1s" in (result.steps["a"].error or "")
    assert left == []  # released at the end, not resurrected by the late renewal


def test_renew_async_pushes_the_lease_like_renew(pg_url):
    store = PostgresStateStore(pg_url)
    clock = [1000.0]
    try:
        locks = store.lock_manager(now=lambda: clock[0], sleep=asyncio.sleep, lease=60.0)
        assert locks.try_acquire(["db/orders"], "run-1", "plan") == []
        clock[0] += 50.0
        assert asyncio.run(locks.renew_async("run-1")) == 1
        (held,) = locks.holders()
        assert held.expires_at == 1110.0
        assert asyncio.run(locks.renew_async("run-2")) == 0  # holds nothing
    finally:
        store.close()


def test_pg_lock_skew_delays_a_takeover(pg_url):
    store = PostgresStateStore(pg_url)
    clock = [1000.0]
    try:
        locks = store.lock_manager(now=lambda: clock[0], sleep=asyncio.sleep, lease=60.0, skew=30.0)
        assert locks.try_acquire(["db/orders"], "run-a", "plan-a") == []
        clock[0] += 60.0 + 29.0
        (held,) = locks.try_acquire(["db/orders"], "run-b", "plan-b")
        assert held.holder == "run-a"
        clock[0] += 2.0
        assert locks.try_acquire(["db/orders"], "run-b", "plan-b") == []
    finally:
        store.close()
