"""The policy engine: ``evaluate`` a plan, ``check_step`` before a step mutates, ``authorize``
queue actions. Pure: the plan, the policy set and an ``EvalContext`` in, a ``Decision`` out.

Order of evaluation (each part appends to the decision trace, see docs/policy.md):

1. known team and environment (unknown ones are denied: fail closed);
2. cost with the policy's price table (a step the price table cannot price is denied);
3. risk score (environment, mutating steps, steps without compensation, resources, sensitive
   paths, cost) and its level;
4. RBAC: every step's action (and its compensation's action) and every resource must be granted
   to the plan's team in the plan's environment;
5. safety rules (``deny``/``warn`` when ``when`` holds, unless ``unless`` holds);
6. budgets: plan budget, ``budgets.plan_max`` and the team's period budget (hard limit → deny);
7. approval requirements (matching rules, a built-in default if none matched, built-in dual
   authorization at risk ``high`` or above), the author and separation-of-duties exclusions.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

from app.cost import (
    BudgetCheck,
    BudgetVerdict,
    PlanCost,
    PriceTable,
    Usage,
    budget_checks,
    estimate_plan,
    estimate_step,
    fmt_amount,
)
from app.plan.model import Compensation, Plan, Step
from app.policy.context import EvalContext, period_start
from app.policy.decision import Decision, Risk, RiskFactor, RuleMatch, describe_requirement
from app.policy.loader import PolicySet
from app.policy.model import LEVELS, Level, RequireSpec
from app.policy.predicates import (
    PlanFacts,
    StepFacts,
    glob_any,
    judged_facts,
    plan_facts,
    step_facts,
)
from app.policy.requirements import AnyOf, ApprovalRequirements, Requirement

__all__ = ["QUEUE_VERBS", "authorize", "check_step", "compute_risk", "evaluate"]

QUEUE_VERBS = ("enqueue", "retry", "cancel")
BUILTIN = "built-in (app/policy/engine.py)"


def evaluate(plan: Plan, policy: PolicySet, ctx: EvalContext) -> Decision:
    """Judge a whole plan before it begins (the pull request, ``plangate check``)."""
    return _judge(plan, policy, ctx, only=None)


def check_step(plan: Plan, step: Step | str, policy: PolicySet, ctx: EvalContext) -> Decision:
    """Judge one step right before it runs (the executor): the same rules, applied to this step.

    Plan-level rules are re-applied too (the policy may have changed since approval). Budgets
    compare ``ctx.run_usage`` (actually used so far) plus this step's estimate with the limits.
    """
    target = plan.step(step) if isinstance(step, str) else step
    return _judge(plan, policy, ctx, only=target)


def authorize(
    actor: str, verb: Literal["enqueue", "retry", "cancel"], plan: Plan, policy: PolicySet
) -> Decision:
    """May ``actor`` enqueue, retry or cancel ``plan``? Queue ownership from policy ``queue``.

    Entries name policy teams (their ``members``) or GitHub logins. A team with no ``queue``
    entry falls back to its own members only. Unknown verbs are a programming error.
    """
    if verb not in QUEUE_VERBS:
        raise ValueError(f"unknown queue verb {verb!r}; expected one of {QUEUE_VERBS}")
    doc = policy.document
    subject = f"{verb} {plan.id} by {actor}"
    rights = doc.queue.get(plan.team)
    if rights is not None:
        names = list(getattr(rights, verb))
        rule, source = f"queue.{plan.team}.{verb}", policy.source("queue", plan.team)
    else:
        names = [plan.team]
        rule, source = "queue.default-owning-team", policy.origin
    via = [n for n in names if n == actor or (n in doc.teams and actor in doc.teams[n].members)]
    who = ", ".join(names) or "nobody"
    if via:
        match = RuleMatch(
            rule,
            "queue",
            "allow",
            source,
            f"{actor} may {verb} plans of team {plan.team} (via {via[0]})",
        )
    else:
        match = RuleMatch(
            rule,
            "queue",
            "deny",
            source,
            f"{actor} may not {verb} plans of team {plan.team}; allowed: {who}",
        )
    return Decision(subject=subject, policy_digest=policy.digest, trace=(match,))


# -- internals ---------------------------------------------------------------------------------


def _judge(plan: Plan, policy: PolicySet, ctx: EvalContext, only: Step | None) -> Decision:
    doc = policy.document
    trace: list[RuleMatch] = []
    prices = doc.prices or PriceTable()
    cost = estimate_plan(plan, prices)

    if plan.team not in doc.teams:
        trace.append(
            RuleMatch(
                "teams",
                "team",
                "deny",
                policy.sources.get("teams", policy.origin),
                f"team '{plan.team}' is not defined in policy",
            )
        )
    if plan.environment not in doc.environments:
        trace.append(
            RuleMatch(
                "environments",
                "environment",
                "deny",
                policy.sources.get("environments", policy.origin),
                f"environment '{plan.environment}' is not defined in policy",
            )
        )
    for problem in cost.unpriced:
        trace.append(
            RuleMatch(
                "prices",
                "price",
                "deny",
                policy.sources.get("prices", ""),
                f"{problem}: cannot price it, so cannot budget it",
            )
        )

    all_steps = tuple(step_facts(s) for s in plan.steps)
    risk = compute_risk(plan, policy, ctx, cost, all_steps, trace)
    facts = plan_facts(
        plan,
        author=ctx.author,
        paths=ctx.paths,
        risk_level=risk.level,
        money=cost.money,
        steps=judged_facts(plan.steps),
    )
    scoped = facts if only is None else replace(facts, steps=judged_facts([only]))

    _rbac(plan, policy, scoped, only, trace)
    _safety(policy, scoped, trace)
    budget = _budgets(plan, policy, ctx, cost, only, prices, trace)
    approvals = _approvals(policy, ctx, facts, risk, trace)
    return Decision(
        subject=plan.id,
        policy_digest=policy.digest,
        trace=tuple(trace),
        risk=risk,
        approvals=approvals,
        budget=budget,
        cost=cost,
        step=only.id if only is not None else None,
    )


def _level(score: int, policy: PolicySet) -> Level:
    spec = policy.document.risk
    if spec is None:  # the loader refuses this; stay closed anyway
        return "critical"
    t = spec.thresholds
    if score >= t.critical:
        return "critical"
    if score >= t.high:
        return "high"
    return "medium" if score >= t.medium else "low"


def compute_risk(
    plan: Plan,
    policy: PolicySet,
    ctx: EvalContext,
    cost: PlanCost,
    steps: tuple[StepFacts, ...],
    trace: list[RuleMatch] | None = None,
) -> Risk:
    """The documented, deterministic sum of weighted factors (docs/policy.md, "Risk score")."""
    doc = policy.document
    w = doc.risk.weights if doc.risk else None
    factors: list[RiskFactor] = []
    env = doc.environments.get(plan.environment)
    factors.append(
        RiskFactor("environment", env.risk if env else 0, f"environment '{plan.environment}'")
    )
    if w is not None:
        mutating = [s.id for s in steps if s.mutating]
        if w.mutating_step and mutating:
            factors.append(
                RiskFactor(
                    "mutating_steps",
                    w.mutating_step * len(mutating),
                    f"{len(mutating)} x {w.mutating_step}: {', '.join(mutating)}",
                )
            )
        bare = [s.id for s in steps if s.mutating and not s.compensated]
        if w.mutating_without_compensation and bare:
            factors.append(
                RiskFactor(
                    "mutating_without_compensation",
                    w.mutating_without_compensation * len(bare),
                    f"{len(bare)} x {w.mutating_without_compensation}: {', '.join(bare)}",
                )
            )
        if w.resource and plan.resources:
            factors.append(
                RiskFactor(
                    "resources",
                    w.resource * len(plan.resources),
                    f"{len(plan.resources)} x {w.resource}: {', '.join(plan.resources)}",
                )
            )
        if w.cost is not None and w.cost.per > 0 and cost.money > 0:
            started = math.ceil(cost.money / w.cost.per)
            points = min(w.cost.max, w.cost.points * started)
            factors.append(
                RiskFactor(
                    "cost",
                    points,
                    f"{fmt_amount(cost.money)} {cost.currency}: {started} x "
                    f"{w.cost.points} per {fmt_amount(w.cost.per)}, "
                    f"max {w.cost.max}",
                )
            )
    paths = ctx.paths
    for sp in doc.sensitive_paths:
        hits = [p for p in paths if glob_any(sp.paths, (p,))]
        if hits:
            factors.append(RiskFactor(f"sensitive_path:{sp.id}", sp.risk, ", ".join(hits)))
            if trace is not None:
                trace.append(
                    RuleMatch(
                        sp.id,
                        "sensitive_path",
                        "risk",
                        policy.source("sensitive_paths", sp.id),
                        f"sensitive paths changed: {', '.join(hits)} (+{sp.risk} risk)",
                    )
                )
    score = sum(f.points for f in factors)
    return Risk(score=score, level=_level(score, policy), factors=tuple(factors))


def _rbac(
    plan: Plan, policy: PolicySet, facts: PlanFacts, only: Step | None, trace: list[RuleMatch]
) -> None:
    doc = policy.document
    grants = [
        g
        for g in doc.access
        if glob_any(g.teams, (plan.team,)) and glob_any(g.environments, (plan.environment,))
    ]
    section = policy.sources.get("access", policy.origin)
    steps = [only] if only is not None else list(plan.steps)
    used: dict[str, list[str]] = {}
    for step in steps:
        actions = [step.action]
        if isinstance(step.compensate, Compensation) and step.compensate.action != step.action:
            actions.append(step.compensate.action)
        for action in actions:
            grant = next((g for g in grants if glob_any(g.actions, (action,))), None)
            if grant is None:
                what = "compensation action" if action != step.action else "action"
                trace.append(
                    RuleMatch(
                        "access",
                        "rbac",
                        "deny",
                        section,
                        f"no access grant lets team '{plan.team}' use {what} "
                        f"'{action}' in environment '{plan.environment}'",
                        step=step.id,
                    )
                )
            else:
                used.setdefault(grant.id, []).append(f"{step.id}:{action}")
    for resource in plan.resources:
        grant = next((g for g in grants if glob_any(g.resources, (resource,))), None)
        if grant is None:
            trace.append(
                RuleMatch(
                    "access",
                    "rbac",
                    "deny",
                    section,
                    f"no access grant lets team '{plan.team}' touch resource "
                    f"'{resource}' in environment '{plan.environment}'",
                )
            )
        else:
            used.setdefault(grant.id, []).append(f"resource {resource}")
    for gid, what in used.items():
        trace.append(
            RuleMatch(
                gid,
                "rbac",
                "allow",
                policy.source("access", gid),
                f"grants team '{plan.team}' in '{plan.environment}': {', '.join(what)}",
            )
        )


def _safety(policy: PolicySet, facts: PlanFacts, trace: list[RuleMatch]) -> None:
    for rule, when, unless, source in policy.compiled_rules:
        if not when.plan_holds(facts):
            continue
        if when.step_level or (unless is not None and unless.step_level):
            for s in facts.steps:
                if not when.step_holds(s):
                    continue
                if unless is not None and unless.plan_holds(facts) and unless.step_holds(s):
                    trace.append(
                        RuleMatch(
                            rule.id,
                            "safety",
                            "exempt",
                            source,
                            f"exempt (unless holds): {rule.message}",
                            s.id,
                        )
                    )
                else:
                    trace.append(
                        RuleMatch(rule.id, "safety", rule.effect, source, rule.message, s.id)
                    )
        elif unless is not None and unless.holds(facts):
            trace.append(
                RuleMatch(
                    rule.id, "safety", "exempt", source, f"exempt (unless holds): {rule.message}"
                )
            )
        else:
            trace.append(RuleMatch(rule.id, "safety", rule.effect, source, rule.message))


def _budgets(
    plan: Plan,
    policy: PolicySet,
    ctx: EvalContext,
    cost: PlanCost,
    only: Step | None,
    prices: PriceTable,
    trace: list[RuleMatch],
) -> BudgetVerdict:
    doc = policy.document
    if only is None:
        usage = cost.usage
    else:
        step_cost = estimate_step(only, prices)
        usage = (ctx.run_usage or Usage()) + Usage(
            step_cost.money, step_cost.tokens, step_cost.runner_minutes
        )
    team_budget = doc.budgets.teams.get(plan.team) if doc.budgets else None
    spent = None
    if team_budget is not None:
        spent = ctx.spend.spent(plan.team, period_start(ctx.now, team_budget.period), ctx.now)
    verdict = budget_checks(
        usage,
        plan_budget=plan.budget,
        team=plan.team,
        team_budget=team_budget,
        team_spent=spent,
        team_source=policy.source("budgets", plan.team),
    )
    checks = list(verdict.checks)
    cap = doc.budgets.plan_max if doc.budgets else None
    if cap is not None:
        amount = usage.money
        v: Literal["ok", "warn", "block"] = (
            "block"
            if cap.hard is not None and amount > cap.hard
            else "warn"
            if cap.soft is not None and amount > cap.soft
            else "ok"
        )
        checks.append(
            BudgetCheck(
                "policy:plan_max",
                "money",
                amount,
                cap.soft,
                cap.hard,
                v,
                source=policy.source("budgets", "plan_max"),
            )
        )
    plan_src = ctx.plan_path or plan.id
    for check in checks:
        if check.verdict == "ok":
            continue
        source = check.source or f"{plan_src} (budget)"
        effect: Literal["deny", "warn"] = "deny" if check.verdict == "block" else "warn"
        trace.append(
            RuleMatch(
                f"budget.{check.scope}.{check.metric}",
                "budget",
                effect,
                source,
                check.reason,
                only.id if only else None,
            )
        )
    return BudgetVerdict(tuple(checks))


def _requirement(rid: str, spec: RequireSpec, description: str, source: str) -> Requirement:
    return Requirement(
        id=rid,
        description=description,
        count=spec.count,
        users=tuple(spec.users),
        teams=tuple(spec.teams),
        distinct_teams=spec.distinct_teams,
        min_permission=spec.min_permission,
        source=source,
    )


def _approvals(
    policy: PolicySet, ctx: EvalContext, facts: PlanFacts, risk: Risk, trace: list[RuleMatch]
) -> ApprovalRequirements:
    doc = policy.document
    required: list[Requirement | AnyOf] = []
    for rule, when, source in policy.compiled_approvals:
        if not when.holds(facts):
            continue
        entry: Requirement | AnyOf
        if rule.require is not None:
            entry = _requirement(rule.id, rule.require, rule.description, source)
        else:
            entry = AnyOf(
                id=rule.id,
                any_of=tuple(
                    _requirement(f"{rule.id}[{i}]", spec, rule.description, source)
                    for i, spec in enumerate(rule.any_of or [])
                ),
                source=source,
            )
        required.append(entry)
        trace.append(RuleMatch(rule.id, "approval", "require", source, describe_requirement(entry)))
    if not required:
        entry = Requirement(
            id="default-approval", description="no approval rule matched", count=1, source=BUILTIN
        )
        required.append(entry)
        trace.append(
            RuleMatch(
                entry.id,
                "approval",
                "require",
                BUILTIN,
                "no approval rule matched: " + describe_requirement(entry),
            )
        )
    high = LEVELS.index(risk.level) >= LEVELS.index("high")
    dual = any(
        r.distinct_teams > 1
        if isinstance(r, Requirement)
        else all(x.distinct_teams > 1 for x in r.any_of)
        for r in required
    )
    if high and not dual and len(doc.teams) >= 2:
        entry = Requirement(
            id="dual-authorization",
            count=2,
            teams=tuple(sorted(doc.teams)),
            distinct_teams=2,
            source=BUILTIN,
            description=f"risk is {risk.level}: two approvers from two teams",
        )
        required.append(entry)
        trace.append(
            RuleMatch(
                entry.id,
                "approval",
                "require",
                BUILTIN,
                f"risk {risk.level} ({risk.score}): " + describe_requirement(entry),
            )
        )

    excluded: dict[str, str] = {}
    if ctx.author:
        excluded[ctx.author] = "author of the change: the author's approval never counts"
    for sod in doc.separation_of_duties:
        hits = [p for p in ctx.paths if glob_any(sod.paths, (p,))]
        if not hits:
            continue
        source = policy.source("separation_of_duties", sod.id)
        names: dict[str, str] = {}
        if sod.exclude_path_authors:
            for path in hits:
                for login in ctx.change_authors.get(path, ()):
                    names.setdefault(login, f"wrote a change to {path}")
        for login in sod.exclude_users:
            names.setdefault(login, "listed in exclude_users")
        for login, why in names.items():
            excluded.setdefault(login, f"{why}; separation of duties ({sod.id} at {source})")
        trace.append(
            RuleMatch(
                sod.id,
                "separation_of_duties",
                "exclude",
                source,
                f"may not approve: {', '.join(sorted(names)) or 'nobody yet'} "
                f"(changed: {', '.join(hits)})",
            )
        )
    return ApprovalRequirements(
        all_of=tuple(required),
        excluded=excluded,
        team_members={n: tuple(t.members) for n, t in doc.teams.items()},
        team_slugs={n: tuple(t.github_teams) for n, t in doc.teams.items()},
    )
