"""SIGKILL of a real ``plangate run`` at seeded random points of a 6-step plan, restarted until it
finishes: every step's effect appears exactly once and the audit chain verifies. And two runs
locking the same resource at once: never both inside the critical section.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SEED = 9001
CODE = "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))"

HEADER = """apiVersion: plangate.dev/v1
kind: Plan
id: {pid}
title: fault-injection plan that appends to a log
team: platform
environment: local
resources: [{resource}]
steps:
"""


def _step(sid: str, script: str, *, needs: str = "", idempotent: bool) -> str:
    lines = [
        f"  - id: {sid}",
        "    action: shell",
        f"    with: {{run: [sh, -c, {json.dumps(script)}]}}",
        "    timeout: 60s",
        "    retry: {max_attempts: 1}",
        "    compensate: {none: test step appends to a log file only}",
        f"    idempotent: {'true' if idempotent else 'false'}",
    ]
    if needs:
        lines.append(f"    needs: [{needs}]")
    return "\n".join(lines) + "\n"


def _six_steps(tmp: Path) -> Path:
    """s1..s6 in a chain; odd steps are idempotent (guarded append), even ones plain appends."""
    log = tmp / "log"
    text = HEADER.format(pid="kill-six", resource="local/kill-six")
    for i in range(1, 7):
        guard = f"grep -qx s{i} {log} || " if i % 2 else ""
        script = f"sleep 0.25; {guard}echo s{i} >> {log}"
        text += _step(f"s{i}", script, needs=f"s{i - 1}" if i > 1 else "", idempotent=bool(i % 2))
    path = tmp / "six.yaml"
    path.write_text(text)
    return path


def _run(plan: Path, tmp: Path, *extra: str, audit: str = "audit.git") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CODE,
            "run",
            str(plan),
            "--data-dir",
            str(tmp / "data"),
            "--audit-repo",
            str(tmp / audit),
            "--unsafe-no-approval",
            "--format",
            "json",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_of_plangate_run_at_random_points_each_step_once(tmp_path):
    rng = random.Random(SEED)
    plan = _six_steps(tmp_path)
    log = tmp_path / "log"
    kills, attention, extra = 0, [], []
    for _ in range(20):
        proc = _run(plan, tmp_path, *extra)
        extra = []
        if kills < 4:  # four kills at seeded random moments (start-up, mid-step, between steps)
            time.sleep(rng.uniform(0.2, 1.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                time.sleep(0.4)  # the killed step's own shell (own session) finishes its append
                continue
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:
            assert json.loads(out)["status"] == "succeeded"
            break
        # an interrupted non-idempotent step: the operator looks at its effect and says so
        assert proc.returncode == 4, out + err
        result = json.loads(out)
        assert result["status"] == "needs_attention", result
        step = result["reason"].split("'")[1]
        attention.append(step)
        extra = ["--mark-done", step] if step in _lines(log) else ["--retry-step", step]
    else:
        pytest.fail("the plan never finished")
    assert kills >= 2, kills  # seeded moments; a kill after the plan finished is not one
    assert _lines(log) == [f"s{i}" for i in range(1, 7)]  # every effect exactly once, in order
    verify = subprocess.run(
        [sys.executable, "-c", CODE, "audit", "verify", "--repo", str(tmp_path / "audit.git")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"kills={kills} needs_attention={attention}")


def _critical(tmp: Path, name: str) -> Path:
    """A plan locking ``local/shared``: its one step records enter/exit times around a sleep."""
    times = tmp / "times"
    script = (
        f"echo enter {name} $(date +%s.%N) >> {times}; sleep 0.6; "
        f"echo exit {name} $(date +%s.%N) >> {times}"
    )
    text = HEADER.format(pid=name, resource="local/shared") + _step(
        "critical", script, idempotent=True
    )
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def _intervals(tmp: Path) -> dict[str, tuple[float, float]]:
    marks: dict[str, dict[str, float]] = {}
    for line in _lines_of(tmp / "times"):
        kind, name, at = line.split()
        marks.setdefault(name, {})[kind] = float(at)
    return {n: (m["enter"], m["exit"]) for n, m in marks.items()}


def _lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("mode", ["wait", "fail_fast"])
def test_two_runs_locking_one_resource_never_overlap(tmp_path, mode):
    extra = ("--lock-wait", "30") if mode == "wait" else ()
    # KNOWN GAP, not this scenario's subject: two first runs on a fresh data dir race on
    # `PRAGMA journal_mode=WAL` of state.db ("database is locked"). A sequential warm-up creates
    # it; its own audit repository keeps the pair's --audit-repo fresh, so the two runs still
    # race on creating that (fixed in app/audit/git_store.py: the loser opens the winner's repo).
    warm = tmp_path / "warm.yaml"
    warm.write_text(
        HEADER.format(pid="warm", resource="local/warm") + _step("w", "true", idempotent=True)
    )
    out, err = _run(warm, tmp_path, audit="warm.git").communicate(timeout=60)
    assert json.loads(out)["status"] == "succeeded", out + err
    procs = {name: _run(_critical(tmp_path, name), tmp_path, *extra) for name in ("alpha", "beta")}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        results[name] = (proc.returncode, json.loads(out) if out.strip() else {}, err)
    spans = _intervals(tmp_path)
    if mode == "wait":  # the second one waited for the lock, then ran
        assert all(code == 0 for code, _, _ in results.values()), results
        assert set(spans) == {"alpha", "beta"}
    else:  # at most one ran; a refused run names the holder and did nothing
        ran = [n for n, (code, _, _) in results.items() if code == 0]
        refused = [n for n, (code, _, _) in results.items() if code == 1]
        assert sorted(ran + refused) == ["alpha", "beta"], results
        assert set(spans) == set(ran)
        for name in refused:
            assert results[name][1]["status"] == "refused"
            assert "'local/shared' is held by plan" in results[name][1]["reason"]
    ordered = sorted(spans.values())
    for (_, first_exit), (second_enter, _) in itertools.pairwise(ordered):
        assert first_exit <= second_enter, spans  # never both inside the critical section
