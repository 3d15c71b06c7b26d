"""Local incident reporter: one Markdown + JSON file pair per incident under the data dir.

In Actions mode the wiring passes a GitHub-issue reporter instead (same ``IncidentReporter``
port); locally a file is what an operator can find and attach to a ticket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from app.execute.ports import Incident

__all__ = ["FileIncidentReporter", "GitHubIssueIncidents", "IssueOpener"]

log = logging.getLogger(__name__)


class FileIncidentReporter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open_incident(self, incident: Incident) -> str:
        stem = f"{incident.plan_id}-{incident.run_id}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            md = self.directory / f"{stem}.md"
            md.write_text(incident.render_markdown(), encoding="utf-8")
            (self.directory / f"{stem}.json").write_text(
                json.dumps(asdict(incident), indent=2, sort_keys=True, default=str) + "\n",
                encoding="utf-8",
            )
        except OSError as exc:
            log.error("cannot write incident %s: %s", stem, exc)
            return f"incident not written ({exc.strerror}); see the run events"
        return str(md)


class IssueOpener(Protocol):
    """Opens a GitHub issue; returns its URL. The GitHub adapter implements it (Actions mode)."""

    def open_issue(self, repo: str, title: str, body: str, labels: Sequence[str]) -> str: ...


class GitHubIssueIncidents:
    """Actions mode: the incident is a GitHub issue; if GitHub fails, a local file (fallback).

    The abort has already happened when this runs, so reporting trouble never raises: the
    fallback file and the returned text say what went wrong.
    """

    def __init__(
        self,
        opener: IssueOpener,
        *,
        repo: str,
        fallback: FileIncidentReporter,
        labels: Sequence[str] = ("incident", "plangate"),
    ) -> None:
        self.opener = opener
        self.repo = repo
        self.fallback = fallback
        self.labels = tuple(labels)

    def open_incident(self, incident: Incident) -> str:
        try:
            return self.opener.open_issue(
                self.repo, incident.title, incident.render_markdown(), self.labels
            )
        except Exception as exc:  # GitHub down: keep the evidence locally and say so
            where = self.fallback.open_incident(incident)
            log.error("cannot open incident issue in %s: %s", self.repo, exc)
            return f"{where} (GitHub issue failed: {type(exc).__name__}: {exc})"
