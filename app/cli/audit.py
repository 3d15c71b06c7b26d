"""``plangate audit``: query, verify and export the audit trail; commit and push it.

    plangate audit list   [--plan P] [--run R] [--actor A] [--step S] [--event T ...]
                          [--since T] [--until T] [--team T] [--environment E] [--limit N]
    plangate audit show RUN            the run's timeline
    plangate audit verify              recompute the hash chain, check commits (exit 1 if broken)
    plangate audit export --format jsonl|csv [--output FILE] [filters]
    plangate audit commit | push [--remote origin]

Every subcommand takes ``--repo PATH`` (default: the current directory's repository) and
``--ref REF`` (default ``refs/heads/plangate/audit``); ``--format text|json`` where it applies.
Text is for people (rich tables), JSON for machines. Exit codes: 0 ok, 1 verification failed,
2 bad input (unknown run, bad time), 3 the store could not be read or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from app.audit.events import EVENT_TYPES
from app.audit.export import write_csv, write_jsonl
from app.audit.git_store import DEFAULT_REF, GitAuditStore
from app.audit.query import AuditQuery
from app.audit.render import events_table, run_summary, timeline_table, verify_json
from app.errors import InputError

__all__ = ["register"]


def _time(text: str) -> datetime:
    """ISO 8601 date or datetime; without a zone it means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-25 or 2026-11-25T02:00:00Z)"
        ) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", default=".", metavar="PATH", help="git repository holding the audit ref"
    )
    parser.add_argument("--ref", default=DEFAULT_REF, help=f"audit ref (default {DEFAULT_REF})")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", metavar="ID", help="plan id")
    parser.add_argument("--run", metavar="ID", help="run (correlation) id")
    parser.add_argument("--actor", metavar="LOGIN", help="actor id (login, app, workflow)")
    parser.add_argument("--step", metavar="ID", help="step id")
    parser.add_argument(
        "--event",
        action="append",
        choices=EVENT_TYPES,
        metavar="TYPE",
        help="event type (repeatable): " + ", ".join(EVENT_TYPES),
    )
    parser.add_argument("--since", type=_time, metavar="TIME", help="from this time (inclusive)")
    parser.add_argument("--until", type=_time, metavar="TIME", help="until this time (exclusive)")
    parser.add_argument("--team", metavar="TEAM")
    parser.add_argument("--environment", metavar="ENV")


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="query, verify and export the audit trail",
        description="The audit trail: hash-chained events on a git ref. See docs/audit.md.",
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list events (filters are ANDed)")
    _common(p)
    _filters(p)
    p.add_argument(
        "--limit", type=int, default=100, help="show the most recent N (default 100; 0: all)"
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_list)

    p = sub.add_parser("show", help="a run's timeline")
    _common(p)
    p.add_argument("run", metavar="RUN", help="run (correlation) id")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_show)

    p = sub.add_parser("verify", help="recompute the hash chain and check the commits")
    _common(p)
    p.add_argument(
        "--expect-commit",
        metavar="SHA",
        help="a commit known to be good (e.g. the remote's) that must still be in the history",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_verify)

    p = sub.add_parser("export", help="export events as JSON Lines or CSV")
    _common(p)
    _filters(p)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=run_export)

    p = sub.add_parser("commit", help="commit acknowledged events still in the journal")
    _common(p)
    p.add_argument("--message", "-m", help="note added to the commit message")
    p.set_defaults(func=run_commit)

    p = sub.add_parser("push", help="commit and push the audit ref (re-chains if the remote moved)")
    _common(p)
    p.add_argument("--remote", default="origin")
    p.add_argument("--attempts", type=int, default=5)
    p.set_defaults(func=run_push)


def _store(args: argparse.Namespace) -> GitAuditStore:
    return GitAuditStore(args.repo, ref=args.ref)


def _query(args: argparse.Namespace, **extra: Any) -> AuditQuery:
    try:
        return AuditQuery(
            plan_id=args.plan,
            correlation_id=args.run,
            actor=args.actor,
            step=args.step,
            types=tuple(args.event or ()),
            since=args.since,
            until=args.until,
            team=args.team,
            environment=args.environment,
            **extra,
        )
    except ValueError as exc:
        raise InputError(f"bad filter: {exc}") from exc


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def _event_json(events: list[Any]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json", exclude_none=True) for e in events]


def run_list(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise InputError("--limit must be 0 (all) or more")
    limit = args.limit or None
    with _store(args) as store:
        events = store.query(_query(args, limit=limit, newest_first=limit is not None))
    if limit is not None:
        events.reverse()
    if args.format == "json":
        _print_json({"count": len(events), "events": _event_json(events)})
        return 0
    console = Console()
    if not events:
        console.print("no matching audit events")
        return 0
    title = f"{len(events)} events" + (
        f" (the most recent {limit})" if limit == len(events) else ""
    )
    console.print(events_table(events, title=title))
    return 0


def run_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        events = store.query(AuditQuery(correlation_id=args.run))
    if not events:
        raise InputError(
            f"no audit events for run {args.run!r}",
            hint="`plangate audit list` shows recent runs (the 'run' column)",
        )
    summary = run_summary(events)
    if args.format == "json":
        _print_json({"run": summary.to_dict(), "events": _event_json(events)})
        return 0
    console = Console()
    console.print(
        f"[bold]run {summary.correlation_id}[/bold]  plan {summary.plan_id or '-'}  "
        f"status [bold]{summary.status}[/bold]  {summary.events} events  "
        f"{summary.duration_seconds:.1f}s  team {summary.team or '-'}  "
        f"env {summary.environment or '-'}"
    )
    if summary.plan_digest:
        console.print(f"plan digest {summary.plan_digest}")
    if summary.failed_steps:
        console.print(f"[red]failed steps: {', '.join(summary.failed_steps)}[/red]")
    console.print(timeline_table(events))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    with _store(args) as store:
        result = store.verify(expect_commit=args.expect_commit)
        tip = store.tip()
        commits = len(store.commit_chain())
    if args.format == "json":
        _print_json(verify_json(result, tip=tip, commits=commits))
    elif result.ok:
        print(
            f"ok: {result.count} events in {commits} commits verify; head seq {result.head.seq} "
            f"{result.head.hash}" + (f", tip {tip[:12]}" if tip else "")
        )
    else:
        assert result.first_break is not None
        print(f"BROKEN: {result.first_break.render()}", file=sys.stderr)
        print(
            f"{result.count} events verified before the break. Nothing after it can be trusted; "
            "compare with the remote copy and investigate who changed the audit ref.",
            file=sys.stderr,
        )
    return 0 if result.ok else 1


def run_export(args: argparse.Namespace) -> int:
    with _store(args) as store:
        events = store.query(_query(args))
    writer = write_jsonl if args.format == "jsonl" else write_csv
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            writer(events, out)
        print(f"wrote {len(events)} events to {args.output}", file=sys.stderr)
    else:
        writer(events, sys.stdout)
    return 0


def run_commit(args: argparse.Namespace) -> int:
    with _store(args) as store:
        sha = store.commit(args.message)
    print(f"committed {sha}" if sha else "nothing to commit")
    return 0


def run_push(args: argparse.Namespace) -> int:
    with _store(args) as store:
        tip = store.push(args.remote, attempts=args.attempts)
    print(f"pushed {args.ref} at {tip}" if tip else "nothing to push")
    return 0
