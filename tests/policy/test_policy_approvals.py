"""Approval requirements produced by policy: rules, any_of, defaults, dual authorization,
separation of duties, and the author who never counts."""

from __future__ import annotations

from policy_helpers import ctx, plan, policy

from app.policy.engine import evaluate
from app.policy.requirements import AnyOf, ApprovalRequirements, Requirement

APPROVALS = """\
approvals:
  - id: prod-operator
    when: {environment: production}
    any_of:
      - {teams: [sre]}
      - {users: [alice]}
  - id: dual
    when: {risk: {at_least: high}}
    require: {count: 2, teams: [platform, sre, security], distinct_teams: 2}
  - id: policy-change
    when: {paths: ["policies/**"]}
    require: {count: 1, teams: [security], min_permission: maintain}
separation_of_duties:
  - id: policy-authors
    paths: ["policies/**"]
    exclude_users: [bot]
"""
RISKY = "  - {id: m, action: shell, with: {run: [x]}, compensate: {none: cannot undo}}\n"


def _ids(reqs: ApprovalRequirements) -> list[str]:
    return [r.id for r in reqs.all_of]


def test_matching_rules_become_requirements_with_sources():
    decision = evaluate(plan(env="production"), policy(APPROVALS), ctx())
    reqs = decision.approvals
    assert isinstance(reqs, ApprovalRequirements)
    (entry,) = reqs.all_of
    assert isinstance(entry, AnyOf) and entry.id == "prod-operator"
    assert entry.source == "policies/extra.yaml:4"
    assert [r.teams or r.users for r in entry.any_of] == [("sre",), ("alice",)]


def test_no_matching_rule_still_requires_one_approval():
    """Fail closed: an empty requirement list is never produced."""
    reqs = evaluate(plan(), policy(APPROVALS), ctx()).approvals
    (req,) = reqs.all_of
    assert req.id == "default-approval" and req.count == 1
    assert not reqs.none_required


def test_dual_authorization_requires_two_teams():
    decision = evaluate(
        plan(RISKY, env="production", extra="resources: [a, b]\n"), policy(APPROVALS), ctx()
    )
    assert decision.risk.level == "high"
    dual = next(r for r in decision.approvals.all_of if r.id == "dual")
    assert isinstance(dual, Requirement)
    assert dual.count == 2 and dual.distinct_teams == 2
    assert set(dual.teams) == {"platform", "sre", "security"}


def test_high_risk_gets_builtin_dual_authorization_when_policy_forgets_it():
    decision = evaluate(plan(RISKY, env="production", extra="resources: [a, b]\n"), policy(), ctx())
    assert decision.risk.level == "high"
    dual = next(r for r in decision.approvals.all_of if r.id == "dual-authorization")
    assert dual.distinct_teams == 2 and dual.count == 2
    assert any(m.rule == "dual-authorization" for m in decision.trace)


def test_author_approval_never_counts():
    reqs = evaluate(plan(), policy(APPROVALS), ctx(author="alice")).approvals
    assert "alice" in reqs.excluded
    assert "never counts" in reqs.excluded["alice"]


def test_policy_change_needs_security_and_excludes_its_authors():
    """Separation of duties: the person who wrote a policy change cannot approve it."""
    c = ctx(
        author="bob",
        changed_paths=("policies/access.yaml",),
        change_authors={"policies/access.yaml": ("bob", "carol")},
    )
    decision = evaluate(plan(), policy(APPROVALS), c)
    assert "policy-change" in _ids(decision.approvals)
    req = next(r for r in decision.approvals.all_of if r.id == "policy-change")
    assert req.teams == ("security",) and req.min_permission == "maintain"
    excluded = decision.approvals.excluded
    assert set(excluded) == {"bob", "carol", "bot"}
    assert "policy-authors" in excluded["carol"]
    assert any(m.rule == "policy-authors" and m.effect == "exclude" for m in decision.trace)


def test_team_membership_is_handed_to_the_gate():
    reqs = evaluate(plan(), policy(), ctx()).approvals
    assert reqs.team_members["sre"] == ("carol", "dan")
    assert set(reqs.team_slugs) == {"platform", "sre", "security", "data"}
