"""Resource locks across Actions runners: git refs created atomically, leases CAS-renewed.

GitHub is the git data fake (``gitrefs_fake``) behind ``responses``, reached through the real
``RestTransport`` (so 422s become ``GitHubError`` exactly as in production). Every body Plangate
sends is validated against ``@octokit/openapi`` (``openapi-execute-subset.json``). Two
``GitRefLocks`` instances are two runners: they share nothing but the fake repository.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest
import responses

from app.execute.github_locks import LOCK_REF_PREFIX, GitRefLocks, Lease, lock_ref
from app.execute.locks import LockBusy
from app.github.auth import token_transport
from app.github.client import HttpRetry
from tests.execute.fakes import (
    FakeClock,
    RecordingAction,
    impls,
    make_runner,
    plan_from,
    shell_step,
)
from tests.execute.gitrefs_fake import GitRefsFake

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "tests/fixtures/github/openapi-execute-subset.json").read_text())[
    "operations"
]
API = "https://api.github.com"
REPO = "acme/ops"


class Hub:
    """The fake repository's git data, served through ``responses``."""

    def __init__(self) -> None:
        self.schema_errors: list[str] = []
        self.git = GitRefsFake(OPENAPI, self._validate)
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[tuple[str, str, int]] = []

    def _validate(self, operation: str, body: Any) -> None:
        schema = OPENAPI[operation]["request_schema"]
        for error in jsonschema.Draft4Validator(schema).iter_errors(body):
            self.schema_errors.append(f"{operation}: {error.json_path}: {error.message}")

    def callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        path = unquote(urlsplit(request.url).path)
        self.requests.append((request.method, path))
        for i, (method, pattern, status) in enumerate(self.fail_next):
            if method == request.method and re.search(pattern, path):
                del self.fail_next[i]
                return status, {"Content-Type": "application/json"}, '{"message": "boom"}'
        sub = path.removeprefix(f"/repos/{REPO}")
        body = json.loads(request.body) if request.body else None
        answer = self.git.route(request.method, sub, body)
        status, payload = answer if answer else (404, {"message": "no route"})
        return status, {"Content-Type": "application/json"}, json.dumps(payload)


@pytest.fixture
def hub():
    h = Hub()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rx = re.compile(r"https://api\.github\.com(:443)?/.*")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            rsps.add_callback(method, rx, callback=h.callback)
        yield h
    assert h.schema_errors == []


def runner_locks(clock: FakeClock, *, lease: float = 300, run_url: str = "") -> GitRefLocks:
    """One runner's lock backend (its own transport: runners share only the repository)."""
    transport = token_transport(
        "ghs_x",
        base_url=API,
        retry=HttpRetry(max_attempts=2, initial_delay=0),
        sleep=lambda s: None,
    )
    return GitRefLocks(
        transport, REPO, now=clock, sleep=clock.sleep, lease=lease, skew=30, run_url=run_url
    )


def lease_of(hub: Hub, resource: str) -> Lease:
    lease = Lease.parse(hub.git.message(lock_ref(resource)))
    assert lease is not None
    return lease


# --- naming -------------------------------------------------------------------------------------


def test_lock_ref_names_are_valid_unique_and_readable():
    a, b = lock_ref("db"), lock_ref("db/orders-primary")
    assert a.startswith(LOCK_REF_PREFIX) and b.startswith(LOCK_REF_PREFIX + "db-orders-primary.")
    # one component each: 'db' and 'db/orders' can both be locked (no file/directory clash)
    assert "/" not in a.removeprefix(LOCK_REF_PREFIX) and "/" not in b.removeprefix(LOCK_REF_PREFIX)
    assert lock_ref("DB/Orders") != lock_ref("db/orders")  # the hash keeps them apart
    odd = lock_ref("../x y:z~^.lock")
    assert ".." not in odd and " " not in odd and not odd.endswith(".lock")
    assert lock_ref("db") == a  # deterministic


# --- acquire, contention, release -------------------------------------------------------------


