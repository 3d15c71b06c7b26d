"""The dashboard as a FastAPI ``APIRouter``: ``GET /`` and ``GET /runs/{run}`` (read-only).

The webhook server mounts it (``app.include_router(create_dashboard_router(...))``). Access:

* with ``token`` set, every request needs ``Authorization: Bearer <token>`` or HTTP Basic with
  the token as password (browsers prompt for it; no JavaScript needed);
* without a token, only loopback clients are served (the default bind is 127.0.0.1). Behind a
  reverse proxy every client looks local: set a token there.

Data: audit events of the last ``days`` days from the ``AuditStore``; dead letters and live
pending plans through the Protocols in ``app.dashboard.data``. ``now`` is injected.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from app.audit.query import AuditQuery
from app.audit.render import run_summary
from app.audit.store import AuditStore
from app.dashboard.data import DeadLetterSource, PendingPlanSource, build_dashboard
from app.dashboard.html import render_main, render_message, render_run

__all__ = ["LOOPBACK_HOSTS", "create_dashboard_router"]

#: peers served without a token; "testclient" is what Starlette's in-process client reports
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})


def _token_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def _guard(token: str | None) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        if token:
            given = _token_from(request)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                raise HTTPException(
                    status_code=401,
                    detail="dashboard token required",
                    headers={"WWW-Authenticate": 'Basic realm="plangate", charset="UTF-8"'},
                )
            return
        host = request.client.host if request.client else ""
        if host not in LOOPBACK_HOSTS:
            raise HTTPException(
                status_code=403,
                detail="the dashboard is served to localhost only; configure a dashboard token",
            )

    return check


def create_dashboard_router(
    *,
    store: AuditStore,
    now: Callable[[], datetime],
    token: str | None = None,
    dead_letters: DeadLetterSource | None = None,
    pending_source: PendingPlanSource | None = None,
    days: int = 14,
) -> APIRouter:
    router = APIRouter(dependencies=[Depends(_guard(token))])

    @router.get("/", response_class=HTMLResponse)
    def dashboard(cost_by: str = "team") -> HTMLResponse:
        current = now()
        events = store.query(AuditQuery(since=current - timedelta(days=days)))
        data = build_dashboard(
            events,
            now=current,
            days=days,
            dead_letters=dead_letters,
            pending_source=pending_source,
        )
        return HTMLResponse(render_main(data, cost_by=cost_by))

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(run_id: str) -> HTMLResponse:
        events = store.query(AuditQuery(correlation_id=run_id))
        if not events:
            return HTMLResponse(
                render_message("Run not found", f"no audit events for run {run_id!r}"),
                status_code=404,
            )
        return HTMLResponse(render_run(run_summary(events), events))

    return router
