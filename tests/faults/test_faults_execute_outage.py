"""A GitHub API outage during ``plangate execute`` (GitHub mode), over real HTTP on 127.0.0.1.

The real command (``app.cli.execute.execute``, the REST transport of ``token_transport`` with its
bounded retries, the git-ref resource locks, the SQLite state store, the audit trail in the
checkout) runs a 6-step plan whose steps append ``sN`` to a log file, against the executor's
fake GitHub behind ``faultnet`` (500, 502, TCP resets, 403 secondary rate limits with
``retry-after``). Retry waits are recorded, not slept; the lock heartbeat and the steps take real
time, so the suite stays under ~15 s. Each scenario asserts the final state:

* **ride out** — seeded faults on every kind of call: the bounded retries absorb them; every
  step ran once; ``plangate/execute`` concluded ``success``; the audit chain verifies.
* **long outage mid-run** — every call fails for longer than the lock lease (a 300 s lease
  scaled down to 1.5 s so the test is bounded): the lease cannot be renewed, the run pauses
  cleanly before the next step (exit 4, check run ``action_required``, step status kept in the
  state store); the re-run after the outage resumes the same run id: no completed step repeats.
* **outage before anything runs** — the pull request lookup fails past its retries: the run
  stops (exit 3), the check run says ``failure`` with the error, nothing ran; the re-run runs it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from execnet import ExecWorld, check_runs, final, plan_text

import app.cli.execute as execute_cli
from app.cli import build_parser
from app.errors import InputError, PlangateError
from app.execute.state import StateStore
from app.github.auth import token_transport
from app.github.client import GitHubCache, HttpRetry, RepoClient

SEED = 9009
STEPS = 6
#: 8 attempts per REST call, backoff of a few ms (recorded, never slept)
RETRY = HttpRetry(max_attempts=8, initial_delay=0.01, max_delay=0.05)
SECONDARY = {"retry-after": "1"}
SECONDARY_MSG = "You have exceeded a secondary rate limit. Please wait a few minutes."


def _github(xw: ExecWorld, sleeps: list[float]) -> execute_cli.RestExecuteGitHub:
    transport = token_transport(
        "ghs_secretTOKENvalue123", base_url=xw.url, retry=RETRY, sleep=sleeps.append
    )
    return execute_cli.RestExecuteGitHub(RepoClient(transport, "acme/ops", cache=GitHubCache()))


def _execute(xw: ExecWorld, sleeps: list[float]) -> tuple[int, dict]:
    """One workflow run of ``plangate execute`` (exit codes as ``app.cli.main`` maps them)."""
    args = build_parser().parse_args(xw.argv())
    try:
        code = execute_cli.execute(args, environ=xw.env(), github=_github(xw, sleeps))
    except InputError:
        return 2, {}
    except PlangateError:
        return 3, {}
    return code, {}


def _log(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _audit_verifies(root: Path, capsys) -> None:
    from app.cli import main

    capsys.readouterr()
    assert main(["audit", "verify", "--repo", str(root)]) == 0, capsys.readouterr()


def _outage(xw: ExecWorld, when, probs: tuple[float, float, float, float]) -> None:
    """While ``when()``: TCP resets, 403 secondary rate limits, 500s and 502s on every kind of
    call, each rule firing with its (seeded) probability, tried in that order."""
    reset, limited, e500, e502 = probs
    xw.faults.add("*", r".", "reset", probability=reset, when=when)
    xw.faults.add(
        "*",
        r".",
        status=403,
        headers=SECONDARY,
        message=SECONDARY_MSG,
        probability=limited,
        when=when,
    )
    xw.faults.add("*", r".", status=500, probability=e500, when=when)
    xw.faults.add("*", r".", status=502, probability=e502, when=when)


@pytest.fixture
def world(tmp_path, monkeypatch):
    log = tmp_path / "log"
    worlds: list[ExecWorld] = []

    def make(**sleep: float) -> tuple[ExecWorld, Path]:
        steps = {int(k[1:]): v for k, v in sleep.items()}
        xw = ExecWorld(tmp_path / "w", plan_text(STEPS, log, sleep=steps), seed=SEED)
        worlds.append(xw)
        monkeypatch.chdir(xw.root)
        return xw, log

    yield make
    for xw in worlds:
        xw.close()


def test_outage_ridden_out_by_bounded_retries_each_step_once(world, capsys):
    xw, log = world()
    # each kind of fault on each kind of call the run makes (before GitHub applies it) ...
    xw.faults.add("POST", r"/check-runs$", "reset", first=2)
    xw.faults.add("GET", r"/commits/[0-9a-f]{40}/pulls$", status=502, first=3)
    xw.faults.add(
        "GET", r"/contents/", status=403, headers=SECONDARY, message=SECONDARY_MSG, first=1
    )
    xw.faults.add("POST", r"/git/(refs|commits|trees)$", status=500, first=2)
    xw.faults.add("PATCH", r"/git/refs/plangate/locks/", "reset", first=1)
    xw.faults.add(
        "PATCH", r"/check-runs/\d+$", status=403, headers=SECONDARY, message=SECONDARY_MSG, first=2
    )
    xw.faults.add("POST", r"/issues/\d+/comments$", status=502, first=2)
    # ... and a flaky third of everything on top: 8 failures in a row on one call (what the
    # retries cannot absorb) has odds of ~1 in 4,000, and the seed fixes which calls fail
    _outage(xw, lambda: True, (0.1, 0.1, 0.1, 0.1))
    sleeps: list[float] = []
    code, _ = _execute(xw, sleeps)
    injected = {(i.kind, i.status) for i in xw.faults.injected}
    assert {("reset", None), ("status", 500), ("status", 502), ("status", 403)} <= injected
    assert code == 0, capsys.readouterr()
    assert _log(log) == [f"s{i}" for i in range(1, STEPS + 1)]  # every step exactly once
    (run,) = check_runs(xw.gh)
    assert final(run)["conclusion"] == "success"
    assert 1.0 in sleeps  # the secondary limit's retry-after was honoured (recorded wait)
    assert xw.gh.schema_errors == []
    _audit_verifies(xw.root, capsys)
    # the re-run of the same merge is a no-op: the run already ended, nothing repeats
    assert _execute(xw, sleeps)[0] == 0
    assert _log(log) == [f"s{i}" for i in range(1, STEPS + 1)]
    print(f"faults injected={len(xw.faults.injected)} kinds={sorted(map(str, injected))}")


def test_outage_longer_than_the_lease_pauses_cleanly_and_rerun_resumes(world, monkeypatch, capsys):
    from app.execute.github_locks import GitRefLocks

    def short_lease(args, ctx, github, state):  # the shipped 300 s lease, scaled to 1.5 s
        return GitRefLocks(
            github.client.transport,
            ctx.repo,
            now=time.time,
            sleep=asyncio.sleep,
            lease=1.5,
            skew=0.0,
        )

    monkeypatch.setattr(execute_cli, "_locks", short_lease)
    xw, log = world(s3=4.5)
    window: dict[str, float] = {}

    def down() -> bool:
        """From the moment s2 is in the log, for 3 s (s3 is then still running)."""
        if "start" not in window:
            if "s2" not in _log(log):
                return False
            window["start"] = time.monotonic()
        return time.monotonic() - window["start"] < 3.0

    _outage(xw, down, (0.25, 0.25, 0.3, 1.0))  # everything fails while it lasts
    sleeps: list[float] = []
    code, _ = _execute(xw, sleeps)
    out = capsys.readouterr().out
    assert code == 4, out  # paused: a human re-runs it, nothing half-done
    assert _log(log) == ["s1", "s2", "s3"]  # s3 had started: it finishes; s4 never starts
    assert xw.faults.count() > 0
    (first,) = check_runs(xw.gh)
    assert final(first)["conclusion"] == "action_required"
    assert "lease" in final(first)["output"]["summary"]
    # the step status is in the state store: the run is paused with s1..s3 done
    digest = xw.world.plan_digest()
    state = StateStore.open(xw.data)
    try:
        run = state.get_run(digest)
        assert run is not None and run.status == "paused", run
        done = state.completed(digest, "step")
        assert {k for k, v in done.items() if v.status == "succeeded"} == {"s1", "s2", "s3"}
        run_id = run.run_id
    finally:
        state.close()

    # the outage is over: the workflow is re-run on the same merge
    code, _ = _execute(xw, sleeps)
    out = capsys.readouterr().out
    assert code == 0, out
    assert _log(log) == [f"s{i}" for i in range(1, STEPS + 1)]  # s1..s3 not repeated
    _, second = check_runs(xw.gh)
    assert final(second)["conclusion"] == "success"
    state = StateStore.open(xw.data)
    try:
        assert state.get_run(digest).run_id == run_id  # the same run, resumed
        assert state.get_run(digest).status == "succeeded"
    finally:
        state.close()
    assert xw.gh.schema_errors == []
    _audit_verifies(xw.root, capsys)
    events = (xw.data / "events.jsonl").read_text().splitlines()
    assert "lock.lost" in {json.loads(line)["type"] for line in events if line}


def test_outage_before_anything_ran_fails_the_check_and_rerun_runs(world, capsys):
    xw, log = world()
    # the pull request lookup fails on every attempt of the first run (8 = RETRY.max_attempts)
    xw.faults.add("GET", r"/commits/[0-9a-f]{40}/pulls$", status=502, first=RETRY.max_attempts)
    sleeps: list[float] = []
    code, _ = _execute(xw, sleeps)
    assert code == 3
    assert _log(log) == []
    (first,) = check_runs(xw.gh)
    assert final(first)["conclusion"] == "failure"
    assert final(first)["output"]["title"].startswith("Execution stopped: GitHubUnavailable")
    assert _execute(xw, sleeps)[0] == 0
    assert _log(log) == [f"s{i}" for i in range(1, STEPS + 1)]
    _, second = check_runs(xw.gh)
    assert final(second)["conclusion"] == "success"
    _audit_verifies(xw.root, capsys)
