"""``PolicyEngineEvaluator``: the real ``Evaluator`` — policy engine, cost, approval gate.

Wiring only: ``app.policy.engine.evaluate`` judges each plan against the base branch's policy
(``load_policy_files`` on the files the pipeline read at the base commit), ``authorize`` checks
queue ownership (may the pull request's author enqueue plans of that team?), the decisions'
costs are diffed against the base versions of the same plans, and ``app.approvals.gate`` decides
the approval check from the merged approval requirements. Rendering into check-run outcomes
stays here and in ``app.approvals.render``; no rule is decided in this module.

Fail closed: a policy that does not load raises ``PolicyLoadError`` (the pipeline fails the three
checks with its diagnostics); a decision without approval requirements fails the approval check.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from decimal import Decimal

from app.approvals.attest import Risk
from app.approvals.gate import GateOptions, GateResult, evaluate_gate
from app.approvals.render import check_run_output
from app.cost import BudgetCheck, PlanCost, diff_costs, fmt_amount
from app.github.checks import Annotation, CheckOutcome, failed_outcome
from app.plan.loader import LoadedPlan
from app.policy.context import EvalContext
from app.policy.decision import Decision, RuleMatch
from app.policy.engine import authorize, evaluate
from app.policy.loader import PolicySet, load_policy_files
from app.policy.requirements import ApprovalRequirements
from app.server.approval import ApprovalFacts, combine_cost, combine_risk
from app.server.evaluate import Evaluation, EvaluationRequest

__all__ = ["PolicyEngineEvaluator"]


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class PolicyEngineEvaluator:
    """``Evaluator`` backed by ``app.policy`` and ``app.approvals``."""

    #: parsed policy sets kept, by the git tree SHA of the base's ``policies/``
    POLICY_CACHE_SIZE = 64

    def __init__(self, *, gate_options: GateOptions | None = None) -> None:
        self.gate_options = gate_options
        self._policies: OrderedDict[str, PolicySet] = OrderedDict()
        self._lock = threading.Lock()

    def _policy(self, request: EvaluationRequest) -> PolicySet:
        """The base's policy set, parsed once per ``policies/`` tree SHA.

        A tree SHA names its files' paths and bytes exactly (git content addressing), so the
        same SHA always parses to the same set; a load error is not cached (raised each time).
        """
        key = request.policy_tree_sha
        if key is None:
            return load_policy_files(request.policy_files, origin="policies/")
        with self._lock:
            cached = self._policies.get(key)
            if cached is not None:
                self._policies.move_to_end(key)
                return cached
        policy = load_policy_files(request.policy_files, origin="policies/")
        with self._lock:
            self._policies[key] = policy
            while len(self._policies) > self.POLICY_CACHE_SIZE:
                self._policies.popitem(last=False)
        return policy

    def evaluate(self, request: EvaluationRequest) -> Evaluation:
        policy = self._policy(request)
        decisions: dict[str, tuple[LoadedPlan, Decision, Decision]] = {}
        for loaded in request.plans:
            ctx = EvalContext(
                now=request.now,
                author=request.pull.author,
                plan_path=loaded.path,
                changed_paths=request.changed_paths,
            )
            decision = evaluate(loaded.plan, policy, ctx)
            queue = authorize(request.pull.author, "enqueue", loaded.plan, policy)
            decisions[loaded.path] = (loaded, decision, queue)
        base_costs: dict[str, PlanCost] = {}
        for path, base in request.base_plans.items():
            cost = evaluate(base.plan, policy, EvalContext(now=request.now)).cost
            if cost is not None:
                base_costs[path] = cost
        approval, gate = self._approval(request, decisions)
        facts = None
        if gate is not None:  # what the approval attestation records (app.server.approval)
            facts = ApprovalFacts(
                gate=gate,
                policy_digest=policy.digest,
                risk=combine_risk(
                    [
                        Risk(score=d.risk.score, level=d.risk.level) if d.risk else None
                        for _, d, _ in decisions.values()
                    ]
                ),
                cost=combine_cost(
                    [(d.cost.money, d.cost.currency) for _, d, _ in decisions.values() if d.cost]
                ),
            )
        return Evaluation(
            policy=_policy_outcome(decisions, policy),
            cost=_cost_outcome(decisions, base_costs),
            approval=approval,
            approval_facts=facts,
        )

    def _approval(
        self,
        request: EvaluationRequest,
        decisions: dict[str, tuple[LoadedPlan, Decision, Decision]],
    ) -> tuple[CheckOutcome, GateResult | None]:
        reqs = [d.approvals for _, d, _ in decisions.values()]
        if not reqs or any(r is None for r in reqs):
            return failed_outcome(
                "plangate/approval",
                "No approval requirements from policy",
                "The policy engine returned no approval requirements for a plan; Plangate "
                "fails closed.",
            ), None
        merged = _merge([r for r in reqs if r is not None])
        result = evaluate_gate(
            merged,
            request.context,
            now=request.now,
            options=self.gate_options,
            requirements_base_sha=request.pull.base_sha,
        )
        out = check_run_output(result)
        return CheckOutcome(out.name, out.conclusion, out.title, out.summary, out.text), result


def _merge(reqs: list[ApprovalRequirements]) -> ApprovalRequirements:
    """Several plans in one pull request: every plan's requirements must hold."""
    if len(reqs) == 1:
        return reqs[0]
    team_members: dict[str, tuple[str, ...]] = {}
    team_slugs: dict[str, tuple[str, ...]] = {}
    excluded: dict[str, str] = {}
    for r in reqs:
        team_members.update(r.team_members)
        team_slugs.update(r.team_slugs)
        excluded.update(r.excluded)
    return ApprovalRequirements(
        all_of=tuple(entry for r in reqs for entry in r.all_of),
        none_required=all(r.none_required for r in reqs),
        distinct_approvers=any(r.distinct_approvers for r in reqs),
        excluded=excluded,
        team_members=team_members,
        team_slugs=team_slugs,
    )


