"""The git-ref lock renewal runs off the event loop: a slow GitHub cannot stall the steps.

The renewal is a few blocking HTTP calls (commit, then the compare-and-swap of the ref) made
while steps run. Here the fake GitHub holds the renewal's ref update until the running step has
made progress *and* hit its own ``timeout``: if the renewal ran on the event loop, neither could
happen while it waits (the loop is blocked), the fake would give up after its grace period and
the recorded order would show the renewal finishing first. Ordering, not timing, is asserted.
"""

from __future__ import annotations

import asyncio
import threading

from app.execute.github_locks import Lease, lock_ref
from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from, shell_step
from tests.execute.test_github_locks import hub, lease_of, runner_locks  # noqa: F401 (fixture)

#: how long the fake holds the ref update if nothing releases it (only reached on failure)
GRACE = 10.0


def test_slow_renewal_does_not_delay_a_running_steps_progress_or_timeout(hub, tmp_path):  # noqa: F811
    order: list[str] = []
    renewing = threading.Event()
    step_done = threading.Event()

    def slow_ref_update(ref: str, what: str) -> None:
        # runs in whichever thread makes the request: the renewal's worker thread if off-loop
        if what != "update" or renewing.is_set():
            return
        order.append("renewal started")
        renewing.set()
        step_done.wait(GRACE)
        order.append("renewal finished")

    class Busy(RecordingAction):
        async def run(self, inputs, ctx):
            started.set()
            while not renewing.is_set():  # the renewal is now stuck inside GitHub
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

    started = asyncio.Event()
    beats = 0

    async def heartbeat(_seconds: float) -> None:
        nonlocal beats
        beats += 1
        if beats == 1:  # the first renewal starts once the step is running
            await started.wait()
            return
        await asyncio.Event().wait()

    loaded = plan_from(
        "resources: [db/orders]\nsteps:\n"
        + shell_step("a", compensate=False, retry="{max_attempts: 1}", extra="    timeout: 1s\n")
    )
    h = make_runner(tmp_path, impls(Busy("shell")))
    h.runner.locks = runner_locks(h.clock)
    h.runner.heartbeat_sleep = heartbeat
    hub.git.before_write.append(slow_ref_update)

    result = asyncio.run(h.runner.run(loaded))
    assert order == ["renewal started", "step progressed", "step timed out", "renewal finished"]
    assert "did not finish within 1s" in (result.steps["a"].error or "")
    # the release waited for the renewal still in flight (one mutex) and built on it: released,
    # not left held by a compare-and-swap that lost against our own renewal
    lease = lease_of(hub, "db/orders")
    assert (lease.holder, lease.state) == ("run-1", "released")
    assert len(hub.git.history(lock_ref("db/orders"))) == 3  # held, renewed, released


def test_configured_lease_is_renewed_with_two_thirds_of_it_left(hub, tmp_path):  # noqa: F811
    """The heartbeat renews every lease/3: a renewal happens while at least lease/3 is left."""
    lease = 90.0
    sleeps: list[float] = []
    ref = lock_ref("db/orders")

    async def heartbeat(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            h.clock.t += seconds  # the fake clock moves by what the heartbeat waited
            return
        await asyncio.Event().wait()

    class WaitsForRenewal(RecordingAction):
        async def run(self, inputs, ctx):
            for _ in range(1000):
                if len(hub.git.history(ref)) >= 2:
                    break
                await asyncio.sleep(0.01)
            return await super().run(inputs, ctx)

    h = make_runner(tmp_path, impls(WaitsForRenewal("shell")))
    h.runner.locks = runner_locks(h.clock, lease=lease)
    h.runner.heartbeat_sleep = heartbeat
    taken_at = h.clock.t
    loaded = plan_from("resources: [db/orders]\nsteps:\n" + shell_step("a", compensate=False))
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    assert sleeps[0] == lease / 3
    first, renewed = [
        Lease.parse(hub.git.commits[sha]["message"]) for sha in reversed(hub.git.history(ref))
    ][:2]
    assert first.expires_at == taken_at + lease
    renewed_at = taken_at + lease / 3
    assert renewed.expires_at == renewed_at + lease
    assert first.expires_at - renewed_at == 2 * lease / 3 >= lease / 3
