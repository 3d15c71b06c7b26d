"""``plangate serve``: the GitHub App's webhook server on uvicorn."""

from __future__ import annotations

import argparse
import logging

from app.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the GitHub App webhook server",
        description="Serve POST /webhook, GET /healthz and GET /metrics. Configured from the "
        "environment: GITHUB_APP_ID, GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH, "
        "GITHUB_WEBHOOK_SECRET, GITHUB_API_URL, PLANGATE_DATA_DIR.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    serve.add_argument(
        "--details-url",
        default=None,
        metavar="URL",
        help="dashboard URL linked from check runs (details_url)",
    )
    serve.add_argument(
        "--write-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="pause between write requests per installation, as GitHub asks integrations to "
        "do to stay clear of secondary rate limits (default 1.0; 0 disables)",
    )
    serve.add_argument(
        "--audit-repo",
        default=None,
        metavar="PATH",
        help="git repository holding the audit trail: serves the dashboard at GET / "
        "(loopback clients only unless --dashboard-token-file is given)",
    )
    serve.add_argument(
        "--dashboard-token-file",
        default=None,
        metavar="PATH",
        help="file holding the dashboard's bearer token (remote access)",
    )
    serve.add_argument(
        "--recover-every",
        default=None,
        metavar="DURATION",
        help="run `deliveries recover` at start-up (for the window since the last recorded "
        "recovery) and then every DURATION, e.g. 1h (default: off)",
    )
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.observability.logs import configure_logging
    from app.server.app import Deps, create_app
    from app.server.engine import PolicyEngineEvaluator

    settings = Settings.from_env()
    # JSON lines with correlation ids; the App's key, the webhook secret and tokens redacted
    configure_logging(
        level=args.log_level.upper(),
        secrets=[
            s.get_secret_value()
            for s in (
                settings.github_private_key,
                settings.github_webhook_secret,
                settings.github_token,
                settings.database_url,  # PLANGATE_DATABASE_URL may carry a password
            )
            if s is not None
        ],
    )
    deps = Deps.from_settings(
        settings,
        evaluator=PolicyEngineEvaluator(),
        details_url=args.details_url,
        seconds_between_writes=args.write_interval or None,
    )
    if args.audit_repo:
        deps.routers.append(_dashboard(args, deps))
    if args.recover_every:
        deps.services.append(_recovery(args.recover_every, settings, deps))
    app = create_app(settings, deps)
    logging.getLogger("plangate").info(
        "serving on http://%s:%d (GitHub API %s, data in %s)",
        args.host,
        args.port,
        settings.github_api_url,
        settings.data_dir,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        log_config=None,  # keep our redacting JSON handler on the root logger
    )
    return 0


def _dashboard(args: argparse.Namespace, deps: object):
    from datetime import UTC, datetime
    from pathlib import Path

    from app.audit.git_store import GitAuditStore
    from app.dashboard.router import create_dashboard_router
    from app.errors import InputError

    token = None
    if args.dashboard_token_file:
        try:
            token = Path(args.dashboard_token_file).read_text().strip()
        except OSError as exc:
            raise InputError(
                f"--dashboard-token-file {args.dashboard_token_file}: {exc.strerror}"
            ) from exc
        if not token:
            raise InputError(f"--dashboard-token-file {args.dashboard_token_file} is empty")
    return create_dashboard_router(
        store=GitAuditStore(args.audit_repo),
        now=lambda: datetime.now(UTC),
        token=token,
        dead_letters=deps.inbox,  # type: ignore[attr-defined]
        pending_source=deps.evaluations,  # type: ignore[attr-defined]
    )


def _recovery(every: str, settings: Settings, deps: object):
    import re
    from datetime import timedelta

    from app.errors import InputError
    from app.server.recovery import RecoverySchedule

    m = re.fullmatch(r"([1-9][0-9]*)([mhd])", every.strip())
    if m is None:
        raise InputError(
            f"--recover-every {every!r} is not a duration of minutes, hours or days",
            hint="use e.g. 30m, 1h or 1d",
        )
    unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    try:
        return RecoverySchedule.for_settings(
            settings,
            deps.inbox,  # type: ignore[attr-defined]
            every=timedelta(**{unit: int(m.group(1))}),
        )
    except ValueError as exc:
        raise InputError(f"--recover-every: {exc}", hint="set the App's credentials") from exc
