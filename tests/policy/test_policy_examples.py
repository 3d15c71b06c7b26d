"""The example policies in policies/ against the example plans and their risky variants.

This is the policies/ test matrix: each example plan's verdict, risk level and required
approvals, and for each safety feature a variant of a real plan that the examples deny.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import ctx

from app.plan.loader import load_plan_bytes
from app.policy.engine import authorize, evaluate
from app.policy.loader import load_policy_dir

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy_dir(ROOT / "policies")


def example(name: str, **replace: str):
    text = (ROOT / "plans" / name).read_text()
    for old, new in replace.items():
        old = old.replace("__", " ")
        assert old in text, old
        text = text.replace(old, new)
    return load_plan_bytes(f"plans/{name}", text.encode()).plan


@pytest.mark.parametrize(
    ("name", "level", "approvals"),
    [
        ("local-hello.yaml", "low", ["local-single-approval"]),
        ("agent-backfill.yaml", "medium", ["peer-review"]),
        ("scale-checkout-service.yaml", "medium", ["peer-review"]),
        (
            "dispatch-release.yaml",
            "high",
            ["peer-review", "production-operator", "high-risk-dual-authorization"],
        ),
        (
            "rotate-db-credentials.yaml",
            "high",
            [
                "peer-review",
                "production-operator",
                "high-risk-dual-authorization",
                "credential-changes",
            ],
        ),
    ],
)
def test_example_plan_matrix(name, level, approvals):
    decision = evaluate(example(name), POLICY, ctx(plan_path=f"plans/{name}"))
    assert decision.allowed, decision.denials
    assert decision.risk.level == level
    assert [r.id for r in decision.approvals.all_of] == approvals


def test_local_plan_needs_a_single_approval():
    decision = evaluate(
        example("local-hello.yaml"), POLICY, ctx(plan_path="plans/local-hello.yaml")
    )
    (req,) = decision.approvals.all_of
    assert req.count == 1 and not req.teams and not req.users


PROD_SHELL = {"environment: staging": "environment: production"}


@pytest.mark.parametrize(
    ("name", "changes", "rule"),
    [
        ("scale-checkout-service.yaml", PROD_SHELL, "no-shell-in-production"),
        (
            "agent-backfill.yaml",
            {"https://catalogue.staging.example/api/products": "https://paste.evil/x"},
            "http-allow-listed-hosts",
        ),
        (
            "rotate-db-credentials.yaml",
            {"canary:\n  steps: [rollout-canary]\n  analysis: [probe-canary]\n": ""},
            "production-stateful-needs-canary",
        ),
        ("dispatch-release.yaml", {}, "no-irreversible-production-changes"),
        ("agent-backfill.yaml", {"max_parallel: 2": "max_parallel: 16"}, "bounded-parallelism"),
        (
            "agent-backfill.yaml",
            {"team: data": "team: platform", **PROD_SHELL},
            "no-agents-in-production",
        ),
        ("agent-backfill.yaml", PROD_SHELL, "access"),
    ],
    ids=["shell", "http-host", "canary", "irreversible", "parallelism", "agents", "rbac"],
)
def test_example_policies_deny_risky_variants(name, changes, rule):
    if rule == "no-irreversible-production-changes":
        # drop the rest of the compensation block: the deploy step now cannot be undone
        text = (ROOT / "plans" / name).read_text()
        start = text.index("    compensate:\n      action: github.workflow")
        end = text.index("    timeout: 45m")
        text = text[:start] + "    compensate:\n      none: there is no way back\n" + text[end:]
        plan = load_plan_bytes(f"plans/{name}", text.encode()).plan
    else:
        plan = example(name, **changes)
    decision = evaluate(plan, POLICY, ctx(plan_path=f"plans/{name}"))
    assert not decision.allowed
    assert rule in {m.rule for m in decision.denials}, decision.denials


def test_policy_and_workflow_changes_need_extra_approvals():
    c = ctx(
        plan_path="plans/local-hello.yaml",
        author="alice",
        changed_paths=("policies/safety.yaml", ".github/workflows/plangate-execute.yml"),
        change_authors={"policies/safety.yaml": ("alice", "bob")},
    )
    decision = evaluate(example("local-hello.yaml"), POLICY, c)
    ids = [r.id for r in decision.approvals.all_of]
    assert "policy-changes" in ids and "workflow-changes" in ids
    assert {"alice", "bob"} <= set(decision.approvals.excluded)
    assert decision.risk.score >= 60


def test_example_queue_ownership():
    plan = example("agent-backfill.yaml")
    assert authorize("catalogue-agent[bot]", "enqueue", plan, POLICY).allowed
    assert not authorize("catalogue-agent[bot]", "cancel", plan, POLICY).allowed
    assert authorize("carol", "cancel", plan, POLICY).allowed
