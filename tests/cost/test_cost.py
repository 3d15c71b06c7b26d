"""Cost: exact Decimal figures from known price tables, totals, budgets and the base/head diff."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.cost import (
    ModelPrice,
    PriceTable,
    TeamBudget,
    Usage,
    budget_checks,
    diff_costs,
    estimate_plan,
    fmt_amount,
    totals_by,
)
from app.plan.loader import load_plan_bytes
from app.plan.model import Budget

PRICES = PriceTable(
    models={"m": ModelPrice(input_per_1k=Decimal("0.00015"), output_per_1k=Decimal("0.0006"))},
    api_call=Decimal("0.0001"),
    runner_minute=Decimal("0.008"),
    actions={"github.workflow": Decimal("0.01")},
)


def plan(steps: str, *, pid: str = "p", team: str = "t", env: str = "staging"):
    text = (
        f"apiVersion: plangate.dev/v1\nkind: Plan\nid: {pid}\ntitle: T\nteam: {team}\n"
        f"environment: {env}\nsteps:\n{steps}"
    )
    return load_plan_bytes("plans/p.yaml", text.encode()).plan


STEPS = """\
  - id: gen
    action: agent
    with: {model: m, prompt: hi}
    estimate: {tokens: {model: m, input: 600000, output: 200000}, api_calls: 3}
  - id: deploy
    action: github.workflow
    with: {repo: a/b, workflow: d.yml}
    compensate: {action: noop}
    estimate: {runner_minutes: 0.1, fixed: "0.2"}
"""


def test_exact_step_and_plan_figures():
    cost = estimate_plan(plan(STEPS), PRICES)
    gen, deploy = cost.steps
    # 600k * 0.00015/1k = 0.09; 200k * 0.0006/1k = 0.12; 3 calls * 0.0001 = 0.0003
    assert dict(gen.parts) == {
        "tokens.input": Decimal("0.09"),
        "tokens.output": Decimal("0.12"),
        "api_calls": Decimal("0.0003"),
    }
    assert gen.money == Decimal("0.2103")
    # 0.1 runner minutes (a float in the plan, taken exactly) * 0.008 + 0.2 fixed + 0.01 action
    assert deploy.runner_minutes == Decimal("0.1")
    assert deploy.money == Decimal("0.2108")
    assert cost.money == Decimal("0.4211")
    assert cost.tokens == 800000 and cost.api_calls == 3
    assert fmt_amount(cost.money) == "0.4211"
    assert cost.to_dict()["money"] == "0.4211"


def test_no_float_rounding_surprises():
    steps = "".join(
        f"  - {{id: s{i}, action: noop, estimate: {{fixed: '0.1'}}}}\n" for i in range(3)
    )
    assert estimate_plan(plan(steps), PRICES).money == Decimal("0.3")


def test_unpriced_model_is_reported_not_guessed():
    steps = (
        "  - {id: g, action: agent, with: {model: x, prompt: p}, "
        "estimate: {tokens: {model: x, input: 5}}}\n"
    )
    cost = estimate_plan(plan(steps), PRICES)
    assert cost.money == 0 and cost.unpriced == ("step 'g': model 'x' is not in the price table",)


def test_totals_by_team_and_environment():
    a = estimate_plan(plan(STEPS, pid="a", team="x", env="prod"), PRICES)
    b = estimate_plan(plan(STEPS, pid="b", team="x", env="dev"), PRICES)
    c = estimate_plan(plan(STEPS, pid="c", team="y", env="dev"), PRICES)
    by_team = totals_by([a, b, c], "team")
    assert list(by_team) == ["x", "y"]
    assert by_team["x"].money == Decimal("0.8422") and by_team["y"].tokens == 800000
    assert totals_by([a, b, c], "environment")["dev"].money == Decimal("0.8422")


def test_budget_verdicts_plan_and_team():
    usage = Usage(money=Decimal("5"), tokens=100, runner_minutes=Decimal("2"))
    budget = Budget.model_validate({"money": {"soft": "4", "hard": "10"}, "tokens": {"hard": 50}})
    team = TeamBudget.model_validate({"period": "month", "money": {"hard": "20"}})
    verdict = budget_checks(
        usage,
        plan_budget=budget,
        team="t",
        team_budget=team,
        team_spent=Usage(money=Decimal("15.01")),
    )
    got = {(c.scope, c.metric): c.verdict for c in verdict.checks}
    assert got == {
        ("plan", "money"): "warn",
        ("plan", "tokens"): "block",
        ("team:t", "money"): "block",
    }
    assert verdict.verdict == "block"
    team_check = verdict.checks[-1]
    assert team_check.amount == Decimal("20.01") and team_check.spent == Decimal("15.01")
    assert budget_checks(Usage(), plan_budget=budget).verdict == "ok"


def test_base_head_diff_new_changed_removed_unchanged():
    base = {
        "plans/a.yaml": estimate_plan(plan(STEPS, pid="a"), PRICES),
        "plans/b.yaml": estimate_plan(plan(STEPS, pid="b"), PRICES),
        "plans/gone.yaml": estimate_plan(plan(STEPS, pid="gone"), PRICES),
    }
    cheaper = STEPS.replace("output: 200000", "output: 100000")
    head = {
        "plans/a.yaml": estimate_plan(plan(STEPS, pid="a"), PRICES),
        "plans/b.yaml": estimate_plan(plan(cheaper, pid="b"), PRICES),
        "plans/new.yaml": estimate_plan(plan(STEPS, pid="new"), PRICES),
    }
    changes = {c.path: c for c in diff_costs(base, head)}
    assert [(p, c.status) for p, c in changes.items()] == [
        ("plans/a.yaml", "unchanged"),
        ("plans/b.yaml", "changed"),
        ("plans/gone.yaml", "removed"),
        ("plans/new.yaml", "new"),
    ]
    assert changes["plans/b.yaml"].delta == Decimal("-0.06")
    assert changes["plans/b.yaml"].to_dict()["delta"] == "-0.06"
    assert changes["plans/new.yaml"].to_dict()["delta"] == "+0.4211"
    assert changes["plans/gone.yaml"].head == 0 and changes["plans/gone.yaml"].base == Decimal(
        "0.4211"
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.decimals(min_value=0, max_value=1000, places=6), min_size=1, max_size=8))
def test_plan_total_is_exact_sum_of_fixed_prices(amounts):
    steps = "".join(
        f"  - {{id: s{i}, action: noop, estimate: {{fixed: '{a}'}}}}\n"
        for i, a in enumerate(amounts)
    )
    assert estimate_plan(plan(steps), PRICES).money == sum(amounts, Decimal(0))
