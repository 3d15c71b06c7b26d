"""``plangate deliveries list|retry|recover``: the webhook inbox from the command line."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from app.errors import InputError
from app.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deliveries",
        help="inspect, retry and recover webhook deliveries",
        description="The server's durable webhook inbox (PLANGATE_DATABASE_URL, else "
        "PLANGATE_DATA_DIR/inbox.sqlite3).",
    )
    sub = parser.add_subparsers(dest="deliveries_command", metavar="ACTION")
    sub.required = True

    ls = sub.add_parser("list", help="recent deliveries, newest first")
    ls.add_argument(
        "--status", choices=("queued", "processing", "done", "dead", "superseded"), default=None
    )
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--format", choices=("text", "json"), default="text")
    ls.set_defaults(func=run_list)

    retry = sub.add_parser("retry", help="queue a delivery again (e.g. a dead letter)")
    retry.add_argument("delivery_id", metavar="ID")
    retry.set_defaults(func=run_retry)

    recover = sub.add_parser(
        "recover",
        help="ask GitHub to redeliver webhooks that failed since a time",
        description="Lists the App's webhook deliveries (GET /app/hook/deliveries) and requests "
        "a new attempt for each failed one we do not have.",
    )
    recover.add_argument(
        "--since",
        required=True,
        metavar="WHEN",
        help="ISO time (2026-11-24T10:00:00Z) or a duration back from now (30m, 6h, 2d)",
    )
    recover.add_argument("--dry-run", action="store_true", help="list, do not redeliver")
    recover.set_defaults(func=run_recover)


def _inbox(settings: Settings):
    from app.server.inbox import Inbox, open_inbox

    if settings.database_url is not None:  # the replicas' shared PostgreSQL inbox
        return open_inbox(settings)
    path = settings.data_dir / "inbox.sqlite3"
    if not path.exists():
        raise InputError(
            f"no inbox at {path}",
            hint="set PLANGATE_DATA_DIR to the server's data directory",
        )
    return Inbox(path)


def _time(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def run_list(args: argparse.Namespace) -> int:
    inbox = _inbox(Settings.from_env())
    rows = inbox.list(status=args.status, limit=args.limit)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "id": d.id,
                        "event": d.event,
                        "action": d.action,
                        "repo": d.repo,
                        "key": d.order_key,
                        "status": d.status,
                        "attempts": d.attempts,
                        "received_at": _time(d.received_at),
                        "last_error": d.last_error,
                    }
                    for d in rows
                ],
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"webhook deliveries ({inbox.location})")
    for col in ("id", "event", "pull request", "status", "attempts", "received", "last error"):
        table.add_column(col, overflow="fold")
    for d in rows:
        event = f"{d.event}.{d.action}" if d.action else d.event
        table.add_row(
            d.id,
            event,
            d.order_key or "",
            d.status,
            str(d.attempts),
            _time(d.received_at),
            (d.last_error or "")[:120],
        )
    Console().print(table)
    return 0


def run_retry(args: argparse.Namespace) -> int:
    inbox = _inbox(Settings.from_env())
    delivery = inbox.get(args.delivery_id)
    if delivery is None:
        raise InputError(
            f"no delivery {args.delivery_id!r} in the inbox",
            hint="`plangate deliveries list` shows the ids; for deliveries the server never "
            "received use `plangate deliveries recover --since ...`",
        )
    if not inbox.retry(args.delivery_id):
        raise InputError(f"delivery {args.delivery_id!r} is being processed right now")
    print(f"queued {args.delivery_id} ({delivery.event}) again; the running server picks it up")
    return 0


def parse_since(text: str, *, now: datetime) -> datetime:
    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"--since {text!r} is neither an ISO time nor a duration",
            hint="use e.g. 2026-11-24T10:00:00Z, 90m, 6h or 2d",
        ) from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def run_recover(args: argparse.Namespace) -> int:
    from app.github.auth import AppCredentials, InstallationTokens
    from app.server.inbox import open_inbox
    from app.server.recovery import recover_deliveries

    settings = Settings.from_env()
    since = parse_since(args.since, now=datetime.now(UTC))
    if settings.github_app_id is None or settings.github_private_key is None:
        raise InputError(
            "recover needs the App's credentials: GITHUB_APP_ID and GITHUB_PRIVATE_KEY(_PATH)",
            hint="the webhook deliveries API is authenticated as the App (JWT)",
        )
    tokens = InstallationTokens(
        AppCredentials(
            app_id=settings.github_app_id,
            private_key=settings.github_private_key.get_secret_value(),
            base_url=settings.github_api_url,
        )
    )
    report = recover_deliveries(
        tokens.app_transport, open_inbox(settings), since=since, dry_run=args.dry_run
    )
    verb = "would redeliver" if args.dry_run else "redelivery requested for"
    print(f"scanned {report.scanned} deliveries since {since.isoformat()}")
    for guid in report.redelivered:
        print(f"{verb} {guid}")
    for guid in report.already_stored:
        print(f"already in the inbox (not redelivered): {guid}")
    print(f"{len(report.redelivered)} delivery(ies) {verb.split()[0]} redelivered")
    return 0
