"""The runner with the real built-in actions: a timed-out shell step is really stopped."""

from __future__ import annotations

import asyncio
import os
import time

from rich.console import Console

from app.execute.actions import implementations
from app.execute.progress import ProgressSink, summary_table
from tests.execute.fakes import make_runner, plan_from


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_timeout_really_kills_the_subprocess(tmp_path):
    pidfile = tmp_path / "pid"
    loaded = plan_from(
        "steps:\n  - id: hang\n    action: shell\n    mutates: false\n"
        f"    with: {{run: [sh, -c, 'echo $$ > {pidfile}; exec sleep 30']}}\n"
        "    timeout: 300ms\n    retry: {max_attempts: 1}\n"
    )
    wired = implementations(base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    h = make_runner(tmp_path / "data", wired.actions)
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert result.steps["hang"].error_kind == "timeout"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)


def test_progress_counts_and_summary_table():
    console = Console(record=True, width=120)
    sink = ProgressSink(console, total=3, live=False)
    sink.emit("step.started", step="a", action="shell")
    sink.emit("step.retry", step="a")
    sink.emit("step.succeeded", step="a")
    sink.emit("step.skipped", step="b")
    sink.emit("step.failed", step="c", error="boom")
    assert (sink.done, sink.skipped, sink.failed, sink.retries) == (1, 1, 1, 1)
    assert "step.failed: boom" in sink.last
    from app.execute.result import RunResult, StepOutcome

    result = RunResult("p", "sha256:x", "r", "compensated", "c failed")
    result.steps["c"] = StepOutcome("c", "failed", 3, "boom\ntraceback…", "x")
    console.print(summary_table(result))
    text = console.export_text()
    assert "plan p: compensated" in text and "boom" in text and "traceback" not in text
