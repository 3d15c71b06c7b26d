from __future__ import annotations

import asyncio

from app.execute.actions.base import ActionResult
from tests.execute.fakes import (
    FailingAction,
    RecordingAction,
    fail,
    impls,
    make_runner,
    plan_from,
    shell_step,
)


def _three_then_fail(extra_last: str = "") -> str:
    return (
        "steps:\n"
        + shell_step("a")
        + shell_step("b", ["a"])
        + shell_step("nope", ["b"], compensate=False)
        + shell_step("c", ["b"])
        + "  - id: boom\n    action: http\n    needs: [c]\n"
        "    with: {method: POST, url: 'https://svc.example/boom'}\n"
        "    retry: {max_attempts: 2, initial_interval: 1s}\n"
        "    compensate: {none: the request failed so there is nothing to undo}\n" + extra_last
    )


class OrderedShell(RecordingAction):
    """Completes steps in a chosen order by yielding more for some."""

    def __init__(self, delays: dict[str, int], **kw):
        super().__init__("shell", **kw)
        self.delays = delays

    async def run(self, inputs, ctx):
        for _ in range(self.delays.get(ctx.step_id, 0)):
            await asyncio.sleep(0)
        return await super().run(inputs, ctx)


def test_failure_compensates_completed_steps_in_reverse_completion_order(tmp_path):
    loaded = plan_from(_three_then_fail())
    # 'nope' and 'c' run in parallel after 'b'; 'nope' takes longer
    shell = OrderedShell({"nope": 20})
    http = FailingAction("http", kind="http.5xx")
    h = make_runner(tmp_path, impls(shell, http))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert "step 'boom' failed" in result.reason
    assert http.calls == ["boom", "boom"]  # its own retry policy: 2 attempts
    undo = [c.inputs["run"] for c in shell.calls if c.inputs["run"][0] == "undo"]
    assert undo == [["undo", "c"], ["undo", "b"], ["undo", "a"]]
    statuses = [(c.step_id, c.status) for c in result.compensations]
    # 'nope' (delayed) completed after 'c': reverse completion order puts it first
    assert statuses == [
        ("nope", "no_undo"),
        ("c", "succeeded"),
        ("b", "succeeded"),
        ("a", "succeeded"),
    ]
    assert result.runbook is None


def test_failed_compensation_stops_the_chain_with_a_runbook(tmp_path):
    loaded = plan_from(_three_then_fail())
    shell = OrderedShell({"nope": 20})
    undo_attempts = {"n": 0}
    original = shell.run

    async def run(inputs, ctx):
        if inputs.run == ["undo", "b"]:
            undo_attempts["n"] += 1
            raise fail("shell.exit")
        return await original(inputs, ctx)

    shell.run = run  # type: ignore[method-assign]
    h = make_runner(tmp_path, impls(shell, FailingAction("http")))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensation_failed"
    assert undo_attempts["n"] == 2  # the compensation's own retry policy (max_attempts: 2)
    assert [c.inputs["run"] for c in shell.calls if c.inputs["run"][0] == "undo"] == [
        ["undo", "c"]
    ]  # 'a' was NOT compensated: the chain stops at the failure
    rb = result.runbook
    assert rb is not None
    assert rb.done_steps == ("a", "b", "c", "nope")
    assert rb.compensated == ("c",)
    assert rb.failed is not None and rb.failed.step_id == "b"
    assert [e.step_id for e in rb.remaining] == ["a"]
    text = rb.render()
    assert "$ undo b" in text and "$ undo a" in text
    assert "compensation of step 'b' failed" in result.reason
    assert h.state.get_run(loaded.digest).status == "compensation_failed"
    assert "runbook.created" in h.events.types()


def test_compensation_uses_outputs_of_its_own_step(tmp_path):
    loaded = plan_from(
        "steps:\n"
        "  - id: create\n    action: shell\n    with: {run: [create]}\n"
        "    compensate:\n      action: shell\n"
        "      with: {run: [delete, '${{ steps.create.outputs.id }}']}\n"
        "  - id: boom\n    action: http\n    needs: [create]\n"
        "    with: {url: 'https://svc.example/'}\n    retry: {max_attempts: 1}\n"
        "    compensate: {none: nothing to undo here}\n"
    )
    shell = RecordingAction("shell", outputs={"create": {"id": "res-42"}})
    h = make_runner(tmp_path, impls(shell, FailingAction("http")))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert shell.calls[-1].inputs["run"] == ["delete", "res-42"]
    assert shell.calls[-1].key == f"{loaded.digest}:create:compensate"


