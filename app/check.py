"""``plangate check``: find plan files, validate them all, and collect one report.

The same function serves the CLI, the GitHub App and the executor. It reads files through a
``read`` callable so the app can feed it blobs from a git ref instead of the working tree.
Policy and cost evaluation plug in on top of this report (``app.policy``, ``app.cost``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.actions.registry import ActionRegistry, default_registry
from app.cost import CostChange, PlanCost, PriceTable, diff_costs, estimate_plan
from app.errors import Issue, PlanError
from app.plan.loader import LoadedPlan, load_plan
from app.plan.model import Plan
from app.policy.context import EvalContext
from app.policy.decision import Decision
from app.policy.diff import RuleChange
from app.policy.engine import evaluate
from app.policy.loader import PolicySet

__all__ = [
    "PLAN_SUFFIXES",
    "CheckReport",
    "FileResult",
    "apply_policy",
    "check_paths",
    "cost_diff",
    "discover_plan_files",
]

PLAN_SUFFIXES = (".yaml", ".yml")


@dataclass(slots=True)
class FileResult:
    path: str
    plan: LoadedPlan | None = None
    issues: list[Issue] = field(default_factory=list)


@dataclass(slots=True)
class CheckReport:
    """Everything one ``check`` run found.

    ``exit_code``: 2 invalid input (a plan or the policy), else 1 if any plan is denied by
    policy or a hard budget, else 0. ``decisions`` is keyed by plan path.
    """

    files: list[FileResult] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    policy: PolicySet | None = None
    decisions: dict[str, Decision] = field(default_factory=dict)
    base_ref: str | None = None
    cost_changes: list[CostChange] | None = None
    policy_changes: list[RuleChange] | None = None

    @property
    def denied(self) -> list[str]:
        return [path for path, d in self.decisions.items() if not d.allowed]

    @property
    def plans(self) -> list[LoadedPlan]:
        return [f.plan for f in self.files if f.plan is not None]

    @property
    def all_issues(self) -> list[Issue]:
        return [*self.issues, *(i for f in self.files for i in f.issues)]

    @property
    def valid(self) -> bool:
        return not self.all_issues

    @property
    def exit_code(self) -> int:
        if not self.valid:
            return 2
        return 1 if self.denied else 0


def discover_plan_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[Issue]]:
    """Files as given; directories searched recursively for ``*.yaml``/``*.yml`` (sorted)."""
    files: list[Path] = []
    issues: list[Issue] = []
    if not paths:
        issues.append(
            Issue(".", "no paths given", "path.none", hint="pass plan files or directories")
        )
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # hidden folders (.github/, .git/, .venv/) never hold plans: `check .` skips them
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in PLAN_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                issues.append(
                    Issue(
                        str(raw),
                        "directory contains no plan files (*.yaml, *.yml)",
                        "path.no_plans",
                        hint="point at a directory of plans, e.g. plans/",
                    )
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            issues.append(Issue(str(raw), "no such file or directory", "path.missing"))
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, issues


def check_paths(
    paths: Sequence[str | Path], *, registry: ActionRegistry | None = None
) -> CheckReport:
    """Validate every plan under ``paths``; never raises for bad input."""
    registry = registry or default_registry()
    files, issues = discover_plan_files(paths)
    report = CheckReport(issues=issues)
    for path in files:
        result = FileResult(path=str(path))
        try:
            result.plan = load_plan(path, registry=registry)
        except PlanError as exc:
            result.issues = exc.issues
        report.files.append(result)
    report.issues.extend(duplicate_plan_ids(report.plans))
    return report


def duplicate_plan_ids(plans: Iterable[LoadedPlan]) -> list[Issue]:
    """A plan id names one plan: two files with the same id are an error in the second."""
    first: dict[str, LoadedPlan] = {}
    issues: list[Issue] = []
    for loaded in plans:
        plan_id = loaded.plan.id
        if plan_id in first:
            issues.append(
                Issue(
                    loaded.path,
                    f"plan id '{plan_id}' is already used by {first[plan_id].path}",
                    "plan.duplicate_id",
                    line=loaded.line_of("id"),
                    col=loaded.source.locate(("id",))[1],
                    field="id",
                    hint="give each plan a unique id",
                )
            )
        else:
            first[plan_id] = loaded
    return issues


def apply_policy(
    report: CheckReport,
    policy: PolicySet,
    context_for: Callable[[LoadedPlan], EvalContext],
) -> CheckReport:
    """Judge every valid plan of ``report`` with ``policy``; decisions go into the report."""
    report.policy = policy
    for loaded in report.plans:
        report.decisions[loaded.path] = evaluate(loaded.plan, policy, context_for(loaded))
    return report


def cost_diff(
    base: Mapping[str, Plan], head: Mapping[str, Plan], prices: PriceTable
) -> list[CostChange]:
    """Cost of each plan at base and head (keyed by repository path), priced with ``prices``."""
    base_costs: dict[str, PlanCost] = {p: estimate_plan(plan, prices) for p, plan in base.items()}
    head_costs: dict[str, PlanCost] = {p: estimate_plan(plan, prices) for p, plan in head.items()}
    return diff_costs(base_costs, head_costs)
