"""Helpers for policy tests: a small policy set built from YAML text, plans built from YAML."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from app.plan.loader import load_plan_bytes
from app.plan.model import Plan
from app.policy.context import EvalContext
from app.policy.loader import PolicySet, load_policy_files

NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)

BASE_POLICY = """\
apiVersion: plangate.dev/v1
kind: Policy
teams:
  platform: {members: [alice, bob]}
  sre: {members: [carol, dan]}
  security: {members: [ivan]}
  data: {members: [grace]}
environments:
  local: {risk: 0}
  staging: {risk: 10}
  production: {risk: 40}
access:
  - id: platform-all
    teams: [platform]
  - id: data-staging
    teams: [data]
    environments: [staging]
    actions: [agent, noop, http]
    resources: ["dataset/*"]
risk:
  weights: {mutating_step: 2, mutating_without_compensation: 10, resource: 5,
            cost: {per: "10.00", points: 5, max: 25}}
  thresholds: {medium: 20, high: 50, critical: 100}
prices:
  models:
    small: {input_per_1k: "0.00015", output_per_1k: "0.0006"}
  api_call: "0.0001"
  runner_minute: "0.008"
  actions: {github.workflow: "0.01"}
"""


def policy(extra: str = "", *, base: str = BASE_POLICY) -> PolicySet:
    """The base policy plus an ``extra.yaml`` file with more sections."""
    files = {"policies/base.yaml": base.encode()}
    if extra:
        files["policies/extra.yaml"] = (
            "apiVersion: plangate.dev/v1\nkind: Policy\n" + textwrap.dedent(extra)
        ).encode()
    return load_policy_files(files)


def plan(
    steps: str = "  - {id: a, action: noop}\n",
    *,
    env: str = "staging",
    team: str = "platform",
    extra: str = "",
    plan_id: str = "demo",
) -> Plan:
    text = (
        "apiVersion: plangate.dev/v1\nkind: Plan\n"
        f"id: {plan_id}\ntitle: Demo\nteam: {team}\nenvironment: {env}\n"
        + textwrap.dedent(extra)
        + "steps:\n"
        + steps
    )
    return load_plan_bytes("plans/demo.yaml", text.encode()).plan


def ctx(**kw) -> EvalContext:
    kw.setdefault("now", NOW)
    kw.setdefault("plan_path", "plans/demo.yaml")
    return EvalContext(**kw)


@pytest.fixture
def base_policy() -> PolicySet:
    return policy()
