"""``plangate retry`` / ``plangate cancel``: queue ownership from policy, then the state store."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.cli import main
from app.execute.locks import LockManager
from app.execute.state import StateStore
from app.plan.loader import load_plan

ROOT = Path(__file__).resolve().parents[2]
PLAN = "plans/flaky.yaml"

# team platform: retry by platform/sre, cancel by platform/sre/security (policies/teams.yaml)
FLAKY = """apiVersion: plangate.dev/v1
kind: Plan
id: flaky
title: fails until a flag file exists
team: platform
environment: local
resources: [local/flaky]
steps:
  - id: write
    action: shell
    with:
      run: [python3, -c, "import pathlib; pathlib.Path('out.txt').write_text('x')"]
    compensate:
      action: shell
      with:
        run: [python3, -c, "import pathlib; pathlib.Path('out.txt').unlink(missing_ok=True)"]
    timeout: 10s
  - id: check
    action: shell
    mutates: false
    needs: [write]
    with:
      run: [python3, -c, "import pathlib, sys; sys.exit(0 if pathlib.Path('flag').exists() else 1)"]
    retry: {max_attempts: 1}
    timeout: 10s
"""


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "plans").mkdir()
    (tmp_path / PLAN).write_text(FLAKY)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    (tmp_path / ".plangate").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("PLANGATE_DATA_DIR", raising=False)
    return tmp_path


def _data(repo: Path) -> list[str]:
    return ["--data-dir", str(repo / "data")]


def _run(repo: Path, *extra: str) -> int:
    return main(["run", PLAN, "--format", "json", *_data(repo), *extra])


def _status(repo: Path) -> tuple[str, str] | None:
    state = StateStore.open(repo / "data")
    try:
        run = state.get_run(load_plan(PLAN).digest)
        return (run.status, run.reason) if run else None
    finally:
        state.close()


def _approve() -> None:
    assert main(["keygen"]) == 0
    assert main(["attest", PLAN, "--approver", "alice"]) == 0


def test_retry_by_an_actor_outside_the_queue_rule_is_denied(repo, capsys):
    _approve()
    assert _run(repo) == 3  # check fails -> compensated
    capsys.readouterr()
    (repo / "flag").write_text("")
    # judy (security) may cancel platform plans but not retry them
    assert main(["retry", PLAN, "--actor", "judy", *_data(repo)]) == 1
    err = capsys.readouterr().err
    assert "denied by queue.platform.retry" in err and "judy may not retry" in err
    assert _status(repo)[0] == "compensated"  # state untouched
    assert not (repo / "out.txt").exists()


def test_retry_of_a_compensated_run_starts_over_for_an_allowed_actor(repo, capsys):
    _approve()
    assert _run(repo) == 3
    assert not (repo / "out.txt").exists()  # compensated
    (repo / "flag").write_text("")
    capsys.readouterr()
    assert main(["retry", PLAN, "--actor", "dan", "--format", "json", *_data(repo)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded"
    assert (repo / "out.txt").read_text() == "x"


def test_retry_of_a_succeeded_run_is_refused(repo, capsys):
    _approve()
    (repo / "flag").write_text("")
    assert _run(repo) == 0
    assert main(["retry", PLAN, "--actor", "alice", *_data(repo)]) == 2
    assert "nothing to retry" in capsys.readouterr().err


def _running_run_with_lock(repo: Path) -> str:
    digest = load_plan(PLAN).digest
    state = StateStore.open(repo / "data")
    state.start_run(digest, "r1", "flaky", PLAN, 1.0)
    locks = LockManager(state.conn, now=lambda: 1e12, sleep=None, lease=60.0)  # type: ignore[arg-type]
    assert locks.try_acquire(["local/flaky"], "r1", "flaky") == []
    state.close()
    return digest


def _holders(repo: Path) -> list[str]:
    state = StateStore.open(repo / "data")
    try:
        return [h.holder for h in LockManager(state.conn, now=float, sleep=None).holders()]  # type: ignore[arg-type]
    finally:
        state.close()


def test_cancel_by_an_actor_outside_the_queue_rule_is_denied(repo, capsys):
    _running_run_with_lock(repo)
    assert main(["cancel", PLAN, "--actor", "erin", *_data(repo)]) == 1
    err = capsys.readouterr().err
    assert "denied by queue.platform.cancel" in err
    assert _status(repo)[0] == "running"
    assert _holders(repo) == ["r1"]


def test_cancel_marks_the_run_releases_locks_and_blocks_reruns_until_restart(repo, capsys):
    _approve()
    (repo / "flag").write_text("")
    _running_run_with_lock(repo)
    assert main(["cancel", PLAN, "--actor", "judy", "--reason", "wrong window", *_data(repo)]) == 0
    status, reason = _status(repo)
    assert status == "cancelled"
    assert "judy" in reason and "queue.platform.cancel" in reason and "wrong window" in reason
    assert _holders(repo) == []
    capsys.readouterr()

    assert _run(repo) == 1  # refused: the run was cancelled
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "cancelled"
    assert "--restart" in " ".join(out["warnings"])
    assert not (repo / "out.txt").exists()

    assert _run(repo, "--restart") == 0
    assert (repo / "out.txt").read_text() == "x"


def test_cancellation_is_not_overwritten_by_the_cancelled_run(tmp_path):
    state = StateStore.open(tmp_path)
    state.start_run("sha256:" + "a" * 64, "r1", "p", "p.yaml", 1.0)
    state.cancel_run("sha256:" + "a" * 64, "cancelled by x", 2.0)
    state.finish_run("sha256:" + "a" * 64, "succeeded", "done", 3.0)
    assert state.get_run("sha256:" + "a" * 64).status == "cancelled"
    state.close()


def test_cancel_without_a_run_says_so(repo, capsys):
    assert main(["cancel", PLAN, "--actor", "alice", *_data(repo)]) == 1
    assert "no run of this plan digest" in capsys.readouterr().err


def test_retry_compensations_resumes_the_saga_and_never_goes_forward(tmp_path):
    import asyncio

    from tests.execute.fakes import RecordingAction, fail, impls, make_runner, plan_from, shell_step

    loaded = plan_from("steps:\n" + shell_step("a") + shell_step("b", ["a"]))
    # a: do ok, then both undo attempts fail; b fails for good
    shell = RecordingAction(
        "shell",
        script={"a": [None, fail(step="a"), fail(step="a")], "b": [fail(retryable=False)]},
    )
    h = make_runner(tmp_path, impls(shell))
    first = asyncio.run(h.runner.run(loaded))
    assert first.status == "compensation_failed"
    assert h.state.retry_compensations(loaded.digest, "retry requested by alice", 2.0) == 1
    before = list(shell.steps())
    second = asyncio.run(h.runner.run(loaded))
    assert second.status == "compensated", second.reason
    assert shell.steps()[len(before) :] == ["a"]  # only the undo of a ran again, b never


def test_queue_requests_are_recorded_allowed_or_denied(repo, capsys):
    _running_run_with_lock(repo)
    main(["cancel", PLAN, "--actor", "erin", *_data(repo)])
    main(["cancel", PLAN, "--actor", "alice", *_data(repo)])
    lines = (repo / "data" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["type"], e["actor"]) for e in events] == [
        ("queue.cancel.deny", "erin"),
        ("queue.cancel.allow", "alice"),
    ]
    assert events[0]["rule"] == "queue.platform.cancel"
    assert events[1]["digest"] == load_plan(PLAN).digest


def test_queue_requests_are_in_the_git_audit_trail_and_verify(repo, capsys):
    from app.audit.git_store import GitAuditStore

    _running_run_with_lock(repo)
    assert main(["cancel", PLAN, "--actor", "erin", *_data(repo)]) == 1  # denied
    assert main(["cancel", PLAN, "--actor", "alice", *_data(repo), "--reason", "bad"]) == 0
    store = GitAuditStore(repo)
    try:
        events = [e for e in store.events() if e.type == "queue.requested"]
        assert store.verify().ok
    finally:
        store.close()
    assert [(e.actor.id, e.payload["verb"], e.payload["verdict"]) for e in events] == [
        ("erin", "cancel", "deny"),
        ("alice", "cancel", "allow"),
    ]
    assert events[0].payload["rule"] == "queue.platform.cancel"
    assert events[1].payload["note"] == "bad" and events[1].correlation_id == "r1"
    assert events[1].plan_digest == load_plan(PLAN).digest
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "ok:" in capsys.readouterr().out
