"""``app.execute.github_mode``: the pure decisions of ``plangate execute``.

Check-run bodies are validated against GitHub's request schemas (``@octokit/openapi``, see
``tests/fixtures/github/openapi-execute-subset.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from app.errors import AttestationError
from app.execute import github_mode as gm
from app.execute.result import CompensationOutcome, RunResult, StepOutcome
from app.github.checks import ANNOTATIONS_PER_REQUEST, check_run_requests

OPENAPI = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures/github/openapi-execute-subset.json"
    ).read_text()
)["operations"]
SHA = "a" * 40
HEAD = "b" * 40


def _valid(operation: str, body: dict) -> None:
    errors = list(
        jsonschema.Draft4Validator(OPENAPI[operation]["request_schema"]).iter_errors(body)
    )
    assert errors == [], [e.message for e in errors]


def test_changed_plans_runs_added_and_modified_reports_deleted():
    diff = [
        ("A", "plans/new.yaml"),
        ("M", "plans/db.yml"),
        ("D", "plans/old.yaml"),
        ("M", "README.md"),
        ("A", "plans/notes.txt"),
        ("M", "policies/approvals.yaml"),
        ("D", "plans/moved.yaml"),
        ("A", "plans/moved.yaml"),  # a rename back onto a path: it exists, so it runs
    ]
    changed = gm.changed_plans(diff)
    assert changed.changed == ("plans/db.yml", "plans/moved.yaml", "plans/new.yaml")
    assert changed.deleted == ("plans/old.yaml",)


def _pull(number: int, merge: str | None, merged: bool = True) -> dict:
    return {
        "number": number,
        "merge_commit_sha": merge,
        "merged_at": "2026-11-25T10:00:00Z" if merged else None,
        "head": {"sha": HEAD},
        "user": {"login": "octocat"},
        "html_url": f"https://github.com/acme/ops/pull/{number}",
    }


def test_merged_pull_is_the_one_merged_as_this_commit():
    pulls = [_pull(3, "c" * 40), _pull(5, SHA, merged=False), _pull(7, SHA)]
    pr = gm.merged_pull(pulls, SHA)
    assert (pr.number, pr.head_sha, pr.author) == (7, HEAD, "octocat")


def test_open_pull_request_containing_the_commit_is_not_a_merge():
    with pytest.raises(AttestationError) as err:
        gm.merged_pull([_pull(5, SHA, merged=False)], SHA)
    assert err.value.check == "pull_request"


class _Files:
    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        self.files = files
        self.asked: list[str] = []

    def pulls_for_commit(self, sha: str) -> list:
        return []

    def file_at(self, path: str, ref: str) -> bytes | None:
        self.asked.append(path)
        return self.files.get((path, ref))


def test_attestation_lookup_prefers_sigstore_then_dsse():
    pr = gm.MergedPull(7, HEAD, "octocat", "")
    both = _Files(
        {
            (f"pr-7/{HEAD}.sigstore.json", "att"): b"S",
            (f"pr-7/{HEAD}.dsse.json", "att"): b"D",
        }
    )
    assert gm.fetch_attestation(both, "att", pr) == (f"att:pr-7/{HEAD}.sigstore.json", b"S")
    dsse = _Files({(f"pr-7/{HEAD}.dsse.json", "att"): b"D"})
    assert gm.fetch_attestation(dsse, "att", pr)[1] == b"D"
    with pytest.raises(AttestationError) as err:
        gm.fetch_attestation(_Files({}), "att", pr)
    assert err.value.check == "format" and "PR #7" in str(err.value)


def _result(status: str, **kw) -> RunResult:
    return RunResult(
        plan_id="p", plan_digest="sha256:" + "0" * 64, run_id="r1", status=status, **kw
    )


def _outcome(status: str, **kw) -> gm.PlanOutcome:
    return gm.PlanOutcome(path=f"plans/{status}.yaml", result=_result(status, **kw))


@pytest.mark.parametrize(
    ("statuses", "code", "conclusion"),
    [
        (["succeeded"], 0, "success"),
        (["succeeded", "paused"], 4, "action_required"),
        (["needs_attention"], 4, "action_required"),
        (["succeeded", "compensation_failed", "paused"], 3, "failure"),
        (["aborted"], 3, "failure"),
        ([], 0, "success"),
    ],
)
def test_worst_outcome_decides_exit_and_conclusion(statuses, code, conclusion):
    outcomes = [_outcome(s) for s in statuses]
    assert gm.exit_code(outcomes) == code
    assert gm.conclusion_for(outcomes) == conclusion


def test_refusal_outranks_success_and_pause_outranks_refusal():
    refused = gm.PlanOutcome(path="plans/x.yaml", refusal="no attestation")
    assert gm.exit_code([_outcome("succeeded"), refused]) == 1
    assert gm.exit_code([refused, _outcome("paused")]) == 4
    assert gm.conclusion_for([refused]) == "failure"


def test_check_run_body_is_bounded_and_annotations_batched_by_50():
    steps = {
        f"s{i}": StepOutcome(f"s{i}", status="failed", attempts=3, error="x" * 900)
        for i in range(120)
    }
    outcome = _outcome(
        "compensated",
        steps=steps,
        compensations=[CompensationOutcome("s1", "failed", error="undo failed")],
        reason="step failed",
    )
    outcome.step_lines = {f"s{i}": 10 + i for i in range(120)}
    check = gm.render_check([outcome], run_url="https://github.com/acme/ops/actions/runs/1")
    first, more = check_run_requests(check, head_sha=SHA)
    assert len(first["output"]["summary"]) <= 65_535
    assert "truncated" in first["output"]["summary"]
    assert len(first["output"]["annotations"]) == ANNOTATIONS_PER_REQUEST
    assert [len(b["output"]["annotations"]) for b in more] == [50, 21]  # 120 steps + 1 compensation
    assert first["output"]["annotations"][0]["start_line"] == 10
    first.pop("head_sha")
    _valid("checks/update", first)
    for body in more:
        _valid("checks/update", body)


def test_runbook_and_compensations_are_in_the_summary():
    from app.execute.result import Runbook, RunbookEntry

    entry = RunbookEntry(step_id="s1", action="shell", inputs={"run": ["undo"]}, command="undo")
    runbook = Runbook("p", "sha256:" + "0" * 64, "r1", "undo failed", ("s1",), (), entry, ())
    outcome = _outcome(
        "compensation_failed",
        steps={"s1": StepOutcome("s1", status="succeeded", attempts=1)},
        compensations=[CompensationOutcome("s1", "failed", attempts=2, error="boom")],
        runbook=runbook,
    )
    check = gm.render_check([outcome])
    assert check.conclusion == "failure"
    assert "manual rollback needed" in check.title
    assert "#### Manual rollback runbook" in check.summary and "$ undo" in check.summary
    assert "| `s1` | failed | 2 | boom |" in check.summary
    comment = gm.render_comment([outcome])
    _valid("issues/create-comment", {"body": comment})


def test_live_progress_is_throttled_and_never_raises():
    sent: list[dict] = []
    now = [0.0]

    def update(body):
        if len(sent) == 2:
            raise RuntimeError("GitHub is down")
        sent.append(body)

    progress = gm.CheckRunProgress(update, plan_path="plans/p.yaml", clock=lambda: now[0])
    progress.emit("run.started", run_id="r1")
    progress.emit("step.started", step="a", run_id="r1")
    progress.emit("step.succeeded", step="a", run_id="r1")
    assert len(sent) == 1, "updates within the interval are coalesced"
    now[0] = 11.0
    progress.emit("step.started", step="b", run_id="r1")
    assert len(sent) == 2
    now[0] = 30.0
    progress.emit("step.failed", step="b", run_id="r1")  # the update raises: swallowed
    assert progress.errors and "GitHub is down" in progress.errors[0]
    progress.emit("attempt.started", step="b")  # not a progress event: ignored
    body = progress.body()
    _valid("checks/update", body)
    assert "| `a` | succeeded | 1 |" in body["output"]["summary"]
    assert "| `b` | failed | 1 |" in body["output"]["summary"]
    assert "run `r1`" in body["output"]["summary"]
