"""Benchmark: policy evaluation of many plans against a large rule set, next to validation.

Run: ``.venv/bin/python benchmarks/policy.py [--plans 1000] [--rules 200] [--steps 10]``

Generates ``--plans`` realistic plans (shell, http, agent, probe, github steps; resources;
budgets; estimates) and a policy set with ``--rules`` rules (access grants, safety rules with
plan- and step-level predicates and ``unless`` clauses, approval rules), then measures in the
same process (best of ``--repeat``):

* ``validate``: ``load_plan_bytes`` of every plan (strict YAML, pydantic, graph, digest) — the
  baseline;
* ``policy``: ``evaluate`` of every loaded plan (cost, risk, RBAC, safety, budgets, approvals).

Target (issue 4): policy evaluation adds at most 2x to validation time (``policy / validate``
<= 2), and time grows linearly in rules x plans (the scaling table prints microseconds per
rule x plan, roughly constant when linear).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.plan.loader import LoadedPlan, load_plan_bytes
from app.policy.context import EvalContext
from app.policy.engine import evaluate
from app.policy.loader import PolicySet, load_policy_files

TARGET_RATIO = 2.0
TEAMS = ("platform", "sre", "payments", "data", "security")
ENVS = ("local", "staging", "production")
ACTIONS = ("shell", "http", "agent", "probe", "github.workflow", "github.issue", "noop")


def generate_policy(rules: int) -> dict[str, bytes]:
    """A policy set of ``rules`` rules: 10% access, 70% safety, 20% approvals."""
    head = [
        "apiVersion: plangate.dev/v1",
        "kind: Policy",
        "teams:",
        *(f"  {t}: {{members: [{t}-a, {t}-b]}}" for t in TEAMS),
        "environments:",
        "  local: {risk: 0}",
        "  staging: {risk: 10}",
        "  production: {risk: 40}",
        "risk:",
        "  weights: {mutating_step: 2, mutating_without_compensation: 10, resource: 5,",
        '            cost: {per: "10.00", points: 5, max: 25}}',
        "  thresholds: {medium: 20, high: 50, critical: 100}",
        "prices:",
        '  models: {gpt-4o-mini: {input_per_1k: "0.00015", output_per_1k: "0.0006"}}',
        '  api_call: "0.0001"',
        '  runner_minute: "0.008"',
        "budgets:",
        '  plan_max: {soft: "50", hard: "200"}',
        "  teams:",
        *(f'    {t}: {{period: month, money: {{soft: "100", hard: "500"}}}}' for t in TEAMS),
    ]
    n_access = max(1, rules // 10)
    n_approvals = max(1, rules // 5)
    n_safety = max(0, rules - n_access - n_approvals)
    body = ["access:"]
    for i in range(n_access):
        team = TEAMS[i % len(TEAMS)]
        body.append(
            f"  - {{id: grant-{i}, teams: [{team}], environments: ['*'], "
            f"actions: ['*'], resources: ['res-{i % 7}/*', 'shared/*']}}"
        )
    body.append("rules:")
    for i in range(n_safety):
        kind = i % 5
        if kind == 0:
            when, unless = (
                f"{{environment: production, actions: [shell], team: [{TEAMS[i % 5]}]}}",
                ("{commands: ['/opt/runbooks/*']}"),
            )
        elif kind == 1:
            when, unless = "{actions: [http]}", f"{{hosts: ['*.svc{i}.example', '*.internal']}}"
        elif kind == 2:
            when, unless = f"{{resources: ['forbidden-{i}/*']}}", None
        elif kind == 3:
            when, unless = (
                f"{{environment: production, canary: false, plans: ['never-{i}-*']}}",
                None,
            )
        else:
            when, unless = f"{{paths: ['secret-{i}/**'], risk: {{at_least: critical}}}}", None
        body.append(f"  - id: rule-{i}")
        body.append(f"    when: {when}")
        if unless:
            body.append(f"    unless: {unless}")
        body.append(f"    message: rule {i} says no")
    body.append("approvals:")
    for i in range(n_approvals):
        env = ENVS[i % 3]
        body.append(
            f"  - {{id: approve-{i}, when: {{environment: {env}, team: [{TEAMS[i % 5]}]}}, "
            f"require: {{count: 1, teams: [{TEAMS[(i + 1) % 5]}]}}}}"
        )
    text = "\n".join([*head, *body]) + "\n"
    return {"policies/bench.yaml": text.encode()}


def generate_plan(index: int, steps: int) -> bytes:
    team = TEAMS[index % len(TEAMS)]
    env = ("staging", "local", "staging", "production")[index % 4]
    out = [
        "apiVersion: plangate.dev/v1",
        "kind: Plan",
        f"id: bench-{index}",
        f"title: Benchmark plan {index}",
        f"team: {team}",
        f"environment: {env}",
        f"resources: [res-{index % 7}/a, shared/b]",
        'budget: {money: {soft: "10", hard: "20"}, runner_minutes: {hard: 1000}}',
        "steps:",
    ]
    for s in range(steps):
        sid = f"s{s}"
        needs = f", needs: [s{s - 1}]" if s else ""
        kind = s % 5
        if kind == 0:
            out.append(
                f"  - {{id: {sid}, action: shell, mutates: false{needs}, "
                f"with: {{run: [kubectl, get, pods]}}, estimate: {{runner_minutes: 0.5}}}}"
            )
        elif kind == 1:
            out.append(
                f"  - {{id: {sid}, action: http{needs}, with: {{method: POST, "
                f"url: 'https://api.internal/v1/{index}/{s}'}}, compensate: {{action: http, "
                f"with: {{method: DELETE, url: 'https://api.internal/v1/{index}/{s}'}}}}, "
                f"estimate: {{api_calls: 2}}}}"
            )
        elif kind == 2:
            out.append(
                f"  - {{id: {sid}, action: agent{needs}, with: {{model: gpt-4o-mini, "
                f"prompt: summarise {s}}}, estimate: {{tokens: {{model: gpt-4o-mini, "
                f"input: 1200, output: 300}}}}}}"
            )
        elif kind == 3:
            out.append(
                f"  - {{id: {sid}, action: probe{needs}, with: {{http: {{url: "
                f"'https://m.internal/x', json_path: v}}, thresholds: {{max_value: 1}}}}}}"
            )
        else:
            out.append(
                f"  - {{id: {sid}, action: github.issue{needs}, with: {{repo: a/b, "
                f"title: note {s}}}, compensate: {{none: a record stays}}}}"
            )
    return ("\n".join(out) + "\n").encode()


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _evaluate_all(loaded: list[LoadedPlan], policy: PolicySet, ctx: EvalContext) -> int:
    allowed = 0
    for lp in loaded:
        allowed += evaluate(lp.plan, policy, ctx).allowed
    return allowed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    ctx = EvalContext(now=datetime(2026, 3, 18, tzinfo=UTC), changed_paths=("plans/x.yaml",))
    raws = [generate_plan(i, args.steps) for i in range(args.plans)]
    policy = load_policy_files(generate_policy(args.rules))
    loaded = [load_plan_bytes(f"plans/bench-{i}.yaml", raw) for i, raw in enumerate(raws)]
    allowed = _evaluate_all(loaded, policy, ctx)  # warm-up (compiles predicates once)

    validate = best_of(
        lambda: [load_plan_bytes(f"plans/b{i}.yaml", r) for i, r in enumerate(raws)], args.repeat
    )
    judge = best_of(lambda: _evaluate_all(loaded, policy, ctx), args.repeat)
    rules = (
        len(policy.document.access) + len(policy.document.rules) + len(policy.document.approvals)
    )
    print(
        f"{args.plans} plans x {args.steps} steps, {rules} rules "
        f"({allowed} allowed, {args.plans - allowed} denied)"
    )
    print(f"validate: {validate * 1e3:8.1f} ms  ({args.plans / validate:8.0f} plans/s)")
    print(f"policy:   {judge * 1e3:8.1f} ms  ({args.plans / judge:8.0f} decisions/s)")
    ratio = judge / validate
    print(
        f"policy / validate = {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x: "
        f"{'met' if ratio <= TARGET_RATIO else 'MISSED'})"
    )

    print("\nscaling (policy time per rule x plan):")
    print(f"{'rules':>6} {'plans':>6} {'ms':>9} {'ns/(rule*plan)':>15}")
    for n_rules in (50, 100, 200, 400):
        pol = load_policy_files(generate_policy(n_rules))
        for n_plans in (250, args.plans):
            subset = loaded[:n_plans]
            _evaluate_all(subset, pol, ctx)
            t = best_of(lambda s=subset, p=pol: _evaluate_all(s, p, ctx), args.repeat)
            print(
                f"{n_rules:>6} {n_plans:>6} {t * 1e3:>9.1f} {t / (n_rules * n_plans) * 1e9:>15.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