def test_create_is_atomic_and_a_second_runner_fails_fast(hub):
    clock = FakeClock()
    first, second = runner_locks(clock, run_url="https://x/runs/1"), runner_locks(clock)
    asyncio.run(first.acquire(["db/orders"], "run-1", "plan-a", wait=False))
    lease = lease_of(hub, "db/orders")
    assert (lease.holder, lease.plan_id, lease.state) == ("run-1", "plan-a", "held")
    assert lease.expires_at == clock.t + 300 and lease.run_url == "https://x/runs/1"
    assert ("create", lock_ref("db/orders"), hub.git.refs[lock_ref("db/orders")]) in hub.git.writes
    with pytest.raises(LockBusy, match=r"'db/orders' is held by plan plan-a \(run run-1"):
        asyncio.run(second.acquire(["db/orders"], "run-2", "plan-b", wait=False))
    first.release("run-1")
    assert lease_of(hub, "db/orders").state == "released"
    # the released lease is taken by compare-and-swap: the ref only ever moves forward
    asyncio.run(second.acquire(["db/orders"], "run-2", "plan-b", wait=False))
    assert lease_of(hub, "db/orders").holder == "run-2"
    assert len(hub.git.history(lock_ref("db/orders"))) == 3  # held -> released -> held
    assert not [w for w in hub.git.writes if w[0] == "delete"]  # never an unconditional delete


def test_wait_mode_waits_for_the_holder_to_release(hub):
    clock = FakeClock()
    first, second = runner_locks(clock), runner_locks(clock)
    asyncio.run(first.acquire(["r"], "run-1", "p1", wait=False))
    waits: list[Any] = []

    async def go():
        async def release_later():
            while not waits:
                await asyncio.sleep(0)
            first.release("run-1")

        releaser = asyncio.create_task(release_later())
        await second.acquire(
            ["r"], "run-2", "p2", wait=True, wait_timeout=100, on_wait=waits.append
        )
        await releaser

    asyncio.run(go())
    assert waits[0][0].holder == "run-1"
    assert lease_of(hub, "r").holder == "run-2"


def test_locks_are_all_or_nothing(hub):
    clock = FakeClock()
    first, second = runner_locks(clock), runner_locks(clock)
    asyncio.run(first.acquire(["b"], "run-1", "p1", wait=False))
    with pytest.raises(LockBusy, match="'b' is held"):
        asyncio.run(second.acquire(["a", "b"], "run-2", "p2", wait=False))
    # 'a' (sorted first) was taken, then given back when 'b' was busy
    assert lease_of(hub, "a").state == "released"
    assert second.holders() == []
    asyncio.run(first.acquire(["a"], "run-3", "p3", wait=False))  # free for anyone


# --- leases: renewal, expiry and takeover --------------------------------------------------------


def test_expired_lease_is_taken_over_and_the_old_holder_loses_it(hub):
    clock = FakeClock()
    dead, live = runner_locks(clock, lease=60), runner_locks(clock, lease=60)
    asyncio.run(dead.acquire(["db"], "run-dead", "p1", wait=False))
    clock.t += 30
    assert dead.renew("run-dead") == 1  # a live holder pushes its lease forward ...
    clock.t += 60 + 29  # ... expired for 29 s: within the clock-skew margin, still held
    with pytest.raises(LockBusy, match="run-dead"):
        asyncio.run(live.acquire(["db"], "run-live", "p2", wait=False))
    clock.t += 2  # past expiry + skew: the holder is gone
    asyncio.run(live.acquire(["db"], "run-live", "p2", wait=False))
    assert live.takeovers == [("db", "run-dead")]
    assert lease_of(hub, "db").holder == "run-live"
    # the old holder comes back: its renewal loses the compare-and-swap, the lock is lost
    assert dead.renew("run-dead") == 0
    assert lease_of(hub, "db").holder == "run-live"
    dead.release("run-dead")  # a late release never frees someone else's lock
    assert lease_of(hub, "db").holder == "run-live" and lease_of(hub, "db").state == "held"


def test_two_runners_racing_for_one_expired_lease_one_wins(hub):
    clock = FakeClock()
    gone = runner_locks(clock, lease=60)
    a, b = runner_locks(clock, lease=60), runner_locks(clock, lease=60)
    asyncio.run(gone.acquire(["db"], "run-gone", "p0", wait=False))
    clock.t += 1000
    raced: list[str] = []

    def b_wins_first(ref: str, what: str) -> None:
        # 'a' read the expired lease and built its takeover commit; 'b' gets in just before
        if what == "update" and not raced:
            raced.append(ref)
            hub.git.before_write.clear()
            b.try_acquire(["db"], "run-b", "pb")

    hub.git.before_write.append(b_wins_first)
    with pytest.raises(LockBusy, match="run-b"):
        asyncio.run(a.acquire(["db"], "run-a", "pa", wait=False))
    assert raced and lease_of(hub, "db").holder == "run-b"


