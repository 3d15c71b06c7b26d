"""``app.execute.queue``: the queue request logic the CLI, the App and the executor share, and
the runner's behaviour on a cancelled run (stop before the next step, undo what ran)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from app.errors import InputError
from app.execute.queue import (
    RESUMABLE,
    START_OVER,
    QueuePlan,
    QueueRequest,
    apply_cancel,
    audit_draft,
    cancel_path,
    check_actions,
    decide,
    execute_external_id,
    parse_external_id,
    prepare_retry,
    request_id_for,
    request_path,
)
from app.policy.loader import load_policy_dir
from tests.execute.fakes import RecordingAction, fail, impls, make_runner, plan_from, shell_step
from tests.test_architecture import FORBIDDEN, _violations

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "tests/fixtures/github/openapi-execute-subset.json").read_text())[
    "operations"
]
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def test_queue_module_is_pure_core():
    assert FORBIDDEN  # the architecture test's list of adapters
    assert _violations(ROOT / "app" / "execute" / "queue.py") == []


# --- decide / audit ---------------------------------------------------------------------------


def _plan():
    return plan_from("steps:\n" + shell_step("a"))  # team platform


def test_decide_names_the_rule_reason_and_policy_digest():
    policy = load_policy_dir(ROOT / "policies")
    loaded = _plan()
    allowed = decide("carol", "retry", loaded.plan, loaded.digest, policy)
    denied = decide("judy", "retry", loaded.plan, loaded.digest, policy)
    assert allowed.allowed and allowed.rule == "queue.platform.retry"
    assert (
        allowed.policy_digest == policy.digest and allowed.who() == "carol (queue.platform.retry)"
    )
    assert not denied.allowed and denied.verdict == "deny"
    assert "judy may not retry plans of team platform" in denied.denials[0]
    # judy (security) may cancel platform plans
    assert decide("judy", "cancel", loaded.plan, loaded.digest, policy).allowed


def test_a_request_without_an_actor_is_denied():
    policy = load_policy_dir(ROOT / "policies")
    loaded = _plan()
    decision = decide("", "cancel", loaded.plan, loaded.digest, policy)
    assert not decision.allowed and decision.rule == "queue.actor"


def test_audit_draft_carries_actor_verb_verdict_rule_and_policy_digest():
    policy = load_policy_dir(ROOT / "policies")
    loaded = _plan()
    decision = decide("judy", "retry", loaded.plan, loaded.digest, policy)
    draft = audit_draft(decision, now=NOW, via="github:check_run/9")
    assert draft.type == "queue.requested" and draft.actor.id == "judy"
    assert draft.correlation_id == "queue-" + loaded.digest.removeprefix("sha256:")[:16]
    assert draft.payload["verb"] == "retry" and draft.payload["verdict"] == "deny"
    assert draft.payload["rule"] == "queue.platform.retry"
    assert draft.payload["policy_digest"] == policy.digest
    assert draft.payload["via"] == "github:check_run/9"


# --- state transitions ------------------------------------------------------------------------


@dataclass
class _Run:
    run_id: str
    status: str
    reason: str = ""


class _State:
    def __init__(self, status: str | None) -> None:
        self.run = _Run("run-1", status) if status else None
        self.calls: list[str] = []

    def get_run(self, digest):
        return self.run

    def cancel_run(self, digest, reason, now):
        self.calls.append("cancel_run")
        self.run.status = "cancelled"

    def retry_compensations(self, digest, reason, now):
        self.calls.append("retry_compensations")
        return 1

    def reset_run(self, digest):
        self.calls.append("reset_run")


@pytest.mark.parametrize(
    ("status", "action", "calls"),
    [
        *[(s, "resume", []) for s in sorted(RESUMABLE)],
        *[(s, "start_over", ["reset_run"]) for s in sorted(START_OVER)],
        ("compensation_failed", "compensations", ["retry_compensations"]),
    ],
)
def test_retry_transitions(status, action, calls):
    state = _State(status)
    out = prepare_retry(state, DIGEST, label="plans/x.yaml", reason="r", now=1.0)
    assert (out.status, out.action, state.calls) == (status, action, calls)


@pytest.mark.parametrize("status", ["succeeded", "cancelled"])
def test_retry_of_a_succeeded_or_cancelled_run_is_refused(status):
    with pytest.raises(InputError, match=f"plans/x.yaml: run run-1 ended '{status}'"):
        prepare_retry(_State(status), DIGEST, label="plans/x.yaml", reason="r", now=1.0)
    with pytest.raises(InputError, match="no run of this plan digest"):
        prepare_retry(_State(None), DIGEST, label="plans/x.yaml", reason="r", now=1.0)


def test_cancel_transitions():
    assert apply_cancel(_State(None), DIGEST, reason="r", now=1.0).run_id is None
    state = _State("running")
    out = apply_cancel(state, DIGEST, reason="r", now=1.0)
    assert (out.status, out.changed, state.calls) == ("running", True, ["cancel_run"])
    again = apply_cancel(state, DIGEST, reason="r", now=2.0)
    assert (again.status, again.changed) == ("cancelled", False)


# --- the App's request record -----------------------------------------------------------------


def _request(**kw) -> QueueRequest:
    fields = dict(
        id=request_id_for("retry", "delivery-1"),
        verb="retry",
        actor="alice",
        repository="acme/ops",
        commit="c" * 40,
        plans=(QueuePlan("plans/a.yaml", DIGEST),),
        verdict="allow",
        rules=("queue.platform.retry",),
        reasons=("alice may retry",),
        policy_digest="sha256:" + "0" * 64,
        requested_at=NOW,
        check_run_id=9,
        delivery_id="delivery-1",
    )
    fields.update(kw)
    return QueueRequest(**fields)


def test_request_record_round_trips():
    request = _request()
    back = QueueRequest.from_json(request.to_json(), source="x")
    assert back == request
    assert request_path(request.id) == f"queue/requests/{request.id}.json"
    assert request_id_for("retry", "delivery-1") == request.id  # a redelivery: the same id
    assert cancel_path(DIGEST) == f"queue/cancel/{'ab' * 32}.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verdict": "deny"}, "policy denied it"),
        ({"repository": "evil/ops"}, "it is for evil/ops"),
        ({"verb": "cancel"}, "it asks to cancel"),
        ({"requested_at": NOW - timedelta(hours=7)}, "valid for 6 h"),
        ({"commit": "main"}, "is not a commit SHA"),
        ({"plans": ()}, "names no plan"),
    ],
)
def test_a_request_that_does_not_fit_is_refused(change, message):
    request = _request(**change)
    with pytest.raises(InputError, match=message):
        request.check_for_execution(
            request_id=_request().id, repository="acme/ops", verb="retry", now=NOW
        )


def test_malformed_records_and_ids_are_input_errors():
    with pytest.raises(InputError, match=r"x\.json: not JSON"):
        QueueRequest.from_json(b"{", source="x.json")
    with pytest.raises(InputError, match=r"not a plangate\.dev/queue-request/v1 record"):
        QueueRequest.from_json(b"{}", source="x.json")
    doc = json.loads(_request().to_json())
    doc["verb"] = "delete"
    with pytest.raises(InputError, match=r"x\.json: bad queue request field"):
        QueueRequest.from_json(json.dumps(doc).encode(), source="x.json")
    with pytest.raises(InputError, match="is not of the form"):
        request_path("../../etc/passwd")


# --- the check run ----------------------------------------------------------------------------


def test_external_id_names_plans_and_digest_prefixes_within_255_characters():
    plans = [(f"plans/p{i:03d}.yaml", DIGEST) for i in range(20)]
    external = execute_external_id(plans)
    assert len(external) <= 255
    parsed = parse_external_id(external)
    assert parsed[0] == ("plans/p000.yaml", "ab" * 8) and len(parsed) < 20
    assert parse_external_id("c" * 40) == [] and parse_external_id(None) == []


@pytest.mark.parametrize(
    ("statuses", "identifiers"),
    [
        (["succeeded"], []),
        (["compensated"], ["retry"]),
        (["failed"], ["retry"]),
        (["aborted"], ["retry"]),
        (["compensation_failed"], ["retry"]),
        (["needs_attention"], ["retry"]),
        (["paused"], ["retry", "cancel"]),
        (["running"], ["cancel"]),
        (["refused"], []),
    ],
)
def test_check_actions_match_github_limits(statuses, identifiers):
    actions = check_actions(statuses)
    assert [a["identifier"] for a in actions] == identifiers
    schema = OPENAPI["checks/update"]["request_schema"]
    errors = list(jsonschema.Draft4Validator(schema).iter_errors({"actions": actions}))
    assert errors == []


# --- the runner on a cancelled run ------------------------------------------------------------


class _CancelDuring(RecordingAction):
    """Runs like ``RecordingAction``; while step ``during`` runs, someone cancels the run."""

    def __init__(self, state_ref, during: str, how: str) -> None:
        super().__init__("shell")
        self.state_ref = state_ref
        self.during = during
        self.how = how
        self.outside: dict[str, str] = {}

    async def run(self, inputs, ctx):
        if ctx.step_id == self.during and inputs.model_dump()["run"][0] == "do":
            if self.how == "state":  # plangate cancel from another process (same store)
                self.state_ref[0].cancel_run(ctx.plan_digest, "cancelled by judy", 5.0)
            else:  # the App's record, seen through Runner.cancel_requested
                self.outside[ctx.plan_digest] = "cancelled by judy (queue.platform.cancel)"
        return await super().run(inputs, ctx)


def _three_steps():
    return plan_from("steps:\n" + shell_step("a") + shell_step("b", ["a"]) + shell_step("c", ["b"]))


@pytest.mark.parametrize("how", ["state", "outside"])
def test_a_cancel_stops_the_run_before_its_next_step_and_compensates(tmp_path, open_state, how):
    loaded = _three_steps()
    ref: list = [None]
    shell = _CancelDuring(ref, "b", how)
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    ref[0] = h.state
    h.runner.cancel_requested = shell.outside.get
    result = asyncio.run(h.runner.run(loaded))
    runs = [c.inputs["run"] for c in shell.calls]
    # b was already running: it finishes (never half-applied); c never starts; b, a undone
    assert runs == [["do", "a"], ["do", "b"], ["undo", "b"], ["undo", "a"]]
    assert result.status == "aborted"
    assert "cancelled before step 'c'" in result.reason and "judy" in result.reason
    assert result.steps["c"].status == "blocked"
    run = h.state.get_run(loaded.digest)
    assert run.status == "cancelled"  # exactly as after plangate cancel: final
    # a re-run does nothing
    again = asyncio.run(h.runner.run(loaded))
    assert again.status == "cancelled" and len(shell.calls) == 4


def test_a_cancel_whose_compensation_fails_surfaces_the_runbook(tmp_path, open_state):
    loaded = _three_steps()
    ref: list = [None]
    shell = _CancelDuring(ref, "b", "state")
    shell.script["a"] = [None, fail("undo-broke", retryable=False, step="a")]
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    ref[0] = h.state
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensation_failed"
    assert result.runbook is not None and "a" in result.runbook.render()
    assert h.state.get_run(loaded.digest).status == "cancelled"


def test_a_failing_outside_cancel_check_does_not_stop_the_run(tmp_path, open_state):
    loaded = _three_steps()
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))

    def broken(digest: str) -> str | None:
        raise OSError("GitHub is down")

    h.runner.cancel_requested = broken
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "succeeded"
    assert any(e[0] == "cancel.check_failed" for e in h.events.events)


def test_a_cancelled_paused_run_has_its_changes_undone_on_the_next_invocation(tmp_path, open_state):
    """Cancelled while no runner held it (paused after 'a'): the next invocation of the digest
    compensates 'a' and goes no further; after that it is final."""
    loaded = _three_steps()
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    s, d = h.state, loaded.digest
    s.start_run(d, "run-1", loaded.plan.id, loaded.path, 1.0)
    s.begin_attempt(d, "step", "a", 1, "k", 1.0)
    s.complete_step(d, "step", "a", 1, {"done": "a"}, {}, 2.0)
    s.finish_run(d, "paused", "budget", 3.0)
    s.cancel_run(d, "cancelled by judy (queue.platform.cancel)", 4.0)
    result = asyncio.run(h.runner.run(loaded))
    assert [c.inputs["run"] for c in shell.calls] == [["undo", "a"]]
    assert result.status == "aborted" and "cancelled by judy" in result.reason
    assert s.get_run(d).status == "cancelled"
    again = asyncio.run(h.runner.run(loaded))
    assert again.status == "cancelled" and len(shell.calls) == 1


def test_a_cancelled_run_that_changed_nothing_stays_final(tmp_path, open_state):
    loaded = _three_steps()
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell))
    h.state.start_run(loaded.digest, "run-1", loaded.plan.id, loaded.path, 1.0)
    h.state.cancel_run(loaded.digest, "cancelled by judy", 2.0)
    assert asyncio.run(h.runner.run(loaded)).status == "cancelled"
    assert shell.calls == []


def test_cli_cancel_of_a_paused_run_says_the_next_run_undoes_its_changes(
    tmp_path, capsys, monkeypatch
):
    """``plangate cancel`` of a run that changed things and is not running names the steps and
    how they get undone (``--restart`` alone would forget them)."""
    import shutil
    import subprocess

    from app.cli import main
    from app.execute.state import StateStore
    from app.plan.loader import load_plan

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "p.yaml").write_text(
        "apiVersion: plangate.dev/v1\nkind: Plan\nid: p\ntitle: t\nteam: platform\n"
        "environment: local\nsteps:\n" + shell_step("a") + shell_step("b", ["a"])
    )
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    monkeypatch.chdir(tmp_path)
    digest = load_plan("plans/p.yaml").digest
    s = StateStore.open(tmp_path / "data")
    s.start_run(digest, "run-1", "p", "plans/p.yaml", 1.0)
    s.begin_attempt(digest, "step", "a", 1, "k", 1.0)
    s.complete_step(digest, "step", "a", 1, {}, {}, 2.0)
    s.finish_run(digest, "paused", "budget", 3.0)
    s.close()
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["cancel", "plans/p.yaml", "--actor", "judy", *data]) == 0
    out = capsys.readouterr().out
    assert "Its completed step(s) a changed things" in out
    assert "`plangate run plans/p.yaml` undoes them" in out
