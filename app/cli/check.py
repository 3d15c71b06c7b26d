"""``plangate check`` and ``plangate schema``.

Wiring only: find and validate plans (``app.check``), load the policy set (from the working tree,
or with ``--base REF`` from that git ref, never from the change under review), build each plan's
``EvalContext`` (time, author, changed paths, spend ledger) and render. Exit codes: 0 pass,
1 policy deny or hard budget exceeded, 2 invalid input (plans or policies).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from app.check import CheckReport, apply_policy, check_paths, cost_diff
from app.errors import Issue, PolicyLoadError
from app.plan.loader import parse_plan
from app.plan.model import Plan
from app.plan.schema import plan_json_schema_text
from app.policy.context import EvalContext, FileSpendLedger, NoSpend, SpendLedger
from app.policy.diff import diff_policy_sets
from app.policy.loader import PolicySet, load_policy_dir
from app.report import render
from app.settings import Settings


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies",
        default="policies",
        metavar="DIR",
        help="policy directory (default: policies/)",
    )
    parser.add_argument(
        "--base",
        metavar="REF",
        help="read policies from this git ref (the pull request's base) and diff cost against "
        "the base version of each plan",
    )
    parser.add_argument("--author", metavar="LOGIN", help="author of the change (never counts)")
    parser.add_argument(
        "--ledger",
        metavar="FILE",
        help="team spend ledger, JSON Lines (default: $PLANGATE_DATA_DIR/spend.jsonl if present)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check",
        help="validate plans, apply policy and cost",
        description="Validate plan files or directories, judge them with the policy and price "
        "them. Exit 0 pass, 1 policy/budget failure, 2 invalid input.",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="plan files or directories")
    check.add_argument("--format", choices=("text", "json", "github"), default="text")
    add_policy_arguments(check)
    check.set_defaults(func=run_check)

    schema = subparsers.add_parser("schema", help="print the plan format's JSON Schema")
    schema.set_defaults(func=run_schema)


def _ledger(args: argparse.Namespace) -> SpendLedger:
    if args.ledger:
        return FileSpendLedger.from_path(args.ledger, missing_ok=False)
    default = Settings.from_env().data_dir / "spend.jsonl"
    return FileSpendLedger.from_path(default) if default.exists() else NoSpend()


def _display(path: str) -> str:
    """Plan paths as policies see them: relative to the working directory when possible."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return p.as_posix()
    return p.as_posix()


class PolicyWiring:
    """Policies and contexts for one command invocation (the edge: git, files, clock)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.now = datetime.now(UTC)
        self.tree = None
        self.changes: dict[str, tuple[str, ...]] = {}
        if args.base:
            from app.policy.git_source import GitTree  # adapter, only when asked for

            self.tree = GitTree(".")

    def load(self) -> PolicySet:
        if self.tree is not None:
            from app.policy.git_source import load_policies_at

            self.changes = self.tree.changes_since(self.args.base)
            return load_policies_at(self.tree, self.args.base, self.args.policies)
        return load_policy_dir(self.args.policies)

    def plan_path(self, path: str) -> str:
        return self.tree.relative(path) if self.tree is not None else _display(path)

    def context(self, path: str, ledger: SpendLedger) -> EvalContext:
        return EvalContext(
            now=self.now,
            author=self.args.author,
            plan_path=self.plan_path(path),
            changed_paths=tuple(self.changes),
            change_authors=self.changes,
            spend=ledger,
        )


def policy_issues(exc: PolicyLoadError, where: str) -> list[Issue]:
    return exc.issues or [Issue(where, exc.message, "policy.invalid", hint=exc.hint)]


def run_check(args: argparse.Namespace) -> int:
    report = check_paths(args.paths)
    wiring = PolicyWiring(args)
    try:
        policy = wiring.load()
    except PolicyLoadError as exc:
        report.issues.extend(policy_issues(exc, args.policies))
        policy = None
    if policy is not None:
        ledger = _ledger(args)
        apply_policy(report, policy, lambda lp: wiring.context(lp.path, ledger))
        if wiring.tree is not None:
            _compare_with_base(report, wiring, policy)
    text = render(report, args.format)
    if text:
        print(text)
    return report.exit_code


def _compare_with_base(report: CheckReport, wiring: PolicyWiring, policy: PolicySet) -> None:
    """Cost against the base version of each plan; the policy diff if policies/ changed."""
    tree, base = wiring.tree, wiring.args.base
    assert tree is not None
    report.base_ref = base
    head: dict[str, Plan] = {tree.relative(lp.path): lp.plan for lp in report.plans}
    base_plans: dict[str, Plan] = {}
    directories = {tree.relative(p) for p in wiring.args.paths if Path(p).is_dir()}
    candidates = set(head)
    for directory in directories:
        candidates.update(
            p for p in tree.files_at(base, directory) if p.endswith((".yaml", ".yml"))
        )
    for rel in sorted(candidates):
        raw = tree.blob_at(base, rel)
        if raw is None:
            continue
        plan, _, issues = parse_plan(rel, raw)
        if plan is not None and not issues:
            base_plans[rel] = plan
    prices = policy.document.prices
    if prices is not None:
        report.cost_changes = cost_diff(base_plans, head, prices)
    policy_dir = wiring.args.policies.strip("/")
    if any(p.startswith(policy_dir + "/") for p in wiring.changes):
        try:
            head_policy = load_policy_dir(wiring.args.policies)
        except PolicyLoadError as exc:
            report.issues.extend(policy_issues(exc, wiring.args.policies))
            return
        report.policy_changes = diff_policy_sets(policy, head_policy)


def run_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(plan_json_schema_text())
    return 0