def test_create_race_is_lost_cleanly(hub):
    clock = FakeClock()
    a, b = runner_locks(clock), runner_locks(clock)

    def b_creates_first(ref: str, what: str) -> None:
        if what == "create":
            hub.git.before_write.clear()
            b.try_acquire(["fresh"], "run-b", "pb")

    hub.git.before_write.append(b_creates_first)
    assert [c.holder for c in a.try_acquire(["fresh"], "run-a", "pa")] == ["run-b"]


def test_renewal_survives_a_transient_error_until_the_lease_runs_out(hub):
    clock = FakeClock()
    locks = runner_locks(clock, lease=60)
    asyncio.run(locks.acquire(["r"], "run-1", "p", wait=False))
    hub.fail_next += [("POST", r"/git/commits$", 502)] * 2  # both transport attempts fail
    clock.t += 20
    assert locks.renew("run-1") == 1  # still ours: our lease has 40 s left
    hub.fail_next += [("POST", r"/git/commits$", 502)] * 2
    clock.t += 50  # now past our own lease
    assert locks.renew("run-1") == 0


def test_unreadable_lease_is_treated_as_held(hub):
    clock = FakeClock()
    sha = hub.git.commit({"x": b"y"}, [], "someone wrote this ref by hand")
    hub.git.refs[lock_ref("r")] = sha
    with pytest.raises(LockBusy, match="unreadable lease"):
        asyncio.run(runner_locks(clock).acquire(["r"], "run-1", "p", wait=False))


# --- the runner on ref locks: contention between two runs, release on every exit path ---------


def _chain(resources: str = "[db/orders]", plan_id: str = "test-plan"):
    return plan_from(
        f"resources: {resources}\nsteps:\n" + shell_step("a") + shell_step("b", ["a"]),
        plan_id=plan_id,
    )


def _on_refs(h, clock) -> GitRefLocks:
    h.runner.locks = runner_locks(clock)
    return h.runner.locks


def test_two_runs_on_separate_runners_contend_through_the_ref(hub, tmp_path):
    gate = asyncio.Event()

    class Holding(RecordingAction):
        async def run(self, inputs, ctx):
            if ctx.step_id == "a":
                await gate.wait()
            return await super().run(inputs, ctx)

    async def go():
        # two runners: separate data dirs (no shared SQLite), one repository
        first = make_runner(tmp_path / "r1", impls(Holding("shell")), run_id="run-1")
        second_shell = RecordingAction("shell")
        second = make_runner(tmp_path / "r2", impls(second_shell), run_id="run-2")
        _on_refs(first, first.clock)
        _on_refs(second, second.clock)
        loaded, other = _chain(), _chain("[cache/x, db/orders]", "other")
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
    assert second_shell.steps() == ["a", "b"]
    assert lease_of(hub, "db/orders").state == "released"


def test_ref_locks_released_when_a_step_fails_or_the_run_crashes(hub, tmp_path):
    from tests.execute.fakes import fail

    shell = RecordingAction("shell", script={"b": [fail(retryable=False, step="b")]})
    h = make_runner(tmp_path / "a", impls(shell))
    _on_refs(h, h.clock)
    result = asyncio.run(h.runner.run(_chain()))
    assert result.status == "compensated"
    assert lease_of(hub, "db/orders").state == "released"

    class Crash(RecordingAction):
        async def run(self, inputs, ctx):
            raise KeyboardInterrupt

    h = make_runner(tmp_path / "b", impls(Crash("shell")), run_id="run-9")
    _on_refs(h, h.clock)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(h.runner.run(_chain(plan_id="crashing")))
    lease = lease_of(hub, "db/orders")
    assert (lease.holder, lease.state) == ("run-9", "released")


def test_github_failing_midway_gives_back_what_was_taken(hub):
    from app.errors import GitHubError

    clock = FakeClock()
    locks = runner_locks(clock)
    # 'a' is taken, then reading 'b' fails for good (both transport attempts)
    hub.fail_next += [("GET", r"/git/ref/plangate/locks/b\.", 502)] * 2
    with pytest.raises(GitHubError):
        asyncio.run(locks.acquire(["a", "b"], "run-1", "p", wait=False))
    assert lease_of(hub, "a").state == "released"
    assert locks.holders() == []
