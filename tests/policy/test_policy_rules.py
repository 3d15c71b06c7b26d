"""Table-driven tests: every predicate and rule kind, allow and deny, naming the rule."""

from __future__ import annotations

import pytest
from policy_helpers import ctx, plan, policy

from app.policy.engine import evaluate

SHELL = "  - {id: run, action: shell, mutates: false, with: {run: [%s]}}\n"
HTTP = "  - {id: call, action: http, mutates: false, with: {url: '%s'}}\n"
MUTATE_NONE = "  - {id: m, action: shell, with: {run: [x]}, compensate: {none: no undo here}}\n"
MUTATE_UNDO = (
    "  - {id: m, action: shell, with: {run: [x]},"
    " compensate: {action: shell, with: {run: [undo]}}}\n"
)
AGENT = "  - {id: gen, action: agent, with: {model: small, prompt: hi}}\n"


def rule(when: str, unless: str | None = None, rid: str = "the-rule") -> str:
    text = f"rules:\n  - id: {rid}\n    when: {when}\n    message: denied by {rid}\n"
    if unless:
        text += f"    unless: {unless}\n"
    return text


# (name, when, unless, plan kwargs that match, plan kwargs that do not match)
CASES = [
    ("environment", "{environment: production}", None, {"env": "production"}, {"env": "staging"}),
    ("environment-glob", "{environment: 'prod*'}", None, {"env": "production"}, {"env": "local"}),
    (
        "team",
        "{team: [data]}",
        None,
        {"team": "data", "steps": "  - {id: a, action: noop}\n"},
        {"team": "platform"},
    ),
    ("plans", "{plans: ['demo*']}", None, {"plan_id": "demo-1"}, {"plan_id": "other"}),
    (
        "resources",
        "{resources: ['db/*']}",
        None,
        {"extra": "resources: [db/orders]\n"},
        {"extra": "resources: [k8s/x]\n"},
    ),
    (
        "canary-false",
        "{canary: false}",
        None,
        {},
        {
            "extra": "canary: {steps: [a], analysis: [p]}\n",
            "steps": "  - {id: a, action: noop}\n  - {id: p, action: probe, needs: [a], with: "
            "{http: {url: 'https://m.example/x', json_path: v}, thresholds: {max_value: 1}}}\n",
        },
    ),
    (
        "parallelism",
        "{parallelism: {above: 4}}",
        None,
        {"extra": "max_parallel: 5\n"},
        {"extra": "max_parallel: 4\n"},
    ),
    ("actions", "{actions: [shell]}", None, {"steps": SHELL % "ls"}, {}),
    ("steps", "{steps: ['r*']}", None, {"steps": SHELL % "ls"}, {}),
    ("mutating", "{mutating: true}", None, {"steps": MUTATE_UNDO}, {"steps": SHELL % "ls"}),
    (
        "compensated-false",
        "{mutating: true, compensated: false}",
        None,
        {"steps": MUTATE_NONE},
        {"steps": MUTATE_UNDO},
    ),
    (
        "hosts-allow-list",
        "{actions: [http]}",
        "{hosts: ['*.internal.example']}",
        {"steps": HTTP % "https://evil.example/x"},
        {"steps": HTTP % "https://a.internal.example/"},
    ),
    (
        "hosts-reference-never-allow-listed",
        "{actions: [http]}",
        "{hosts: ['*']}",
        {
            "steps": "  - {id: x, action: noop, with: {outputs: {url: 'https://a.example'}}}\n"
            "  - {id: call, action: http, mutates: false, needs: [x],"
            " with: {url: '${{ steps.x.outputs.url }}'}}\n"
        },
        {"steps": HTTP % "https://a.example/"},
    ),
    (
        "commands-allow-list",
        "{actions: [shell]}",
        "{commands: ['/opt/runbooks/*']}",
        {"steps": SHELL % "rm"},
        {"steps": SHELL % "/opt/runbooks/restart"},
    ),
    (
        "unless-plan-level",
        "{environment: staging}",
        "{team: [platform]}",
        {"team": "data", "steps": "  - {id: a, action: noop}\n"},
        {"team": "platform"},
    ),
    (
        "cost",
        "{cost: {at_least: '0.01'}}",
        None,
        {"steps": "  - {id: a, action: noop, estimate: {fixed: '0.02'}}\n"},
        {},
    ),
]


@pytest.mark.parametrize(
    ("name", "when", "unless", "matching", "other"), CASES, ids=[c[0] for c in CASES]
)
def test_rule_denies_when_matching_and_names_the_rule(name, when, unless, matching, other):
    pol = policy(rule(when, unless, rid=f"rule-{name}"))
    denied = evaluate(plan(**matching), pol, ctx())
    assert not denied.allowed
    hits = [m for m in denied.denials if m.rule == f"rule-{name}"]
    assert hits, denied.denials
    assert hits[0].reason == f"denied by rule-{name}"
    assert hits[0].source == "policies/extra.yaml:4"

    allowed = evaluate(plan(**other), pol, ctx())
    assert all(m.rule != f"rule-{name}" for m in allowed.denials)
    assert allowed.allowed, allowed.denials


