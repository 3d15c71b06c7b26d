"""``plangate run`` end to end, including a real SIGKILL of a running ``plangate run``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main

ROOT = Path(__file__).resolve().parents[2]

PLAN = """apiVersion: plangate.dev/v1
kind: Plan
id: kill-test
title: counts executions in a log file
team: platform
environment: local
resources: [local/kill-test]
steps:
{steps}"""


def _step(sid: str, script: str, needs: str = "", idempotent: bool = False) -> str:
    lines = [
        f"  - id: {sid}",
        "    action: shell",
        f"    with: {{run: [sh, -c, {json.dumps(script)}]}}",
        "    timeout: 60s",
        "    retry: {max_attempts: 1}",
        "    compensate: {none: test step appends to a log file only}",
    ]
    if needs:
        lines.append(f"    needs: [{needs}]")
    if idempotent:
        lines.append("    idempotent: true")
    return "\n".join(lines) + "\n"


def _plan(tmp: Path, *, idempotent: bool) -> Path:
    log, started = tmp / "log", tmp / "started"
    # s3 blocks (sleeps) the first time only, recording its pid so the test can clean up
    s3 = (
        f"echo s3 >> {log}; if [ ! -e {started} ]; then echo $$ > {started}.tmp; "
        f"mv {started}.tmp {started}; sleep 60; fi"
    )
    steps = (
        _step("s1", f"echo s1 >> {log}")
        + _step("s2", f"echo s2 >> {log}", "s1")
        + _step("s3", s3, "s2", idempotent=idempotent)
        + _step("s4", f"echo s4 >> {log}", "s3")
    )
    path = tmp / "plan.yaml"
    path.write_text(PLAN.format(steps=steps))
    return path


def _cli(*args: str) -> subprocess.Popen[str]:
    code = "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"
    # keep the audit trail out of the project's own repository (the default is the cwd's repo)
    audit = ["--audit-repo", str(Path(args[args.index("--data-dir") + 1]) / "audit.git")]
    return subprocess.Popen(
        [sys.executable, "-c", code, "run", *args, *audit],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_mid_plan(tmp: Path, plan: Path) -> None:
    proc = _cli(str(plan), "--data-dir", str(tmp / "data"), "--unsafe-no-approval")
    started = tmp / "started"
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "s3 never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the shell step runs in its own session and survives its parent: stop it ourselves
    pid = int(started.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _rerun(tmp: Path, plan: Path, *extra: str) -> tuple[int, str, str]:
    proc = _cli(
        str(plan),
        "--data-dir",
        str(tmp / "data"),
        "--unsafe-no-approval",
        "--format",
        "json",
        *extra,
    )
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.slow
def test_sigkill_then_resume_never_repeats_a_completed_step(tmp_path):
    plan = _plan(tmp_path, idempotent=True)
    _kill_mid_plan(tmp_path, plan)
    assert (tmp_path / "log").read_text().split() == ["s1", "s2", "s3"]
    code, out, err = _rerun(tmp_path, plan)
    assert code == 0, out + err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["resumed"]
    # s1 and s2 ran exactly once; the interrupted idempotent s3 ran again; s4 once
    assert (tmp_path / "log").read_text().split() == ["s1", "s2", "s3", "s3", "s4"]


@pytest.mark.slow
def test_sigkill_of_non_idempotent_step_needs_attention_then_mark_done(tmp_path):
    plan = _plan(tmp_path, idempotent=False)
    _kill_mid_plan(tmp_path, plan)
    code, out, err = _rerun(tmp_path, plan)
    assert code == 4, out + err
    result = json.loads(out)
    assert result["status"] == "needs_attention"
    assert "step 's3' (attempt 1) was interrupted" in result["reason"]
    assert (tmp_path / "log").read_text().split() == ["s1", "s2", "s3"]  # nothing re-ran
    code, out, err = _rerun(tmp_path, plan, "--mark-done", "s3")
    assert code == 0, out + err
    assert (tmp_path / "log").read_text().split() == ["s1", "s2", "s3", "s4"]


def test_dry_run_prints_levels_and_critical_path_without_side_effects(tmp_path, capsys):
    plan = _plan(tmp_path, idempotent=False)
    data = tmp_path / "data"
    assert main(["run", str(plan), "--dry-run", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "level 0: s1" in out and "level 3: s4" in out
    assert "Critical path (240s by estimate or timeout): s1 (60s) -> s2" in out
    assert not data.exists() and not (tmp_path / "log").exists()


def test_mutating_plan_is_refused_without_approval(tmp_path, capsys):
    plan = _plan(tmp_path, idempotent=False)
    audit = ["--audit-repo", str(tmp_path / "audit.git")]
    code = main(["run", str(plan), "--data-dir", str(tmp_path / "d"), "--format", "json", *audit])
    assert code == 1
    assert json.loads(capsys.readouterr().out)["status"] == "refused"
    assert not (tmp_path / "log").exists()


def test_resume_requires_an_earlier_run(tmp_path, capsys):
    plan = _plan(tmp_path, idempotent=False)
    assert main(["run", str(plan), "--resume", "--data-dir", str(tmp_path / "d")]) == 2
    assert "no earlier run of this plan digest" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_contend_for_a_resource(tmp_path):
    plan = _plan(tmp_path, idempotent=True)  # holds local/kill-test while s3 sleeps
    holder = _cli(str(plan), "--data-dir", str(tmp_path / "data"), "--unsafe-no-approval")
    other = tmp_path / "other.yaml"
    other.write_text(
        PLAN.replace("id: kill-test", "id: other-plan").format(
            steps=_step("o1", f"echo o1 >> {tmp_path / 'other-log'}")
        )
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        code, out, err = _rerun(tmp_path, other)
        assert code == 1, out + err
        result = json.loads(out)
        assert result["status"] == "refused"
        assert "'local/kill-test' is held by plan kill-test" in result["reason"]
        assert not (tmp_path / "other-log").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int((tmp_path / "started").read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_releases_locks_and_the_run_resumes(tmp_path):
    plan = _plan(tmp_path, idempotent=True)
    proc = _cli(str(plan), "--data-dir", str(tmp_path / "data"), "--unsafe-no-approval")
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "run stopped by SIGTERM; locks were released" in err
    # the step's process was killed with the cancellation, and the lock is free at once
    code, out, err = _rerun(tmp_path, plan)
    assert code == 0, out + err
    assert (tmp_path / "log").read_text().split() == ["s1", "s2", "s3", "s3", "s4"]


def test_dry_run_json(tmp_path, capsys):
    plan = _plan(tmp_path, idempotent=False)
    assert main(["run", str(plan), "--dry-run", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["levels"] == [["s1"], ["s2"], ["s3"], ["s4"]]
    assert doc["critical_path"] == ["s1", "s2", "s3", "s4"]
    assert doc["digest"].startswith("sha256:")
