"""Local incident reporter: one Markdown + JSON file pair per incident under the data dir.

In Actions mode the wiring passes a GitHub-issue reporter instead (same ``IncidentReporter``
port); locally a file is what an operator can find and attach to a ticket.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from app.execute.ports import Incident

__all__ = ["FileIncidentReporter"]

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