CANARY = """canary: {{steps: [canary], analysis: [judge]}}
steps:
{prep}  - id: canary
    action: shell
    needs: [prep]
    with: {{run: [deploy, canary]}}
    compensate:
      action: shell
      with: {{run: [undo, canary]}}
  - id: judge
    action: probe
    needs: [canary]
    with:
      metric: error_rate
      http: {{url: 'https://metrics.example/canary', json_path: data.error_rate}}
      thresholds: {{max_error_rate: 0.01}}
{rest}"""


def _canary_plan():
    return plan_from(
        CANARY.format(
            prep=shell_step("prep"),
            rest=shell_step("rollout", ["prep"]),
        )
    )


class Probe(RecordingAction):
    def __init__(self, error_rate: float):
        super().__init__("probe")
        self.error_rate = error_rate

    async def run(self, inputs, ctx):
        await super().run(inputs, ctx)
        if self.error_rate > 0.01:
            err = fail("probe.threshold", retryable=False)
            err.outputs = {"samples": [self.error_rate], "verdict": "error_rate breaks"}
            raise err
        return ActionResult(outputs={"value": self.error_rate})


def test_canary_runs_first_and_promotes(tmp_path):
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, impls(shell, Probe(0.001)))
    result = asyncio.run(h.runner.run(_canary_plan()))
    assert result.status == "succeeded"
    assert shell.steps() == ["prep", "canary", "rollout"]
    assert "run.promoted" in h.events.types()


def test_canary_threshold_breach_aborts_compensates_and_opens_incident(tmp_path):
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, impls(shell, Probe(0.2)))
    result = asyncio.run(h.runner.run(_canary_plan()))
    assert result.status == "aborted"
    assert "canary analysis 'judge' failed" in result.reason
    assert "rollout" not in shell.steps()  # the rest of the plan never started
    assert [c.inputs["run"] for c in shell.calls][-2:] == [["undo", "canary"], ["undo", "prep"]]
    (incident,) = h.incidents.incidents
    assert incident.failed_metrics["judge"]["samples"] == [0.2]
    assert result.incident == "memory:1"
    assert {"canary.aborted", "incident.opened"} <= set(h.events.types())


def test_file_incident_reporter_writes_markdown_and_json(tmp_path):
    from app.execute.incidents import FileIncidentReporter
    from app.execute.ports import Incident

    where = FileIncidentReporter(tmp_path / "incidents").open_incident(
        Incident("p", "sha256:x", "r1", "Canary aborted: plan p", "why", {"judge": {"v": 1}})
    )
    assert where.endswith("p-r1.md")
    assert '"v": 1' in (tmp_path / "incidents" / "p-r1.md").read_text()
    assert (tmp_path / "incidents" / "p-r1.json").exists()


def test_github_incident_falls_back_to_a_file_when_github_fails(tmp_path):
    from app.execute.incidents import FileIncidentReporter, GitHubIssueIncidents
    from app.execute.ports import Incident

    class Opener:
        def __init__(self, error=None):
            self.error, self.calls = error, []

        def open_issue(self, repo, title, body, labels):
            self.calls.append((repo, title, labels))
            if self.error:
                raise self.error
            return "https://github.example/acme/ops/issues/7"

    incident = Incident("p", "sha256:x", "r1", "Canary aborted: plan p", "why", {"judge": {}})
    fallback = FileIncidentReporter(tmp_path)
    ok = GitHubIssueIncidents(Opener(), repo="acme/ops", fallback=fallback)
    assert ok.open_incident(incident).endswith("/issues/7")
    broken = GitHubIssueIncidents(Opener(RuntimeError("503")), repo="acme/ops", fallback=fallback)
    where = broken.open_incident(incident)
    assert "GitHub issue failed: RuntimeError: 503" in where
    assert (tmp_path / "p-r1.md").exists()
