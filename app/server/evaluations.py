"""The latest evaluation of each open plan pull request: the dashboard's "pending plans".

The pipeline records, per pull request, the plans it evaluated on the head SHA (id, digest,
team, environment, path) and the verdict of each check; a pull request that no longer changes a
plan, or is closed, is forgotten. ``pending_plans()`` implements the dashboard's
``PendingPlanSource``: one row per plan, with the approval check's state and every check's
conclusion, newest first.

SQLite in WAL mode under ``PLANGATE_DATA_DIR`` (``evaluations.sqlite3``), like the inbox. It is
a view, not a source of truth: GitHub's check runs are. With several replicas each host keeps
the records of the deliveries it processed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.dashboard.data import PendingPlan
from app.github.checks import CheckOutcome
from app.github.client import PullRequestInfo

__all__ = ["EvaluatedPlan", "EvaluationLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    repo TEXT NOT NULL,
    number INTEGER NOT NULL,
    head_sha TEXT NOT NULL,
    author TEXT NOT NULL,
    plans TEXT NOT NULL,
    checks TEXT NOT NULL,
    first_seen REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (repo, number)
);
"""

#: what the approval check's conclusion means for a plan waiting in the queue
_APPROVAL = {
    "success": "approved",
    "action_required": "pending",
    "failure": "rejected",
    "neutral": "unknown",
    "skipped": "unknown",
}


@dataclass(frozen=True, slots=True)
class EvaluatedPlan:
    path: str
    plan_id: str | None  # None: the file did not load (see plangate/validate)
    digest: str | None = None
    team: str | None = None
    environment: str | None = None


class EvaluationLog:
    """Latest plans and check verdicts per open pull request (``PendingPlanSource``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @classmethod
    def in_dir(cls, data_dir: Path) -> EvaluationLog:
        return cls(Path(data_dir) / "evaluations.sqlite3")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(
        self,
        repo: str,
        pull: PullRequestInfo,
        plans: Sequence[EvaluatedPlan],
        outcomes: Sequence[CheckOutcome],
        *,
        now: float,
    ) -> None:
        """Replace the pull request's record with this evaluation (no plans: forget it)."""
        if not plans:
            self.forget(repo, pull.number)
            return
        plans_json = json.dumps(
            [[p.path, p.plan_id, p.digest, p.team, p.environment] for p in plans]
        )
        checks_json = json.dumps({o.name: [o.conclusion, o.title] for o in outcomes})
        with self._lock:
            self._db.execute(
                "INSERT INTO evaluations (repo, number, head_sha, author, plans, checks, "
                "first_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (repo, number) DO UPDATE SET head_sha=excluded.head_sha, "
                "author=excluded.author, plans=excluded.plans, checks=excluded.checks, "
                "updated_at=excluded.updated_at",
                (repo, pull.number, pull.head_sha, pull.author, plans_json, checks_json, now, now),
            )

    def forget(self, repo: str, number: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM evaluations WHERE repo=? AND number=?", (repo, number))

    def pending_plans(self) -> list[PendingPlan]:
        with self._lock:
            rows = self._db.execute(
                "SELECT repo, number, head_sha, author, plans, checks, first_seen "
                "FROM evaluations ORDER BY updated_at DESC"
            ).fetchall()
        out: list[PendingPlan] = []
        for repo, number, head_sha, author, plans_json, checks_json, first_seen in rows:
            checks = {name: (c[0], c[1]) for name, c in json.loads(checks_json).items()}
            approval = checks.get("plangate/approval")
            status = _APPROVAL.get(approval[0], "unknown") if approval else "unknown"
            for path, plan_id, digest, team, environment in json.loads(plans_json):
                out.append(
                    PendingPlan(
                        plan_id=plan_id or path,
                        plan_digest=digest,
                        team=team,
                        environment=environment,
                        proposed_at=datetime.fromtimestamp(first_seen, UTC),
                        proposed_by=author,
                        approval_status=status,
                        pull_request=f"{repo}#{number}",
                        head_sha=head_sha,
                        checks=tuple(sorted((n, c[0]) for n, c in checks.items())),
                    )
                )
        return out
