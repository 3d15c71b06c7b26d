"""``plangate explain PLAN``: the policy decision trace, so an author knows what to change.

Same engine and wiring as ``plangate check`` (``--policies``, ``--base``, ``--author``,
``--ledger``); prints which rules matched and why, the risk factors, the budget checks, the
cost per step and who must approve. Exit codes: 0 allowed, 1 denied, 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from app.approvals.gate import GateResult, simulate_gate
from app.approvals.render import gate_to_dict, render_text
from app.cli.check import PolicyWiring, _ledger, add_policy_arguments
from app.cost import fmt_amount
from app.errors import InputError
from app.plan.loader import load_plan
from app.policy.decision import Decision, describe_requirement
from app.policy.engine import check_step, evaluate


def register(subparsers: argparse._SubParsersAction) -> None:
    explain = subparsers.add_parser(
        "explain",
        help="print the policy decision trace for a plan",
        description="Explain how the policy judges PLAN: matched rules with file:line, risk "
        "factors, budget, cost and required approvals. Exit 0 allowed, 1 denied, 2 invalid.",
    )
    explain.add_argument("plan", metavar="PLAN", help="plan file")
    explain.add_argument("--step", metavar="STEP", help="explain the runtime check of one step")
    explain.add_argument(
        "--changed",
        nargs="*",
        default=[],
        metavar="PATH",
        help="extra changed repository paths to assume (e.g. policies/access.yaml)",
    )
    explain.add_argument("--format", choices=("text", "json"), default="text")
    explain.add_argument(
        "--approved-by",
        metavar="LOGINS",
        help="simulate the approval gate as if these comma-separated logins approved "
        "(exit 1 when they would not satisfy it)",
    )
    explain.add_argument(
        "--team",
        action="append",
        default=[],
        metavar="ORG/TEAM=LOGINS",
        help="members of a GitHub team the policy names, for --approved-by (repeatable)",
    )
    add_policy_arguments(explain)
    explain.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    loaded = load_plan(args.plan)
    wiring = PolicyWiring(args)
    policy = wiring.load()
    wiring.changes = {**wiring.changes, **{p: () for p in args.changed}}
    ctx = wiring.context(loaded.path, _ledger(args))
    if args.step:
        try:
            loaded.plan.step(args.step)
        except KeyError as exc:
            raise InputError(f"{loaded.path}: plan has no step '{args.step}'") from exc
        decision = check_step(loaded.plan, args.step, policy, ctx)
    else:
        decision = evaluate(loaded.plan, policy, ctx)
    gate = _simulate(args, decision)
    if args.format == "json":
        extra = {} if gate is None else {"approval_gate": gate_to_dict(gate)}
        print(
            json.dumps(
                {"path": loaded.path, "digest": loaded.digest, **decision.to_dict(), **extra},
                indent=2,
            )
        )
    else:
        print(explain_text(decision, path=loaded.path, origin=policy.origin))
        if gate is not None:
            print("\napproval gate (simulated):\n" + render_text(gate).rstrip())
    if gate is not None and not gate.satisfied:
        return 1
    return 0 if decision.allowed else 1


def _simulate(args: argparse.Namespace, decision: Decision) -> GateResult | None:
    """``--approved-by``: the gate's verdict on a PR by ``--author`` approved by these logins."""
    if args.approved_by is None or decision.approvals is None:
        return None
    teams: dict[str, list[str]] = {}
    for spec in args.team:
        slug, sep, members = spec.partition("=")
        if not sep or "/" not in slug:
            raise InputError(f"--team {spec!r}: expected ORG/TEAM=login,login")
        teams[slug.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    approvers = [a.strip().lstrip("@") for a in args.approved_by.split(",") if a.strip()]
    return simulate_gate(
        decision.approvals,
        args.author or "",
        approvers,
        now=datetime.now(UTC),
        teams=teams,
    )


def explain_text(decision: Decision, *, path: str, origin: str) -> str:
    """The decision trace for people (pure formatting)."""
    out: list[str] = []
    what = f"step '{decision.step}' of plan" if decision.step else "plan"
    out.append(f"{what} {decision.subject} ({path})")
    out.append(f"policy {origin} {decision.policy_digest}")
    out.append(f"verdict: {decision.verdict.upper()}")
    if decision.denials:
        out.append("\nwhy it is denied (change the plan, or the rule on the base branch):")
        for m in decision.denials:
            step = f" step '{m.step}':" if m.step else ""
            out.append(f"  - {m.rule} at {m.source}:{step} {m.reason}")
    if decision.risk is not None:
        out.append(f"\nrisk: {decision.risk.level} (score {decision.risk.score})")
        for f in decision.risk.factors:
            out.append(f"  +{f.points:<4} {f.name:<32} {f.detail}")
    out.append("\nrules that matched:")
    for m in decision.trace:
        step = f" [step {m.step}]" if m.step else ""
        out.append(f"  {m.effect:<8} {m.rule}{step}  ({m.source})")
        out.append(f"           {m.reason}")
    if decision.approvals is not None:
        out.append("\napprovals required (all of; one person satisfies one requirement):")
        for r in decision.approvals.all_of:
            out.append(f"  - {r.id}: {describe_requirement(r)}  ({r.source})")
        for login, why in decision.approvals.excluded.items():
            out.append(f"  may not approve: {login}: {why}")
    if decision.budget is not None:
        out.append(f"\nbudget: {decision.budget.verdict}")
        for c in decision.budget.checks:
            out.append(f"  {c.verdict:<5} {c.reason}")
    if decision.cost is not None:
        cost = decision.cost
        out.append(
            f"\ncost: {fmt_amount(cost.money)} {cost.currency}, {cost.tokens} tokens, "
            f"{fmt_amount(cost.runner_minutes)} runner minutes, {cost.api_calls} API calls"
        )
        for s in cost.steps:
            if s.money or s.unpriced:
                parts = ", ".join(f"{k} {fmt_amount(v)}" for k, v in s.parts)
                out.append(f"  {s.step:<28} {fmt_amount(s.money):>10}  {parts}")
    return "\n".join(out)
