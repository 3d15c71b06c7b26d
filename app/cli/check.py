"""``plangate check`` and ``plangate schema``."""

from __future__ import annotations

import argparse
import sys

from app.check import check_paths
from app.plan.schema import plan_json_schema_text
from app.report import render


def register(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check",
        help="validate plans (and apply policy and cost)",
        description="Validate plan files or directories. Exit 0 pass, 1 policy/budget "
        "failure, 2 invalid input.",
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="plan files or directories")
    check.add_argument("--format", choices=("text", "json", "github"), default="text")
    check.add_argument(
        "--policies",
        default="policies",
        metavar="DIR",
        help="policy directory (default: policies/)",
    )
    check.set_defaults(func=run_check)

    schema = subparsers.add_parser("schema", help="print the plan format's JSON Schema")
    schema.set_defaults(func=run_schema)


def run_check(args: argparse.Namespace) -> int:
    report = check_paths(args.paths)
    text = render(report, args.format)
    if text:
        print(text)
    return report.exit_code


def run_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(plan_json_schema_text())
    return 0
