"""The runner with the real built-in actions: a timed-out shell step is really stopped."""

from __future__ import annotations

import asyncio
import json
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


def test_canary_with_the_real_probe_aborts_and_the_incident_names_the_metric(tmp_path):
    import httpx

    from tests.execute.fakes import RecordingAction

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": {"error_rate": 0.25}})

    async def no_sleep(_: float) -> None:
        return None

    wired = implementations(http_transport=httpx.MockTransport(handler), sleep=no_sleep)
    actions = dict(wired.actions)
    shell = RecordingAction("shell")
    actions["shell"] = shell
    loaded = plan_from(
        "canary: {steps: [canary], analysis: [judge]}\nsteps:\n"
        "  - id: canary\n    action: shell\n    with: {run: [deploy, canary]}\n"
        "    compensate:\n      action: shell\n      with: {run: [undo, canary]}\n"
        "  - id: judge\n    action: probe\n    needs: [canary]\n    with:\n"
        "      metric: error_rate\n      samples: 3\n      interval: 5\n"
        "      http: {url: 'https://metrics.example/canary', json_path: data.error_rate}\n"
        "      thresholds: {max_error_rate: 0.01}\n"
        "  - id: rollout\n    action: shell\n    needs: [canary]\n    with: {run: [deploy, all]}\n"
        "    compensate:\n      action: shell\n      with: {run: [undo, all]}\n"
    )
    h = make_runner(tmp_path, actions)
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "aborted"
    assert [c.inputs["run"] for c in shell.calls] == [["deploy", "canary"], ["undo", "canary"]]
    (incident,) = h.incidents.incidents
    evidence = json.dumps(incident.failed_metrics)
    assert "judge" in incident.failed_metrics and "0.25" in evidence