def _step_line(loaded: LoadedPlan, step: str | None) -> int:
    if step:
        for i, s in enumerate(loaded.plan.steps):
            if s.id == step:
                return loaded.line_of("steps", i) or 1
    return 1


def _policy_outcome(
    decisions: dict[str, tuple[LoadedPlan, Decision, Decision]], policy: PolicySet
) -> CheckOutcome:
    rows = ["| plan | verdict | risk | queue |", "|---|---|---|---|"]
    trace = ["| plan | rule | effect | reason | source |", "|---|---|---|---|---|"]
    annotations: list[Annotation] = []
    denied: list[str] = []
    for path, (loaded, decision, queue) in decisions.items():
        verdict = "allow" if decision.allowed and queue.allowed else "deny"
        if verdict == "deny":
            denied.append(path)
        risk = f"{decision.risk.level} ({decision.risk.score})" if decision.risk else "—"
        rows.append(f"| `{_md(path)}` | **{verdict}** | {risk} | {queue.verdict} |")
        matches: Iterable[RuleMatch] = (*decision.trace, *queue.trace)
        for m in matches:
            where = f" step `{_md(m.step)}`" if m.step else ""
            trace.append(
                f"| `{_md(path)}`{where} | `{_md(m.rule)}` | {m.effect} | {_md(m.reason)} "
                f"| `{_md(m.source)}` |"
            )
            if m.effect in ("deny", "warn"):
                annotations.append(
                    Annotation(
                        path=path,
                        start_line=_step_line(loaded, m.step),
                        message=f"{m.reason} (policy {m.source})",
                        level="failure" if m.effect == "deny" else "warning",
                        title=f"policy {m.effect}: {m.rule}",
                    )
                )
    summary = (
        f"Policy `{policy.digest}` read from the base branch ({', '.join(policy.files)}).\n\n"
        + "\n".join(rows)
        + "\n\n### Rule decisions\n\n"
        + "\n".join(trace)
    )
    if denied:
        title = f"Denied: {len(denied)} of {len(decisions)} plan(s) violate policy"
        return CheckOutcome("plangate/policy", "failure", title, summary, "", tuple(annotations))
    title = f"Allowed: {len(decisions)} plan(s) comply with policy"
    return CheckOutcome("plangate/policy", "success", title, summary, "", tuple(annotations))


def _cost_outcome(
    decisions: dict[str, tuple[LoadedPlan, Decision, Decision]], base: dict[str, PlanCost]
) -> CheckOutcome:
    head = {p: d.cost for p, (_, d, _) in decisions.items() if d.cost is not None}
    missing = [p for p, (_, d, _) in decisions.items() if d.cost is None]
    rows = [
        "| plan | team | environment | base | head | change | tokens | runner min | API calls |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    currency = next((c.currency for c in head.values()), "")
    for change in diff_costs(base, head):
        if change.status == "removed":
            continue
        c = head[change.path]
        delta = change.delta
        sign = "+" if delta > 0 else ""
        rows.append(
            f"| `{_md(change.path)}` | {_md(c.team)} | {_md(c.environment)} "
            f"| {fmt_amount(change.base)} | {fmt_amount(change.head)} "
            f"| {sign}{fmt_amount(delta)} ({change.status}) | {c.tokens} "
            f"| {fmt_amount(c.runner_minutes)} | {c.api_calls} |"
        )
    checks: list[BudgetCheck] = [
        check for _, d, _ in decisions.values() if d.budget is not None for check in d.budget.checks
    ]
    budget = ["| scope | metric | amount | soft | hard | verdict |", "|---|---|---|---|---|---|"]
    for ch in checks:
        budget.append(
            f"| {_md(ch.scope)} | {ch.metric} | {fmt_amount(ch.amount)} "
            f"| {'—' if ch.soft is None else fmt_amount(ch.soft)} "
            f"| {'—' if ch.hard is None else fmt_amount(ch.hard)} | {ch.verdict} |"
        )
    unpriced = sorted({u for c in head.values() for u in c.unpriced})
    total = sum((c.money for c in head.values()), Decimal(0))
    summary = (
        f"Amounts in {currency or 'the policy currency'}.\n\n"
        + "\n".join(rows)
        + ("\n\n### Budgets\n\n" + "\n".join(budget) if checks else "")
    )
    if unpriced:
        summary += "\n\nNot priced by the policy's price table: " + ", ".join(unpriced)
    verdicts = {ch.verdict for ch in checks}
    if missing:
        return failed_outcome(
            "plangate/cost",
            "Cost could not be computed",
            summary + "\n\nNo cost for: " + ", ".join(missing),
        )
    amount = f"{fmt_amount(total)} {currency}".strip()
    if "block" in verdicts or unpriced:
        reasons = [c.reason for c in checks if c.verdict == "block"]
        title = f"Over budget: {amount}" if reasons else f"Unpriced steps: {amount}"
        return CheckOutcome("plangate/cost", "failure", title, summary)
    if "warn" in verdicts:
        return CheckOutcome("plangate/cost", "neutral", f"{amount}: above a soft limit", summary)
    return CheckOutcome("plangate/cost", "success", f"{amount}: within budget", summary)
