"""Recover missed webhooks: ask GitHub which deliveries failed and have them redelivered.

GitHub does not redeliver failed webhooks by itself; it recommends listing the App's deliveries
(``GET /app/hook/deliveries``, App JWT) and requesting a new attempt for the failed ones
(``POST /app/hook/deliveries/{id}/attempts``):
https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries

A delivery id (``guid``) is redelivered only if none of its attempts succeeded and our inbox
does not already hold it (a redelivery reuses the guid, so the inbox dedupes anyway).

``RecoverySchedule`` runs it from ``plangate serve --recover-every``: once at start-up for the
window since the last recorded recovery (``DATA_DIR/recovery.json``; what a server that was down
missed), then periodically. A run that fails is logged and not recorded, so the next one covers
its window too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.github.client import RestTransport
from app.server.inbox import InboxStore

__all__ = ["RecoveryReport", "RecoverySchedule", "recover_deliveries"]

log = logging.getLogger(__name__)

#: GitHub keeps webhook deliveries for 3 days: older ones cannot be redelivered
MAX_WINDOW = timedelta(days=3)
#: each window starts this much before the last run's start (clock skew, in-flight deliveries)
OVERLAP = timedelta(minutes=5)


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


class RecoverySchedule:
    """``recover_deliveries`` at start-up and then every ``every``, in a daemon thread.

    ``recover(since)`` does the work (wired by ``for_settings``); ``state`` is the JSON file
    holding when the last successful run started. Windows: since that time (minus ``OVERLAP``),
    or ``every`` on the very first run, never longer than GitHub keeps deliveries (3 days).
    ``now`` and the ``wait`` between runs are injected so tests take no time.
    """

    def __init__(
        self,
        recover: Callable[[datetime], RecoveryReport],
        *,
        state: Path,
        every: timedelta,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("the recovery interval must be positive")
        self._recover = recover
        self.state = state
        self.every = every
        self._now = now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.last_error: str | None = None

    def last_recorded(self) -> datetime | None:
        try:
            data = json.loads(self.state.read_text())
            return datetime.fromisoformat(data["last_started_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "ignoring unreadable %s (%s): recovering the default window", self.state, exc
            )
            return None

    def window_start(self, now: datetime) -> datetime:
        last = self.last_recorded()
        since = now - self.every if last is None else last - OVERLAP
        return max(since, now - MAX_WINDOW)

    def run_once(self) -> RecoveryReport | None:
        """One recovery for the window since the last recorded one; None if it failed."""
        started = self._now()
        since = self.window_start(started)
        try:
            report = self._recover(since)
        except Exception as exc:  # logged and retried at the next tick: never kills the thread
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("webhook delivery recovery since %s failed: %s", since, self.last_error)
            return None
        self.runs += 1
        self.last_error = None
        self._record(started, since, report)
        if report.redelivered:
            log.info(
                "recovery since %s: redelivery requested for %d missed delivery(ies)",
                since.isoformat(),
                len(report.redelivered),
            )
        return report

    def _record(self, started: datetime, since: datetime, report: RecoveryReport) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "last_started_at": started.isoformat(),
                    "since": since.isoformat(),
                    "scanned": report.scanned,
                    "redelivered": report.redelivered,
                }
            )
        )
        os.replace(tmp, self.state)  # atomic: a crash leaves the old record or the new one

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.every.total_seconds())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="plangate-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @classmethod
    def for_settings(
        cls, settings: Any, inbox: InboxStore, *, every: timedelta
    ) -> RecoverySchedule:
        """Authenticated as the App (``GITHUB_APP_ID``, key, ``GITHUB_API_URL``)."""
        from app.github.auth import AppCredentials, InstallationTokens

        if settings.github_app_id is None or settings.github_private_key is None:
            raise ValueError("recovery needs GITHUB_APP_ID and GITHUB_PRIVATE_KEY(_PATH)")
        tokens = InstallationTokens(
            AppCredentials(
                app_id=settings.github_app_id,
                private_key=settings.github_private_key.get_secret_value(),
                base_url=settings.github_api_url,
            )
        )
        return cls(
            lambda since: recover_deliveries(tokens.app_transport, inbox, since=since),
            state=Path(settings.data_dir) / "recovery.json",
            every=every,
        )
