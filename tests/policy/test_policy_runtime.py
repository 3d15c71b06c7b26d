"""Budgets, the executor's per-step check and queue ownership."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from policy_helpers import NOW, ctx, plan, policy

from app.cost import Usage
from app.policy.context import FileSpendLedger, SpendRecord, period_start
from app.policy.engine import authorize, check_step, evaluate

BUDGETS = """\
budgets:
  plan_max: {soft: "1.00", hard: "5.00"}
  teams:
    platform:
      period: month
      money: {soft: "10.00", hard: "20.00"}
queue:
  platform:
    enqueue: [platform, robot]
    retry: [sre]
    cancel: []
"""


def fixed(amount: str, sid: str = "a") -> str:
    return f"  - {{id: {sid}, action: noop, estimate: {{fixed: '{amount}'}}}}\n"


def test_plan_hard_budget_denies_and_names_the_limit():
    p = plan(fixed("3.50"), extra="budget: {money: {soft: '1', hard: '3'}}\n")
    decision = evaluate(p, policy(), ctx())
    (deny,) = decision.denials
    assert deny.rule == "budget.plan.money"
    assert "3.5 exceeds hard limit 3" in deny.reason
    assert decision.budget.verdict == "block"


def test_plan_soft_budget_warns():
    p = plan(fixed("2"), extra="budget: {money: {soft: '1', hard: '3'}}\n")
    decision = evaluate(p, policy(), ctx())
    assert decision.allowed and decision.budget.verdict == "warn"
    assert [m.rule for m in decision.warnings] == ["budget.plan.money"]


def test_policy_plan_max():
    decision = evaluate(plan(fixed("6")), policy(BUDGETS), ctx())
    assert [m.rule for m in decision.denials] == ["budget.policy:plan_max.money"]


def test_team_budget_counts_spend_so_far_in_the_period():
    start = period_start(NOW, "month")
    ledger = FileSpendLedger(
        [
            SpendRecord("platform", start + timedelta(hours=1), Usage(money=Decimal("18"))),
            SpendRecord("platform", start - timedelta(seconds=1), Usage(money=Decimal("100"))),
            SpendRecord("sre", start + timedelta(hours=1), Usage(money=Decimal("100"))),
        ]
    )
    decision = evaluate(plan(fixed("2.50")), policy(BUDGETS), ctx(spend=ledger))
    (deny,) = decision.denials
    assert deny.rule == "budget.team:platform.money"
    assert deny.source == "policies/extra.yaml:6"
    check = next(c for c in decision.budget.checks if c.scope == "team:platform")
    assert check.spent == Decimal("18") and check.amount == Decimal("20.50")
    assert (
        evaluate(plan(fixed("1.50")), policy(BUDGETS), ctx(spend=ledger)).budget.verdict == "warn"
    )


def test_file_spend_ledger_reads_json_lines(tmp_path):
    path = tmp_path / "spend.jsonl"
    path.write_text(
        '{"team": "platform", "at": "2026-03-02T00:00:00+00:00", "money": "1.10"}\n\n'
        '{"team": "platform", "at": "2026-03-03T00:00:00+00:00", "money": "2.20", "tokens": 5}\n'
    )
    ledger = FileSpendLedger.from_path(path)
    spent = ledger.spent("platform", period_start(NOW, "month"), NOW)
    assert spent.money == Decimal("3.30") and spent.tokens == 5


def test_file_spend_ledger_bad_line_names_file_and_line(tmp_path):
    from app.errors import InputError

    path = tmp_path / "spend.jsonl"
    path.write_text('{"team": "platform", "at": "2026-03-02T00:00:00+00:00"}\n{"team": 1}\n')
    with pytest.raises(InputError, match=r"spend.jsonl:2: invalid spend record"):
        FileSpendLedger.from_path(path)


def test_period_start():
    assert period_start(NOW, "day").isoformat() == "2026-03-18T00:00:00+00:00"
    assert period_start(NOW, "week").isoformat() == "2026-03-16T00:00:00+00:00"
    assert period_start(NOW, "month").isoformat() == "2026-03-01T00:00:00+00:00"


# -- check_step -----------------------------------------------------------------------------

STEPS = (
    "  - {id: read, action: shell, mutates: false, with: {run: [ls]}}\n"
    "  - {id: write, action: shell, needs: [read], with: {run: [rm]},"
    " compensate: {action: shell, with: {run: [undo]}}, estimate: {fixed: '2'}}\n"
)


def test_check_step_applies_step_rules_to_that_step_only():
    pol = policy("rules:\n  - {id: no-rm, when: {commands: [rm]}, message: rm is not allowed}\n")
    assert check_step(plan(STEPS), "read", pol, ctx()).allowed
    decision = check_step(plan(STEPS), "write", pol, ctx())
    assert [(m.rule, m.step) for m in decision.denials] == [("no-rm", "write")]
    assert decision.step == "write"


def test_check_step_stops_at_hard_budget_with_actual_usage():
    p = plan(STEPS, extra="budget: {money: {hard: '3'}}\n")
    assert check_step(p, "write", policy(), ctx(run_usage=Usage(money=Decimal("0.5")))).allowed
    decision = check_step(p, "write", policy(), ctx(run_usage=Usage(money=Decimal("1.5"))))
    assert [m.rule for m in decision.denials] == ["budget.plan.money"]
    assert decision.denials[0].step == "write"


def test_check_step_rechecks_rbac():
    decision = check_step(plan(STEPS, team="data"), "write", policy(), ctx())
    assert {m.rule for m in decision.denials} == {"access"}


# -- queue ownership ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "verb", "allowed"),
    [
        ("alice", "enqueue", True),  # platform member
        ("robot", "enqueue", True),  # listed login
        ("carol", "enqueue", False),
        ("carol", "retry", True),  # sre member
        ("alice", "retry", False),
        ("alice", "cancel", False),  # nobody may cancel
    ],
)
def test_queue_ownership(actor, verb, allowed):
    decision = authorize(actor, verb, plan(), policy(BUDGETS))
    assert decision.allowed is allowed
    (match,) = decision.trace
    assert match.rule == f"queue.platform.{verb}"
    assert match.source == "policies/extra.yaml:10"


def test_queue_defaults_to_owning_team_members():
    pol = policy()
    assert authorize("alice", "cancel", plan(), pol).allowed
    denied = authorize("carol", "cancel", plan(), pol)
    assert not denied.allowed and denied.denials[0].rule == "queue.default-owning-team"


def test_queue_unknown_verb_is_an_error():
    with pytest.raises(ValueError, match="unknown queue verb"):
        authorize("alice", "delete", plan(), policy())  # type: ignore[arg-type]
