from __future__ import annotations

import asyncio
from decimal import Decimal

from app.errors import AttestationError
from app.execute.actions.base import Usage
from app.execute.ports import StaticApprovalGate, StaticPolicy
from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from, shell_step


def _plan(budget: str = ""):
    return plan_from(
        budget
        + "steps:\n"
        + "  - id: look\n    action: noop\n"
        + shell_step("a", ["look"])
        + shell_step("b", ["a"])
        + shell_step("c", ["b"])
    )


def test_mutation_refused_without_attestation(tmp_path):
    shell, noop = RecordingAction("shell"), RecordingAction("noop")
    gate = StaticApprovalGate(error=AttestationError("no attestation for digest", check="missing"))
    h = make_runner(tmp_path, impls(shell, noop), gate=gate)
    result = asyncio.run(h.runner.run(_plan()))
    assert result.status == "refused"
    assert "no attestation for digest" in result.reason
    assert shell.calls == [] and noop.calls == []  # nothing ran, mutating or not
    assert h.events.of("approval.refused")[0]["check"] == "missing"
    assert h.state.attempts(_plan().digest) == []


def test_a_crashing_verifier_fails_closed(tmp_path):
    class Broken:
        def verify(self, plan, digest):
            raise RuntimeError("sigstore exploded")

    shell = RecordingAction("shell")
    h = make_runner(tmp_path, impls(shell), gate=Broken())
    result = asyncio.run(h.runner.run(_plan()))
    assert result.status == "refused" and shell.calls == []


def test_read_only_plan_needs_no_attestation(tmp_path):
    loaded = plan_from("steps:\n  - id: look\n    action: noop\n")
    gate = StaticApprovalGate(error=AttestationError("none", check="missing"))
    h = make_runner(tmp_path, impls(), gate=gate)
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    assert gate.calls == []


def test_runtime_policy_denial_aborts_and_compensates(tmp_path):
    shell = RecordingAction("shell")
    policy = StaticPolicy(deny={"c": "rbac: team platform may not run shell in production"})
    h = make_runner(tmp_path, impls(shell), policy=policy)
    result = asyncio.run(h.runner.run(_plan()))
    assert result.status == "aborted"
    assert "runtime policy denied step 'c': rbac" in result.reason
    assert policy.checked == ["a", "b", "c"]  # mutating steps only, each right before it runs
    assert [c.inputs["run"] for c in shell.calls] == [
        ["do", "a"],
        ["do", "b"],
        ["undo", "b"],
        ["undo", "a"],
    ]
    assert result.steps["c"].status == "blocked"


def _tokens_plan(mode: str):
    return _plan(f"budget:\n  tokens: {{soft: 100, hard: 250}}\n  on_hard_limit: {mode}\n")


def _spending_shell() -> RecordingAction:
    return RecordingAction(
        "shell",
        usage={s: Usage(tokens_input=90, tokens_output=40, money=Decimal("0.5")) for s in "abc"},
    )


def test_hard_budget_pause_stops_before_the_next_step(tmp_path):
    shell = _spending_shell()
    h = make_runner(tmp_path, impls(shell))
    result = asyncio.run(h.runner.run(_tokens_plan("pause")))
    assert result.status == "paused"
    assert shell.steps() == ["a", "b"]  # 130 tokens each: 260 >= 250 before 'c'
    assert "budget hard limit reached before step 'c'" in result.reason
    assert result.steps["c"].status == "blocked"
    assert result.usage["money"] == "1.0"
    # paused is resumable: the same digest resumes; a and b are not repeated (usage is durable,
    # so with the same budget it pauses again at once)
    again = asyncio.run(h.runner.run(_tokens_plan("pause")))
    assert again.status == "paused" and again.resumed
    assert shell.steps() == ["a", "b"]


def test_hard_budget_abort_compensates(tmp_path):
    shell = RecordingAction(
        "shell", usage={s: Usage(tokens_input=200, tokens_output=100) for s in "abc"}
    )
    h = make_runner(tmp_path, impls(shell))
    result = asyncio.run(h.runner.run(_tokens_plan("abort")))
    assert result.status == "aborted"
    assert "budget hard limit reached before step 'b'" in result.reason
    assert [c.inputs["run"] for c in shell.calls] == [["do", "a"], ["undo", "a"]]
    assert result.usage["tokens_input"] == 400  # the undo of a is counted too


def test_soft_budget_warns_once(tmp_path):
    shell = RecordingAction("shell", usage={"a": Usage(tokens_input=150)})
    h = make_runner(tmp_path, impls(shell))
    result = asyncio.run(h.runner.run(_tokens_plan("abort")))
    assert result.status == "succeeded"
    assert len(h.events.of("budget.soft_limit")) == 1
    assert result.warnings and "soft limit" in result.warnings[0]


def test_paused_run_resumes_after_a_new_approval_raises_the_budget(tmp_path):
    shell = _spending_shell()
    h = make_runner(tmp_path, impls(shell))
    paused = asyncio.run(h.runner.run(_tokens_plan("pause")))
    assert paused.status == "paused"
    raised = _plan("budget:\n  tokens: {soft: 100, hard: 1000}\n  on_hard_limit: pause\n")
    assert raised.digest != _tokens_plan("pause").digest
    result = asyncio.run(h.runner.run(raised))
    assert result.status == "succeeded" and result.resumed
    assert shell.steps() == ["a", "b", "c"]  # a and b were not repeated
    assert result.run_id == paused.run_id  # one correlation id across the pause
    assert h.gate.calls[-1] == raised.digest  # the raised plan needed its own approval
    assert h.state.get_run(_tokens_plan("pause").digest).status == "superseded"
    assert h.events.of("run.adopted")[0]["steps"] == 3  # look, a, b


def test_a_changed_plan_does_not_adopt_a_paused_run(tmp_path):
    shell = _spending_shell()
    h = make_runner(tmp_path, impls(shell))
    assert asyncio.run(h.runner.run(_tokens_plan("pause"))).status == "paused"
    other = plan_from("steps:\n  - id: look\n    action: noop\n" + shell_step("a", ["look"]))
    result = asyncio.run(h.runner.run(other))
    assert not result.resumed
    assert shell.steps() == ["a", "b", "a"]
