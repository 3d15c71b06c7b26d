"""Recover missed webhooks: ask GitHub which deliveries failed and have them redelivered.

GitHub does not redeliver failed webhooks by itself; it recommends listing the App's deliveries
(``GET /app/hook/deliveries``, App JWT) and requesting a new attempt for the failed ones
(``POST /app/hook/deliveries/{id}/attempts``):
https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries

A delivery id (``guid``) is redelivered only if none of its attempts succeeded and our inbox
does not already hold it (a redelivery reuses the guid, so the inbox dedupes anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.github.client import RestTransport
from app.server.inbox import InboxStore

__all__ = ["RecoveryReport", "recover_deliveries"]


@dataclass(slots=True)
class RecoveryReport:
    scanned: int = 0
    redelivered: list[str] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    dry_run: bool = False


def _when(item: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00"))


def _ok(item: Mapping[str, Any]) -> bool:
    code = item.get("status_code")
    return isinstance(code, int) and 200 <= code < 300


def recover_deliveries(
    transport: RestTransport, inbox: InboxStore, *, since: datetime, dry_run: bool = False
) -> RecoveryReport:
    """Redeliver failed deliveries since ``since`` (newest first, stops at older pages)."""
    report = RecoveryReport(dry_run=dry_run)
    attempts: dict[str, list[Mapping[str, Any]]] = {}
    path: str | None = "/app/hook/deliveries"
    params: dict[str, Any] | None = {"per_page": 100}
    while path:
        resp = transport.request("GET", path, params=params)
        items = list(resp.data or [])
        report.scanned += len(items)
        recent = [i for i in items if _when(i) >= since]
        for item in recent:
            attempts.setdefault(str(item["guid"]), []).append(item)
        if len(recent) < len(items):
            break  # the list is newest first: everything after this is older than --since
        path = _next(resp.headers.get("link", ""))
        params = None
    for guid, tries in attempts.items():
        if any(_ok(t) for t in tries):
            continue
        if inbox.get(guid) is not None:
            report.already_stored.append(guid)
            continue
        latest = max(tries, key=_when)
        if not dry_run:
            transport.request("POST", f"/app/hook/deliveries/{latest['id']}/attempts")
        report.redelivered.append(guid)
    return report


def _next(link: str) -> str | None:
    for part in link.split(","):
        if 'rel="next"' in part:
            return part[part.find("<") + 1 : part.find(">")]
    return None