def test_author_and_paths_predicates():
    pol = policy(rule("{author: [mallory], paths: ['.github/**']}", rid="no-mallory-workflows"))
    hit = evaluate(plan(), pol, ctx(author="mallory", changed_paths=(".github/workflows/x.yml",)))
    assert [m.rule for m in hit.denials] == ["no-mallory-workflows"]
    assert evaluate(plan(), pol, ctx(author="alice", changed_paths=(".github/x",))).allowed
    assert evaluate(plan(), pol, ctx(author="mallory", changed_paths=("plans/x.yaml",))).allowed


def test_risk_predicate():
    pol = policy(rule("{risk: {at_least: high}}", rid="no-high-risk"))
    risky = plan(MUTATE_NONE * 1, env="production", extra="resources: [a, b]\n")
    decision = evaluate(risky, pol, ctx())
    assert decision.risk.level == "high"
    assert [m.rule for m in decision.denials] == ["no-high-risk"]
    assert evaluate(plan(), pol, ctx()).allowed


def test_step_rule_reports_each_matching_step():
    pol = policy(rule("{actions: [shell]}", rid="no-shell"))
    steps = SHELL % "a" + "  - {id: run2, action: shell, mutates: false, with: {run: [b]}}\n"
    decision = evaluate(plan(steps), pol, ctx())
    assert [(m.rule, m.step) for m in decision.denials] == [
        ("no-shell", "run"),
        ("no-shell", "run2"),
    ]


def test_exemption_is_traced():
    pol = policy(rule("{actions: [shell]}", "{commands: [ok]}", rid="shell-allow-list"))
    decision = evaluate(plan(SHELL % "ok"), pol, ctx())
    assert decision.allowed
    (exempt,) = [m for m in decision.trace if m.effect == "exempt"]
    assert exempt.rule == "shell-allow-list" and exempt.step == "run"


def test_warn_rule_does_not_deny():
    pol = policy(
        "rules:\n  - {id: heads-up, effect: warn, when: {environment: staging}, message: careful}\n"
    )
    decision = evaluate(plan(), pol, ctx())
    assert decision.allowed
    assert [(m.rule, m.reason) for m in decision.warnings] == [("heads-up", "careful")]


# -- RBAC -----------------------------------------------------------------------------------


def test_rbac_grant_allows_and_is_traced():
    decision = evaluate(
        plan(AGENT, team="data", extra="resources: [dataset/eu]\n"), policy(), ctx()
    )
    assert decision.allowed, decision.denials
    assert any(m.rule == "data-staging" and m.effect == "allow" for m in decision.trace)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"team": "data", "steps": SHELL % "ls"}, "action 'shell'"),
        ({"team": "data", "env": "production"}, "in environment 'production'"),
        ({"team": "data", "extra": "resources: [db/x]\n"}, "resource 'db/x'"),
        (
            {
                "team": "data",
                "steps": "  - {id: w, action: http, with: {url: 'https://a.example'},"
                " compensate: {action: shell, with: {run: [undo]}}}\n",
            },
            "compensation action 'shell'",
        ),
    ],
    ids=["action", "environment", "resource", "compensation"],
)
def test_rbac_denies_what_is_not_granted(kwargs, needle):
    decision = evaluate(plan(**kwargs), policy(), ctx())
    assert not decision.allowed
    assert any(m.rule == "access" and needle in m.reason for m in decision.denials), (
        decision.denials
    )
    assert all(m.source == "policies/base.yaml:12" for m in decision.denials if m.rule == "access")


def test_unknown_team_and_environment_are_denied():
    decision = evaluate(plan(team="ghosts", env="moon"), policy(), ctx())
    rules = {m.rule for m in decision.denials}
    assert {"teams", "environments"} <= rules


def test_unpriced_model_is_denied():
    steps = (
        "  - {id: g, action: agent, with: {model: huge, prompt: hi}, "
        "estimate: {tokens: {model: huge, input: 10}}}\n"
    )
    decision = evaluate(plan(steps), policy(), ctx())
    (deny,) = decision.denials
    assert deny.rule == "prices" and "model 'huge' is not in the price table" in deny.reason


def test_compensation_is_judged_like_a_step():
    """A shell command or an unlisted host cannot hide in a compensation."""
    pol = policy(rule("{actions: [shell]}", "{commands: [ok]}", rid="no-shell"))
    steps = (
        "  - {id: w, action: http, with: {url: 'https://a.example'},"
        " compensate: {action: shell, with: {run: [rm]}}}\n"
    )
    decision = evaluate(plan(steps), pol, ctx())
    assert [(m.rule, m.step) for m in decision.denials] == [("no-shell", "w/compensate")]
    ok = steps.replace("run: [rm]", "run: [ok]")
    assert evaluate(plan(ok), pol, ctx()).allowed


def test_compensation_adds_no_risk_and_is_not_uncompensated():
    pol = policy(rule("{mutating: true, compensated: false}", rid="needs-undo"))
    steps = "  - {id: w, action: shell, with: {run: [x]}, compensate: {action: noop}}\n"
    decision = evaluate(plan(steps), pol, ctx())
    assert decision.allowed
    mutating = next(f for f in decision.risk.factors if f.name == "mutating_steps")
    assert mutating.points == 2
